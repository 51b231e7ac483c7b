/** The restart's checklist (of the server, or of one kernel), redrawn on every state change. */
import { Widget } from '@lumino/widgets';

import { h } from './dom';
import { IRestartState, IStepPlan, SERVER_STEPS, steps } from './progress';

const MARKS = { done: '✓', current: '…', todo: '', failed: '✗' } as const;

export class RestartProgress extends Widget {
  private readonly list = h('ol', { class: 'jp-mig-Steps' });
  private readonly message = h('p', { class: 'jp-mig-Message', role: 'status' });

  constructor(
    what: string,
    private readonly plan: IStepPlan = SERVER_STEPS
  ) {
    super();
    this.addClass('jp-mig-Progress');
    this.node.append(h('p', { class: 'jp-mig-What' }, what), this.list, this.message);
  }

  render(state: IRestartState): void {
    this.list.replaceChildren(
      ...steps(state, this.plan).map(step =>
        h(
          'li',
          { class: `jp-mig-Step jp-mig-mod-${step.status}`, 'data-status': step.status },
          h('span', { class: 'jp-mig-Mark' }, MARKS[step.status]),
          step.label
        )
      )
    );
    this.message.textContent = state.message;
    this.message.classList.toggle('jp-mig-Error', state.failed);
    this.node.dataset.phase = state.failed ? 'failed' : state.phase;
  }
}
