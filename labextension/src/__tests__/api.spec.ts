import { ApiError, MigClient, Transport } from '../api';

interface ICall {
  path: string;
  method: string;
  body: unknown;
}

/** A fake server: answers each path from a table and records what it was sent. */
function fakeServer(answers: Record<string, () => Response | Promise<Response>>): {
  transport: Transport;
  calls: ICall[];
} {
  const calls: ICall[] = [];
  const transport: Transport = async (path, init) => {
    const method = init.method ?? 'GET';
    calls.push({ path, method, body: init.body ? JSON.parse(String(init.body)) : undefined });
    const answer = answers[`${method} ${path}`];
    if (!answer) {
      return json(404, { message: `no route ${method} ${path}` });
    }
    return answer();
  };
  return { transport, calls };
}

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json' }
  });
}

/** Shaped like the server extension's answer (jupyter_mig/notebook/handlers.py). */
const CAPACITY = {
  models: [
    {
      model: 'A30-24GB',
      gpus: 1,
      profiles: [{ profile: '1g.6gb', resource: 'nvidia.com/mig-1g.6gb', free: 1, creatable: 2, in_use: 1 }]
    }
  ],
  generated: '2026-11-29T12:00:00Z',
  unknown_models: [],
  sizes: [
    {
      size: '6gb',
      profile: '1g.6gb',
      resource: 'nvidia.com/mig-1g.6gb',
      models: ['A30-24GB'],
      memory_gib: 5.75,
      compute: 1,
      free: 1,
      creatable: 2,
      status: 'free'
    },
    { size: '24gb', status: 'unavailable', reason: '24gb is above your maximum of 12gb' }
  ],
  allowed_sizes: [],
  max_size: ['12gb'],
  gpus: [
    {
      node: 'node-1',
      index: 0,
      model: 'A30-24GB',
      grid: 4,
      instances: [
        { profile: '1g.6gb', start: 0, size: 1, state: 'in_use' },
        { profile: '1g.6gb', start: 1, size: 1, state: 'free' }
      ]
    }
  ]
};

const RECORD = {
  user: 'ada',
  server: '',
  size: '10gb',
  previous: 'none',
  state: 'running',
  stage: 'queued',
  message: 'stopping the server to start it again with the new slice',
  stages: [],
  events: [],
  started: '2026-11-29T12:00:00Z',
  finished: null,
  spawn_pending_url: '/hub/spawn-pending/ada'
};

