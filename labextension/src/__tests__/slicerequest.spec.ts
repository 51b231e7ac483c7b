import {
  IKeyValueStore,
  IRunOutcome,
  ISessionView,
  ISliceRequest,
  LEDGER_KEY,
  RequestLedger,
  SLICE_REQUEST_MIME,
  SliceRequestSession,
  describeRequest,
  parseSliceRequest
} from '../slicerequest';

function memoryStore(initial: Record<string, string> = {}): IKeyValueStore & { data: Record<string, string> } {
  const data = { ...initial };
  return {
    data,
    getItem: key => (key in data ? data[key] : null),
    setItem: (key, value) => {
      data[key] = value;
    }
  };
}

function request(overrides: Partial<ISliceRequest> = {}): ISliceRequest {
  return { size: '10gb', timeout: 600, id: null, kernelId: null, ...overrides };
}

/** A run that records each request and answers with `outcome`. */
function recorder(outcome: IRunOutcome = { started: true, failed: false, message: 'restarting' }) {
  const runs: ISliceRequest[] = [];
  const run = async (r: ISliceRequest) => {
    runs.push(r);
    return outcome;
  };
  return { runs, run };
}

describe('parseSliceRequest', () => {
  it('reads what the magic and the widget display', () => {
    // jupyter_mig.notebook.widget.request_bundle('10gb', 600.0) and (None, 600.0)
    expect(parseSliceRequest({ size: '10gb', timeout: 600.0 })).toEqual({
      ok: true,
      request: { size: '10gb', timeout: 600, id: null, kernelId: null }
    });
    expect(parseSliceRequest({ size: null, timeout: 300 })).toEqual({
      ok: true,
      request: { size: null, timeout: 300, id: null, kernelId: null }
    });
  });

  it('trims the size, leaves a missing timeout to the server and keeps an id', () => {
    expect(parseSliceRequest({ size: ' 1g.10gb ', id: 'cell-7:3' })).toEqual({
      ok: true,
      request: { size: '1g.10gb', timeout: null, id: 'cell-7:3', kernelId: null }
    });
    expect(parseSliceRequest({ size: '2g', timeout: null })).toMatchObject({ ok: true, request: { timeout: null } });
  });

  it.each([
    ['not an object', 'restart please', 'not a JSON object'],
    ['a list', ['10gb'], 'not a JSON object'],
    ['null', null, 'not a JSON object'],
    ['no size key (never a silent release)', { timeout: 600 }, 'names no size'],
    ['an empty size', { size: '  ' }, '"size" must be'],
    ['a numeric size', { size: 10 }, '"size" must be'],
    ['a size with spaces', { size: '10 gb' }, 'is not a size'],
    ['an overlong size', { size: 'g'.repeat(65) }, 'is not a size'],
    ['a zero timeout', { size: '10gb', timeout: 0 }, '"timeout"'],
    ['a negative timeout', { size: '10gb', timeout: -5 }, '"timeout"'],
    ['a timeout above the server limit', { size: '10gb', timeout: 3601 }, '"timeout"'],
    ['a timeout as text', { size: '10gb', timeout: '600' }, '"timeout"'],
    ['an infinite timeout', { size: '10gb', timeout: Infinity }, '"timeout"'],
    ['a numeric id', { size: '10gb', id: 7 }, '"id"'],
    ['an empty id', { size: '10gb', id: '' }, '"id"']
  ])('refuses %s', (_what, data, error) => {
    const parsed = parseSliceRequest(data);
    expect(parsed.ok).toBe(false);
    expect(!parsed.ok && parsed.error).toContain(error);
    expect(!parsed.ok && parsed.error).toMatch(/^Invalid GPU slice request: /);
  });

  it('uses the MIME type the kernel side displays', () => {
    expect(SLICE_REQUEST_MIME).toBe('application/vnd.jupyter-mig.slice-request+json');
  });
});

describe('describeRequest', () => {
  it('says what the restart does', () => {
    expect(describeRequest(request({ timeout: null }))).toBe('Restart this server with a 10gb GPU slice.');
    expect(describeRequest(request({ size: null, timeout: null }))).toBe(
      'Restart this server without a GPU (the slice is given back).'
    );
    expect(describeRequest(request({ timeout: 600 }))).toContain('waits up to 10 min');
    expect(describeRequest(request({ timeout: 90 }))).toContain('waits up to 90 s');
  });
});

