/**
 * Restarting one kernel that runs in its own pod with another slice
 * (`POST kernels/<id>/slice`), followed through `GET kernels/<id>/slice` until
 * the server says the kernel runs with it. The server and the other kernels
 * carry on, so nothing is saved and the page is not reloaded: JupyterLab
 * reconnects to the restarted kernel as after any kernel restart. Browser
 * effects are injected, as in restart.ts.
 */
import { ApiError, MigClient } from './api';
import { IRestartState, initialState, laterPhase } from './progress';
import { IKernelSlice } from './types';

export interface IKernelRestartDeps {
  client: Pick<MigClient, 'restartKernel' | 'kernelSlice'>;
  /** Called with every new state, for the progress view. */
  onState(state: IRestartState): void;
  sleep(ms: number): Promise<void>;
  now(): number;
  pollIntervalMs: number;
  timeoutMs: number;
}

/**
 * One poll's effect. The old pod may still answer "Running" right after the
 * request, so the kernel counts as starting only once its new pod was seen
 * pending (`launched`).
 */
export function kernelAdvance(
  state: IRestartState,
  slice: IKernelSlice,
  launched: boolean
): { state: IRestartState; done: boolean } {
  const change = slice.change;
  if (change?.state === 'failed') {
    return { state: { ...state, failed: true, message: change.message || 'The kernel did not restart.' }, done: true };
  }
  if (change?.state === 'ready') {
    const what = slice.profile ?? slice.size ?? change.size;
    return {
      state: { ...state, phase: 'ready', message: `This kernel runs with ${what}; the notebook reconnects to it.` },
      done: true
    };
  }
  const phase = launched && slice.phase === 'Running' ? 'starting' : 'queued';
  const next = laterPhase(state.phase, phase);
  const message =
    next === 'starting' ? 'The kernel pod runs; the kernel is starting…' : 'Waiting for a GPU slice for the kernel pod…';
  return { state: { ...state, phase: next, message }, done: false };
}

/** Resolves to the last state; never rejects, failures are a state. */
export async function restartKernelWithSlice(
  kernelId: string,
  size: string,
  deps: IKernelRestartDeps
): Promise<IRestartState> {
  let state: IRestartState = { ...initialState(), phase: 'requesting', message: 'Asking for the slice…' };
  const show = (next: IRestartState): IRestartState => {
    state = next;
    deps.onState(state);
    return state;
  };
  show(state);
  try {
    await deps.client.restartKernel(kernelId, size);
  } catch (error) {
    return show({ ...state, failed: true, message: `The request was refused: ${describe(error)}` });
  }
  show({ ...state, phase: 'queued', message: 'Waiting for a GPU slice for the kernel pod…' });
  const deadline = deps.now() + deps.timeoutMs;
  let launched = false;
  for (;;) {
    await deps.sleep(deps.pollIntervalMs);
    try {
      const slice = await deps.client.kernelSlice(kernelId);
      launched ||= slice.phase === 'Pending';
      const step = kernelAdvance(state, slice, launched);
      show(step.state);
      if (step.done) {
        return state;
      }
    } catch (error) {
      if (!(error instanceof ApiError && error.unreachable)) {
        return show({ ...state, failed: true, message: `The server refused the progress request: ${describe(error)}` });
      }
      show({ ...state, message: `The server does not answer (${error.message}); trying again…` });
    }
    if (deps.now() >= deadline) {
      const minutes = Math.round(deps.timeoutMs / 60000);
      return show({
        ...state,
        failed: true,
        message: `Gave up waiting after ${minutes} min; the kernel may still restart.`
      });
    }
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
