/**
 * The restart with a new slice as a small state machine: each poll of
 * `GET slice/progress` (or its failure) moves it on and says what to do next.
 *
 * The hub's restart service stops this server and starts a new one, so in the
 * middle of a restart "cannot reach the server" is an expected step, not an
 * error. While the server is gone only the hub can show progress: after a few
 * unanswered polls the page goes to the hub's spawn-pending page, which follows
 * the new server's start and opens it when ready. When the new server answers
 * first, the page reloads from it.
 */
import { ApiError } from './api';
import { IProgress, STAGES, Stage } from './types';

/** Where a restart stands: the browser's own steps, then the hub's stages. */
export type Phase = 'saving' | 'requesting' | Stage;

const PHASES: readonly Phase[] = ['saving', 'requesting', ...STAGES];

export interface IRestartState {
  /** The furthest step reached (where it stopped, when failed). */
  phase: Phase;
  failed: boolean;
  message: string;
  /** The old server has stopped answering at least once: the restart is under way. */
  serverLeft: boolean;
  /** Consecutive polls that found no server. */
  missedPolls: number;
  /** The hub's page for this restart, once the server has said where it is. */
  spawnPendingUrl: string | null;
}

export type PollResult = { progress: IProgress } | { error: ApiError };

export type NextStep =
  | { kind: 'poll' }
  /** Load JupyterLab again: the new server is up. */
  | { kind: 'reload' }
  /** Leave the page to the hub's progress page for this server. */
  | { kind: 'handover'; url: string }
  | { kind: 'fail'; message: string };

export function initialState(): IRestartState {
  return {
    phase: 'saving',
    failed: false,
    message: 'Saving open documents…',
    serverLeft: false,
    missedPolls: 0,
    spawnPendingUrl: null
  };
}

/** The later of two phases: stages never go backwards while polls race a restart. */
export function laterPhase(a: Phase, b: Phase): Phase {
  return PHASES.indexOf(a) >= PHASES.indexOf(b) ? a : b;
}

/** Takes in the hub's record of the restart (from the request's answer or a poll). */
export function record(state: IRestartState, progress: IProgress): IRestartState {
  const phase = progress.stage === null ? state.phase : laterPhase(state.phase, progress.stage);
  return {
    ...state,
    phase,
    message: progress.message || STEP_LABELS[phase],
    spawnPendingUrl: progress.spawnPendingUrl ?? state.spawnPendingUrl
  };
}

/**
 * One poll's effect on the restart. `handoverAfter`: unanswered polls after
 * which the hub's page takes over (when the server has named it).
 */
export function advance(
  state: IRestartState,
  result: PollResult,
  handoverAfter: number
): [IRestartState, NextStep] {
  if ('error' in result) {
    const { error } = result;
    if (!error.unreachable) {
      const message = `The server refused the progress request: ${error.message}`;
      return [{ ...state, failed: true, message }, { kind: 'fail', message }];
    }
    const missed = state.missedPolls + 1;
    const next: IRestartState = {
      ...state,
      serverLeft: true,
      missedPolls: missed,
      message: 'Your server is restarting; waiting for the new one…'
    };
    if (state.spawnPendingUrl !== null && missed >= handoverAfter) {
      return [next, { kind: 'handover', url: state.spawnPendingUrl }];
    }
    return [next, { kind: 'poll' }];
  }
  const { progress } = result;
  const answered = record({ ...state, missedPolls: 0 }, progress);
  switch (progress.state) {
    case 'ready':
      return [
        { ...answered, phase: 'ready', message: 'Your new server is ready; reloading…' },
        { kind: 'reload' }
      ];
    case 'failed':
    case 'rolled-back': {
      const message = progress.message || `The restart ${progress.state}.`;
      return [{ ...answered, failed: true, message }, { kind: 'fail', message }];
    }
    case 'idle':
      if (state.serverLeft) {
        // A server that answers after the old one left is the new one, whatever it knows.
        return [{ ...answered, phase: 'ready' }, { kind: 'reload' }];
      }
      return [answered, { kind: 'poll' }];
    default:
      return [answered, { kind: 'poll' }];
  }
}

const STEP_LABELS: Record<Phase, string> = {
  saving: 'Save open documents',
  requesting: 'Ask the hub for the slice',
  queued: 'Wait for a GPU slice',
  repartitioning: 'Repartition a GPU',
  scheduled: 'Schedule the new server',
  starting: 'Start the new server',
  ready: 'Ready'
};

export type StepStatus = 'done' | 'current' | 'todo' | 'failed';

/** The steps a restart goes through, in order, and what each is called. */
export interface IStepPlan {
  phases: readonly Phase[];
  labels: Record<Phase, string>;
}

/** A restart of the whole server. */
export const SERVER_STEPS: IStepPlan = { phases: PHASES, labels: STEP_LABELS };

/**
 * A restart of one kernel in its own pod: nothing to save, no new server;
 * repartitioning is not reported per kernel, so it is no step of its own.
 */
export const KERNEL_STEPS: IStepPlan = {
  phases: ['requesting', 'queued', 'starting', 'ready'],
  labels: {
    ...STEP_LABELS,
    requesting: 'Ask the server for the slice',
    queued: 'Wait for a GPU slice for the kernel pod',
    starting: 'Start the kernel in its pod'
  }
};

/** The checklist the progress view draws: every step with how far the restart got. */
export function steps(state: IRestartState, plan: IStepPlan = SERVER_STEPS): { label: string; status: StepStatus }[] {
  const reached = plan.phases.indexOf(state.phase);
  return plan.phases.map((phase, i) => {
    let status: StepStatus = 'todo';
    if (i < reached || (i === reached && phase === 'ready' && !state.failed)) {
      status = 'done';
    } else if (i === reached) {
      status = state.failed ? 'failed' : 'current';
    }
    return { label: plan.labels[phase], status };
  });
}