describe('RequestLedger', () => {
  it('remembers requests by id, in the store when there is one', () => {
    const store = memoryStore();
    const ledger = new RequestLedger(store);
    const r = request({ id: 'a' });
    expect(ledger.handled(r)).toBe(false);
    ledger.markHandled(r);
    expect(ledger.handled(r)).toBe(true);
    expect(JSON.parse(store.data[LEDGER_KEY])).toEqual(['a']);
    // a new page load reads it back
    expect(new RequestLedger(store).handled(r)).toBe(true);
    ledger.forget(r);
    expect(new RequestLedger(store).handled(r)).toBe(false);
  });

  it('cannot remember a request without an id', () => {
    const ledger = new RequestLedger(memoryStore());
    ledger.markHandled(request());
    expect(ledger.handled(request())).toBe(false);
  });

  it('keeps only the newest ids', () => {
    const ledger = new RequestLedger(null, 2);
    for (const id of ['a', 'b', 'c']) {
      ledger.markHandled(request({ id }));
    }
    expect(ledger.handled(request({ id: 'a' }))).toBe(false);
    expect(ledger.handled(request({ id: 'c' }))).toBe(true);
  });

  it('survives unreadable or failing storage', () => {
    expect(new RequestLedger(memoryStore({ [LEDGER_KEY]: '{not json' })).handled(request({ id: 'a' }))).toBe(false);
    const failing: IKeyValueStore = {
      getItem: () => {
        throw new Error('denied');
      },
      setItem: () => {
        throw new Error('quota');
      }
    };
    const ledger = new RequestLedger(failing);
    ledger.markHandled(request({ id: 'a' }));
    expect(ledger.handled(request({ id: 'a' }))).toBe(true);
  });
});

const KERNEL = '0b5c4e2e-1111-4222-8333-944455556666';

describe('kernel-scoped requests', () => {
  it('reads what a kernel in its own pod displays', () => {
    // jupyter_mig.notebook.widget.kernel_request_bundle('20gb', KERNEL)
    expect(parseSliceRequest({ size: '20gb', scope: 'kernel', kernel_id: KERNEL })).toEqual({
      ok: true,
      request: { size: '20gb', timeout: null, id: null, kernelId: KERNEL }
    });
    expect(parseSliceRequest({ size: '20gb', scope: 'server' })).toMatchObject({ request: { kernelId: null } });
  });

  it.each([
    [{ size: '20gb', scope: 'kernel' }, 'needs the "kernel_id"'],
    [{ size: '20gb', scope: 'kernel', kernel_id: '../slice' }, 'needs the "kernel_id"'],
    [{ size: '20gb', scope: 'kernel', kernel_id: KERNEL.toUpperCase() }, 'needs the "kernel_id"'],
    [{ size: null, scope: 'kernel', kernel_id: KERNEL }, 'kernel without one'],
    [{ size: '20gb', scope: 'notebook' }, '"scope" must be']
  ])('refuses %j', (data, words) => {
    const parsed = parseSliceRequest(data);
    expect(parsed.ok).toBe(false);
    expect(!parsed.ok && parsed.error).toContain(words);
  });

  it('says before the click that only this kernel restarts and loses its variables', async () => {
    const { runs, run } = recorder();
    const session = new SliceRequestSession(
      { size: '20gb', scope: 'kernel', kernel_id: KERNEL },
      new RequestLedger(),
      run
    );
    expect(session.view()).toMatchObject({
      phase: 'ask',
      summary: 'Restart this kernel with a 20gb GPU slice.',
      confirmLabel: 'Restart this kernel'
    });
    expect(session.view().message).toContain('its variables are lost');
    expect(runs).toEqual([]);
    expect(await session.confirm()).toBe(true);
    expect(runs).toEqual([{ size: '20gb', timeout: null, id: null, kernelId: KERNEL }]);
  });

  it('keeps the server restart label for server requests', () => {
    const session = new SliceRequestSession({ size: '10gb' }, new RequestLedger(), recorder().run);
    expect(session.view().confirmLabel).toBe('Save all and restart');
  });
});

