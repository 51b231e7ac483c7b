import { ApiError } from '../api';
import { IKernelRestartDeps, restartKernelWithSlice } from '../kernelrestart';
import { IRestartState, KERNEL_STEPS, steps } from '../progress';
import { IKernelSlice } from '../types';

const KERNEL = '0b5c4e2e-1111-4222-8333-944455556666';

function slice(phase: string | null, change: IKernelSlice['change'], profile: string | null = null): IKernelSlice {
  return { kernelId: KERNEL, size: '20gb', profile, phase, change };
}

const running = { state: 'running' as const, size: '20gb', message: '' };

/** Fakes for the client and the clock; `answers` are the successive `GET kernels/<id>/slice`. */
function fakes(answers: (IKernelSlice | ApiError)[], refuse: ApiError | null = null) {
  const log: string[] = [];
  const states: IRestartState[] = [];
  let clock = 0;
  const deps: IKernelRestartDeps = {
    client: {
      restartKernel: async (id, size) => {
        log.push(`POST ${id} ${size}`);
        if (refuse) {
          throw refuse;
        }
      },
      kernelSlice: async () => {
        const answer = answers.shift() ?? slice('Pending', running);
        if (answer instanceof ApiError) {
          throw answer;
        }
        return answer;
      }
    },
    onState: state => states.push(state),
    sleep: async ms => {
      clock += ms;
    },
    now: () => clock,
    pollIntervalMs: 1000,
    timeoutMs: 10000
  };
  return { deps, log, states };
}

describe('restartKernelWithSlice', () => {
  it('asks once and follows the kernel to ready, in order, without a reload', async () => {
    const { deps, log, states } = fakes([
      slice('Running', running), // the old pod, still there
      slice('Pending', running),
      slice('Running', running),
      slice('Running', { state: 'ready', size: '20gb', message: 'the kernel runs with 20gb' }, '1g.20gb')
    ]);
    const last = await restartKernelWithSlice(KERNEL, '20gb', deps);
    expect(log).toEqual([`POST ${KERNEL} 20gb`]);
    expect(states.map(s => s.phase)).toEqual(['requesting', 'queued', 'queued', 'queued', 'starting', 'ready']);
    expect(last).toMatchObject({ phase: 'ready', failed: false });
    expect(last.message).toContain('runs with 1g.20gb');
    expect(steps(last, KERNEL_STEPS).every(step => step.status === 'done')).toBe(true);
  });

  it('shows a refusal and polls nothing', async () => {
    const { deps, states } = fakes([], new ApiError(403, '80gb is above your maximum of 20gb'));
    const last = await restartKernelWithSlice(KERNEL, '80gb', deps);
    expect(last).toMatchObject({ phase: 'requesting', failed: true });
    expect(last.message).toContain('above your maximum');
    expect(states).toHaveLength(2);
  });

  it("stops at the server's failure message", async () => {
    const { deps } = fakes([
      slice('Pending', running),
      slice(null, { state: 'failed', size: '20gb', message: 'the 20gb kernel pod did not run within 300 s' })
    ]);
    const last = await restartKernelWithSlice(KERNEL, '20gb', deps);
    expect(last).toMatchObject({ phase: 'queued', failed: true });
    expect(last.message).toContain('did not run within 300 s');
  });

  it('rides out an unreachable poll but not a refused one', async () => {
    const ok = fakes([new ApiError(0, 'offline'), slice('Running', { ...running, state: 'ready' })]);
    expect(await restartKernelWithSlice(KERNEL, '20gb', ok.deps)).toMatchObject({ phase: 'ready', failed: false });
    const refused = fakes([new ApiError(404, 'no kernel 0b5c on this server')]);
    const last = await restartKernelWithSlice(KERNEL, '20gb', refused.deps);
    expect(last).toMatchObject({ failed: true });
    expect(last.message).toContain('no kernel');
  });

  it('gives up after its timeout', async () => {
    const { deps } = fakes([]);
    const last = await restartKernelWithSlice(KERNEL, '20gb', deps);
    expect(last.failed).toBe(true);
    expect(last.message).toContain('Gave up waiting');
  });
});

describe('KERNEL_STEPS', () => {
  it('has no save or new-server steps', () => {
    const labels = steps({ phase: 'queued', failed: false, message: '', serverLeft: false, missedPolls: 0, spawnPendingUrl: null }, KERNEL_STEPS).map(s => s.label);
    expect(labels).toEqual([
      'Ask the server for the slice',
      'Wait for a GPU slice for the kernel pod',
      'Start the kernel in its pod',
      'Ready'
    ]);
  });
});
