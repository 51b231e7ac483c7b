import { ApiError } from '../api';
import { IRestartState } from '../progress';
import { IRestartDeps, restartWithSlice } from '../restart';
import { IProgress } from '../types';

type Answer = IProgress | ApiError;

const HUB_PAGE = '/hub/spawn-pending/ada';

function accepted(): IProgress {
  return { state: 'running', stage: 'queued', message: 'stopping', spawnPendingUrl: HUB_PAGE };
}

/** Fakes for everything the restart touches; `answers` are the successive progress polls. */
function fakes(answers: Answer[], overrides: Partial<IRestartDeps> = {}) {
  const log: string[] = [];
  const states: IRestartState[] = [];
  let clock = 0;
  const deps: IRestartDeps = {
    client: {
      request: async (size, timeout) => {
        log.push(timeout === undefined ? `request ${size}` : `request ${size} timeout ${timeout}`);
        return accepted();
      },
      release: async timeout => {
        log.push(timeout === undefined ? 'release' : `release timeout ${timeout}`);
        return accepted();
      },
      progress: async () => {
        const answer = answers.shift() ?? at('running', 'queued');
        if (answer instanceof ApiError) {
          throw answer;
        }
        return answer;
      }
    },
    saveAll: async () => {
      log.push('save');
      return [];
    },
    onState: state => states.push(state),
    reload: () => log.push('reload'),
    handover: url => log.push(`handover ${url}`),
    sleep: async ms => {
      clock += ms;
    },
    now: () => clock,
    pollIntervalMs: 1000,
    timeoutMs: 60000,
    handoverAfter: 3,
    ...overrides
  };
  return { deps, log, states };
}

function at(state: IProgress['state'], stage: IProgress['stage']): IProgress {
  return { state, stage, message: '', spawnPendingUrl: HUB_PAGE };
}

describe('restartWithSlice', () => {
  it('saves, requests, follows the stages and reloads from the new server', async () => {
    const { deps, log, states } = fakes([
      at('running', 'queued'),
      at('running', 'repartitioning'),
      new ApiError(0, 'gone'),
      new ApiError(424, 'not running'),
      at('ready', 'ready')
    ]);
    const final = await restartWithSlice('10gb', deps);
    expect(log).toEqual(['save', 'request 10gb', 'reload']);
    expect(final.phase).toBe('ready');
    const phases = states.map(s => s.phase).filter((p, i, all) => p !== all[i - 1]);
    expect(phases).toEqual(['saving', 'requesting', 'queued', 'repartitioning', 'ready']);
  });

  it('does not restart when a document cannot be saved', async () => {
    const { deps, log } = fakes([], { saveAll: async () => ['analysis.ipynb'] });
    const final = await restartWithSlice('10gb', deps);
    expect(final.failed).toBe(true);
    expect(final.message).toContain('analysis.ipynb');
    expect(log).toEqual([]);
  });

  it('does not restart when saving throws', async () => {
    const { deps, log } = fakes([], {
      saveAll: async () => {
        throw new Error('disk full');
      }
    });
    const final = await restartWithSlice('10gb', deps);
    expect(final).toMatchObject({ failed: true, phase: 'saving' });
    expect(final.message).toContain('disk full');
    expect(log).toEqual([]);
  });

  it("reports the server's refusal of the request", async () => {
    const { deps } = fakes([], {
      client: {
        request: async () => {
          throw new ApiError(403, 'above your maximum of 20gb');
        },
        release: async () => accepted(),
        progress: async () => at('idle', null)
      }
    });
    const final = await restartWithSlice('40gb', deps);
    expect(final).toMatchObject({ failed: true, phase: 'requesting' });
    expect(final.message).toContain('above your maximum of 20gb');
  });

  it('releases the GPU for a null size', async () => {
    const { deps, log } = fakes([at('ready', 'ready')]);
    await restartWithSlice(null, deps);
    expect(log).toEqual(['save', 'release', 'reload']);
  });

  it("passes the hub's timeout on with the request", async () => {
    const { deps, log } = fakes([at('ready', 'ready'), at('ready', 'ready')]);
    await restartWithSlice('10gb', deps, 300);
    await restartWithSlice(null, deps, 120);
    expect(log).toEqual(['save', 'request 10gb timeout 300', 'reload', 'save', 'release timeout 120', 'reload']);
  });

  it("hands over to the hub's page when the server stays away", async () => {
    const gone = () => new ApiError(0, 'gone');
    const { deps, log } = fakes([at('running', 'queued'), gone(), gone(), gone(), at('ready', 'ready')]);
    await restartWithSlice('10gb', deps);
    expect(log).toEqual(['save', 'request 10gb', `handover ${HUB_PAGE}`]);
  });

  it('stops at a failed restart without reloading', async () => {
    const { deps, log } = fakes([{ ...at('rolled-back', 'starting'), message: 'back on none' }]);
    const final = await restartWithSlice('10gb', deps);
    expect(final).toMatchObject({ failed: true, phase: 'starting', message: 'back on none' });
    expect(log).toEqual(['save', 'request 10gb']);
  });

  it('gives up after its timeout', async () => {
    const { deps, log } = fakes([], { timeoutMs: 5000 });
    const final = await restartWithSlice('10gb', deps);
    expect(final.failed).toBe(true);
    expect(final.message).toContain('Gave up waiting');
    expect(log).toEqual(['save', 'request 10gb']);
  });
});
