import { ApiError } from '../api';
import { IRestartState, advance, initialState, laterPhase, record, steps } from '../progress';
import { IProgress } from '../types';

const HANDOVER = 3;

function running(stage: IProgress['stage'], extra: Partial<IProgress> = {}): { progress: IProgress } {
  return { progress: { state: 'running', stage, message: '', spawnPendingUrl: null, ...extra } };
}

function queued(url: string | null = null): IRestartState {
  return { ...initialState(), phase: 'queued', message: '', spawnPendingUrl: url };
}

const gone = (status = 0) => ({ error: new ApiError(status, 'gone') });

describe('advance', () => {
  it('follows the hub through its stages and reloads when ready', () => {
    let state = queued();
    for (const stage of ['repartitioning', 'scheduled', 'starting'] as const) {
      const [next, step] = advance(state, running(stage), HANDOVER);
      expect(next.phase).toBe(stage);
      expect(step).toEqual({ kind: 'poll' });
      state = next;
    }
    const [done, step] = advance(state, { progress: { state: 'ready', stage: 'ready', message: '', spawnPendingUrl: null } }, HANDOVER);
    expect(done.phase).toBe('ready');
    expect(step).toEqual({ kind: 'reload' });
  });

  it('never goes back to an earlier stage when polls race', () => {
    const [state] = advance(queued(), running('scheduled'), HANDOVER);
    const [after] = advance(state, running('repartitioning'), HANDOVER);
    expect(after.phase).toBe('scheduled');
    expect(laterPhase('queued', 'starting')).toBe('starting');
  });

  it('takes the server going away as the restart under way, not as a failure', () => {
    const [state, step] = advance(queued(), gone(), HANDOVER);
    expect(state).toMatchObject({ serverLeft: true, missedPolls: 1, failed: false });
    expect(step).toEqual({ kind: 'poll' });
    const [again] = advance(state, gone(424), HANDOVER);
    expect(again.missedPolls).toBe(2);
  });

  it("hands over to the hub's page after enough unanswered polls", () => {
    let state = queued('/hub/spawn-pending/ada');
    const kinds: string[] = [];
    for (let i = 0; i < HANDOVER; i++) {
      const [next, step] = advance(state, gone(), HANDOVER);
      kinds.push(step.kind);
      state = next;
    }
    expect(kinds).toEqual(['poll', 'poll', 'handover']);
    expect(advance(state, gone(), HANDOVER)[1]).toEqual({ kind: 'handover', url: '/hub/spawn-pending/ada' });
  });

  it('keeps polling when the server never named a hub page', () => {
    let state = queued();
    for (let i = 0; i < 2 * HANDOVER; i++) {
      const [next, step] = advance(state, gone(), HANDOVER);
      expect(step.kind).toBe('poll');
      state = next;
    }
  });

  it('counts only consecutive unanswered polls', () => {
    const [one] = advance(queued('/hub/x'), gone(), HANDOVER);
    const [two] = advance(one, gone(), HANDOVER);
    const [answered] = advance(two, running('queued'), HANDOVER);
    const [, step] = advance(answered, gone(), HANDOVER);
    expect(step.kind).toBe('poll');
  });

  it('reloads when a server answers "idle" after the old one left', () => {
    const [left] = advance(queued(), gone(503), HANDOVER);
    const [back, step] = advance(left, { progress: { state: 'idle', stage: null, message: '', spawnPendingUrl: null } }, HANDOVER);
    expect(back.phase).toBe('ready');
    expect(step).toEqual({ kind: 'reload' });
  });

  it('keeps polling while the old server has not seen the restart yet', () => {
    const [state, step] = advance(queued(), { progress: { state: 'idle', stage: null, message: '', spawnPendingUrl: null } }, HANDOVER);
    expect(state.phase).toBe('queued');
    expect(step).toEqual({ kind: 'poll' });
  });

  it('fails on a failed or rolled-back restart, keeping the step it reached', () => {
    const [state] = advance(queued(), running('repartitioning'), HANDOVER);
    const [failed, step] = advance(
      state,
      { progress: { state: 'failed', stage: 'repartitioning', message: 'no room', spawnPendingUrl: null } },
      HANDOVER
    );
    expect(failed).toMatchObject({ failed: true, phase: 'repartitioning', message: 'no room' });
    expect(step).toEqual({ kind: 'fail', message: 'no room' });
    const [, back] = advance(
      state,
      { progress: { state: 'rolled-back', stage: 'starting', message: 'runs again with none', spawnPendingUrl: null } },
      HANDOVER
    );
    expect(back).toEqual({ kind: 'fail', message: 'runs again with none' });
  });

  it('fails when the running server refuses the progress request', () => {
    const [refused, why] = advance(queued(), { error: new ApiError(403, 'forbidden') }, HANDOVER);
    expect(refused.failed).toBe(true);
    expect(why.kind).toBe('fail');
  });
});

describe('record', () => {
  it("remembers the hub page and takes the record's stage and message", () => {
    const state = record(queued(), { state: 'running', stage: 'queued', message: 'stopping', spawnPendingUrl: '/hub/p' });
    expect(state).toMatchObject({ phase: 'queued', message: 'stopping', spawnPendingUrl: '/hub/p' });
    const later = record(state, { state: 'running', stage: 'scheduled', message: '', spawnPendingUrl: null });
    expect(later).toMatchObject({ phase: 'scheduled', message: 'Schedule the new server', spawnPendingUrl: '/hub/p' });
  });
});

describe('steps', () => {
  it('marks the steps before the current one done', () => {
    const list = steps({ ...queued(), phase: 'scheduled' });
    expect(list.map(s => s.status)).toEqual(['done', 'done', 'done', 'done', 'current', 'todo', 'todo']);
  });

  it('marks the step where a restart stopped as failed', () => {
    const list = steps({ ...queued(), phase: 'repartitioning', failed: true });
    expect(list.map(s => s.status)).toEqual(['done', 'done', 'done', 'failed', 'todo', 'todo', 'todo']);
  });

  it('marks everything done when ready', () => {
    expect(steps({ ...queued(), phase: 'ready' }).every(s => s.status === 'done')).toBe(true);
  });
});
