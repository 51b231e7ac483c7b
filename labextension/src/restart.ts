/**
 * The restart experience end to end: save every document, ask for the slice,
 * follow the progress until the new server answers, then reload. Everything
 * that touches JupyterLab or the browser is injected, so the sequence is
 * tested with fakes.
 */
import { ApiError, MigClient } from './api';
import { IRestartState, NextStep, PollResult, advance, initialState, record } from './progress';

export interface IRestartDeps {
  client: Pick<MigClient, 'request' | 'release' | 'progress'>;
  /** Saves every open document; resolves to the paths that could not be saved. */
  saveAll(): Promise<string[]>;
  /** Called with every new state, for the progress view. */
  onState(state: IRestartState): void;
  /** Loads JupyterLab again from the (new) server. */
  reload(): void;
  /** Goes to the hub's page that follows the restart. */
  handover(url: string): void;
  sleep(ms: number): Promise<void>;
  now(): number;
  pollIntervalMs: number;
  timeoutMs: number;
  /** Unanswered polls before handing over to the hub's page. */
  handoverAfter: number;
}

/**
 * Restarts this server with a slice of `size` (null: without a GPU). Resolves
 * to the last state; it never rejects, failures are a state. `timeout`: seconds
 * the hub waits for the new server (undefined: the server's default).
 */
export async function restartWithSlice(
  size: string | null,
  deps: IRestartDeps,
  timeout?: number
): Promise<IRestartState> {
  let state = initialState();
  const show = (next: IRestartState): IRestartState => {
    state = next;
    deps.onState(state);
    return state;
  };
  const fail = (message: string): IRestartState => show({ ...state, failed: true, message });

  show(state);
  let unsaved: string[];
  try {
    unsaved = await deps.saveAll();
  } catch (error) {
    return fail(`Saving failed, so the server was not restarted: ${describe(error)}`);
  }
  if (unsaved.length > 0) {
    return fail(`Not restarted: could not save ${unsaved.join(', ')}. Save or close them first.`);
  }

  show({ ...state, phase: 'requesting', message: 'Asking for the slice…' });
  try {
    const accepted =
      size === null ? await deps.client.release(timeout) : await deps.client.request(size, timeout);
    show(record({ ...state, phase: 'queued' }, accepted));
  } catch (error) {
    return fail(`The request was refused: ${describe(error)}`);
  }

  const deadline = deps.now() + deps.timeoutMs;
  for (;;) {
    await deps.sleep(deps.pollIntervalMs);
    let result: PollResult;
    try {
      result = { progress: await deps.client.progress() };
    } catch (error) {
      result = { error: error instanceof ApiError ? error : new ApiError(0, describe(error)) };
    }
    const [next, step] = advance(state, result, deps.handoverAfter);
    show(next);
    if (finish(step, deps)) {
      return state;
    }
    if (deps.now() >= deadline) {
      const minutes = Math.round(deps.timeoutMs / 60000);
      return fail(
        `Gave up waiting after ${minutes} min; the restart may still finish: reload this page later.`
      );
    }
  }
}

/** Carries out a step that ends the wait; false for "poll again". */
function finish(step: NextStep, deps: IRestartDeps): boolean {
  switch (step.kind) {
    case 'reload':
      deps.reload();
      return true;
    case 'handover':
      deps.handover(step.url);
      return true;
    case 'fail':
      return true;
    default:
      return false;
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