describe('MigClient', () => {
  it('reads the capacity: sizes on the menu, GPU counts and per-GPU layouts', async () => {
    const { transport, calls } = fakeServer({ 'GET capacity': () => json(200, CAPACITY) });
    const capacity = await new MigClient(transport).capacity();
    expect(calls).toEqual([{ path: 'capacity', method: 'GET', body: undefined }]);
    expect(capacity.models).toEqual([{ model: 'A30-24GB', gpus: 1 }]);
    expect(capacity.sizes).toEqual([
      { size: '6gb', status: 'free', profile: '1g.6gb', models: ['A30-24GB'], free: 1, creatable: 2, reason: '' },
      {
        size: '24gb',
        status: 'unavailable',
        profile: null,
        models: [],
        free: 0,
        creatable: 0,
        reason: '24gb is above your maximum of 12gb'
      }
    ]);
    expect(capacity.maxSize).toEqual(['12gb']);
    expect(capacity.gpus?.[0].instances.map(i => i.state)).toEqual(['in_use', 'free']);
  });

  it('accepts a capacity document without per-GPU layouts', async () => {
    const { gpus: _unused, ...withoutGpus } = CAPACITY;
    const { transport } = fakeServer({ 'GET capacity': () => json(200, withoutGpus) });
    expect((await new MigClient(transport).capacity()).gpus).toBeNull();
  });

  it('rejects a malformed document, naming the field that is wrong', async () => {
    const gpu = { ...CAPACITY.gpus[0], instances: [{ profile: 'x', start: 0, size: 1, state: 'lost' }] };
    const { transport } = fakeServer({ 'GET capacity': () => json(200, { ...CAPACITY, gpus: [gpu] }) });
    await expect(new MigClient(transport).capacity()).rejects.toThrow('gpus[0].instances[0].state');
    const odd = fakeServer({ 'GET capacity': () => json(200, { ...CAPACITY, sizes: [{ size: '1gb', status: 'maybe' }] }) });
    await expect(new MigClient(odd.transport).capacity()).rejects.toThrow('sizes[0].status');
  });

  it('reads the slice, its memory and whether the hub can restart the server', async () => {
    const { transport } = fakeServer({
      'GET slice': () =>
        json(200, {
          slice: { size: '10gb', profile: '1g.10gb', resource: 'nvidia.com/mig-1g.10gb', models: ['A100-80GB'] },
          devices: ['MIG-1f3e'],
          memory: { total_mib: 9728, used_mib: 512 },
          memory_error: null,
          restartable: true
        })
    });
    expect(await new MigClient(transport).slice()).toEqual({
      profile: '1g.10gb',
      size: '10gb',
      memoryTotalMiB: 9728,
      memoryUsedMiB: 512,
      restartable: true
    });
  });

  it('reads a server without a GPU', async () => {
    const { transport } = fakeServer({
      'GET slice': () => json(200, { slice: null, devices: [], memory: null, memory_error: null, restartable: false })
    });
    expect(await new MigClient(transport).slice()).toEqual({
      profile: null,
      size: null,
      memoryTotalMiB: null,
      memoryUsedMiB: null,
      restartable: false
    });
  });

  it('posts the size with the promise that documents are saved, and reads the record', async () => {
    const { transport, calls } = fakeServer({ 'POST slice': () => json(202, RECORD) });
    const accepted = await new MigClient(transport).request('10gb');
    expect(calls[0]).toEqual({ path: 'slice', method: 'POST', body: { size: '10gb', saved: true } });
    expect(accepted).toEqual({
      state: 'running',
      stage: 'queued',
      message: RECORD.message,
      spawnPendingUrl: '/hub/spawn-pending/ada'
    });
  });

  it('releases with DELETE and saved=true in the query', async () => {
    const { transport, calls } = fakeServer({ 'DELETE slice?saved=true': () => json(202, { ...RECORD, size: null }) });
    await new MigClient(transport).release();
    expect(calls[0]).toEqual({ path: 'slice?saved=true', method: 'DELETE', body: undefined });
  });

  it("sends the hub's timeout when one is given", async () => {
    const { transport, calls } = fakeServer({
      'POST slice': () => json(202, RECORD),
      'DELETE slice?saved=true&timeout=300': () => json(202, { ...RECORD, size: null })
    });
    await new MigClient(transport).request('10gb', 450);
    await new MigClient(transport).release(300);
    expect(calls[0].body).toEqual({ size: '10gb', saved: true, timeout: 450 });
    expect(calls[1]).toEqual({ path: 'slice?saved=true&timeout=300', method: 'DELETE', body: undefined });
  });

  it("turns the server's refusal into an ApiError with its message", async () => {
    const { transport } = fakeServer({
      'POST slice': () => json(403, { message: '80gb is above your maximum of 20gb; sizes you can ask for: 10gb, 20gb' })
    });
    const error = await new MigClient(transport).request('80gb').catch(e => e);
    expect(error).toBeInstanceOf(ApiError);
    expect(error.status).toBe(403);
    expect(error.message).toBe('80gb is above your maximum of 20gb; sizes you can ask for: 10gb, 20gb');
    expect(error.unreachable).toBe(false);
  });

  it('reports an unreachable server as status 0', async () => {
    const transport: Transport = async () => {
      throw new TypeError('Failed to fetch');
    };
    const error = await new MigClient(transport).progress().catch(e => e);
    expect(error).toMatchObject({ status: 0, unreachable: true });
    expect(error.message).toContain('Failed to fetch');
  });

  it("takes the hub's answer for a stopped server as unreachable", async () => {
    const { transport } = fakeServer({
      'GET slice/progress': () => json(424, { message: "ada's server is not running" })
    });
    expect((await new MigClient(transport).progress().catch(e => e)).unreachable).toBe(true);
  });

  it('takes an HTML page where JSON was expected as a server that is gone', async () => {
    const { transport } = fakeServer({
      'GET slice/progress': () => new Response('<html>spawn pending</html>', { status: 200 })
    });
    expect((await new MigClient(transport).progress().catch(e => e)).unreachable).toBe(true);
  });

  it('reads progress records and the idle answer, and refuses unknown stages', async () => {
    const { transport } = fakeServer({
      'GET slice/progress': () => json(200, { ...RECORD, stage: 'scheduled', restartable: true })
    });
    expect(await new MigClient(transport).progress()).toMatchObject({ state: 'running', stage: 'scheduled' });
    const idle = fakeServer({
      'GET slice/progress': () => json(200, { state: 'idle', stage: null, restartable: false })
    });
    expect(await new MigClient(idle.transport).progress()).toEqual({
      state: 'idle',
      stage: null,
      message: '',
      spawnPendingUrl: null
    });
    const odd = fakeServer({ 'GET slice/progress': () => json(200, { state: 'running', stage: 'teleporting' }) });
    await expect(new MigClient(odd.transport).progress()).rejects.toThrow('unknown stage');
  });
});

describe('kernel slices', () => {
  const KERNEL = '0b5c4e2e-1111-4222-8333-944455556666';
  const path = `kernels/${KERNEL}/slice`;

  it('reads a kernel slice as the server extension answers it', async () => {
    const { transport } = fakeServer({
      [`GET ${path}`]: () =>
        json(200, {
          kernel_id: KERNEL,
          gpu_slice: '20gb',
          profile: '1g.20gb',
          phase: 'Running',
          change: { state: 'ready', size: '20gb', plan: {}, message: 'the kernel runs with 20gb' }
        })
    });
    expect(await new MigClient(transport).kernelSlice(KERNEL)).toEqual({
      kernelId: KERNEL,
      size: '20gb',
      profile: '1g.20gb',
      phase: 'Running',
      change: { state: 'ready', size: '20gb', message: 'the kernel runs with 20gb' }
    });
  });

  it('reads a kernel inside the server as one without a slice', async () => {
    const { transport } = fakeServer({
      [`GET ${path}`]: () => json(200, { kernel_id: KERNEL, gpu_slice: null, profile: null, phase: null, change: null })
    });
    expect(await new MigClient(transport).kernelSlice(KERNEL)).toMatchObject({ size: null, change: null });
  });

  it('posts only the size, and passes a refusal on with its message', async () => {
    const { transport, calls } = fakeServer({
      [`POST ${path}`]: () => json(202, { kernel_id: KERNEL, state: 'running', size: '20gb' })
    });
    await new MigClient(transport).restartKernel(KERNEL, '20gb');
    expect(calls).toEqual([{ path, method: 'POST', body: { size: '20gb' } }]);
    const refusing = fakeServer({
      [`POST ${path}`]: () => json(409, { message: 'this kernel is already restarting with another slice' })
    });
    await expect(new MigClient(refusing.transport).restartKernel(KERNEL, '20gb')).rejects.toMatchObject({
      status: 409,
      message: 'this kernel is already restarting with another slice'
    });
  });
});