describe('SliceRequestSession', () => {
  it('never runs on rendering: it waits for a confirmation', () => {
    const { runs, run } = recorder();
    const session = new SliceRequestSession({ size: '10gb', timeout: 600 }, new RequestLedger(), run);
    expect(session.view()).toMatchObject({ phase: 'ask', canConfirm: true });
    expect(session.view().message).toContain('saved first');
    expect(runs).toEqual([]);
  });

  it('runs once per output however often it is confirmed', async () => {
    const { runs, run } = recorder();
    const session = new SliceRequestSession({ size: '10gb', timeout: 600 }, new RequestLedger(), run);
    const views: ISessionView[] = [];
    const first = session.confirm(view => views.push(view));
    const second = session.confirm(); // a double click while the first is running
    expect(await first).toBe(true);
    expect(await second).toBe(false);
    expect(await session.confirm()).toBe(false);
    expect(runs).toEqual([{ size: '10gb', timeout: 600, id: null, kernelId: null }]);
    expect(views.map(v => v.phase)).toEqual(['running', 'done']);
    expect(session.view().canConfirm).toBe(false);
  });

  it('asks again for a request without an id when rendered again', async () => {
    const ledger = new RequestLedger(memoryStore());
    const { runs, run } = recorder();
    await new SliceRequestSession({ size: '10gb' }, ledger, run).confirm();
    // the notebook reopened: a new rendering of the same output
    const again = new SliceRequestSession({ size: '10gb' }, ledger, run);
    expect(again.view()).toMatchObject({ phase: 'ask', canConfirm: true });
    expect(runs).toHaveLength(1);
  });

  it('does not offer a request with an id again once carried out', async () => {
    const store = memoryStore();
    const ledger = new RequestLedger(store); // one per page
    const { runs, run } = recorder();
    const data = { size: '20gb', timeout: 600, id: 'req-1' };
    const twin = new SliceRequestSession(data, ledger, run); // the same output in a second view
    await new SliceRequestSession(data, ledger, run).confirm();
    expect(await twin.confirm()).toBe(false);
    expect(twin.view()).toMatchObject({ phase: 'handled', canConfirm: false });
    // after the restart's reload: a new page, a new ledger reading the store
    const reopened = new SliceRequestSession(data, new RequestLedger(store), run);
    expect(reopened.view()).toMatchObject({ phase: 'handled', canConfirm: false });
    expect(await reopened.confirm()).toBe(false);
    expect(runs).toHaveLength(1);
  });

  it('refuses invalid data without offering to run', async () => {
    const { runs, run } = recorder();
    const session = new SliceRequestSession({ timeout: 600 }, new RequestLedger(), run);
    expect(session.view()).toMatchObject({ phase: 'invalid', canConfirm: false });
    expect(session.view().summary).toContain('names no size');
    expect(await session.confirm()).toBe(false);
    expect(runs).toEqual([]);
  });

  it('shows a failed restart and does not run it again', async () => {
    const { runs, run } = recorder({ started: true, failed: true, message: 'Not restarted: could not save a.ipynb.' });
    const session = new SliceRequestSession({ size: '10gb' }, new RequestLedger(), run);
    expect(await session.confirm()).toBe(true);
    expect(session.view()).toMatchObject({ phase: 'failed', canConfirm: false });
    expect(session.view().message).toContain('could not save a.ipynb');
    expect(await session.confirm()).toBe(false);
    expect(runs).toHaveLength(1);
  });

  it('turns a throwing run into a failure', async () => {
    const session = new SliceRequestSession({ size: '10gb' }, new RequestLedger(), async () => {
      throw new Error('boom');
    });
    expect(await session.confirm()).toBe(true);
    expect(session.view()).toMatchObject({ phase: 'failed' });
    expect(session.view().message).toContain('boom');
  });

  it('may be confirmed again when the restart could not start', async () => {
    const store = memoryStore();
    const outcomes: IRunOutcome[] = [
      { started: false, failed: false, message: 'A restart of this server is already under way.' },
      { started: true, failed: false, message: 'restarting' }
    ];
    const runs: ISliceRequest[] = [];
    const session = new SliceRequestSession({ size: '10gb', id: 'r' }, new RequestLedger(store), async r => {
      runs.push(r);
      return outcomes.shift()!;
    });
    expect(await session.confirm()).toBe(false);
    expect(session.view()).toMatchObject({ phase: 'ask', canConfirm: true });
    expect(session.view().message).toContain('already under way');
    expect(new RequestLedger(store).handled(request({ id: 'r' }))).toBe(false);
    expect(await session.confirm()).toBe(true);
    expect(session.view().phase).toBe('done');
    expect(runs).toHaveLength(2);
  });
});
