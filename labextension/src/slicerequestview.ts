/**
 * The renderer of `application/vnd.jupyter-mig.slice-request+json` outputs:
 * what the request would do, and a button that starts the save-then-restart
 * sequence. Rendering alone never restarts anything (outputs are rendered
 * again whenever a notebook opens); the logic is in slicerequest.ts.
 */
import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Widget } from '@lumino/widgets';

import { h } from './dom';
import { ISessionView, RequestLedger, RunRequest, SLICE_REQUEST_MIME, SliceRequestSession } from './slicerequest';

/** Ahead of text/html (the manual instructions the kernel sends along) and text/plain. */
export const SLICE_REQUEST_RANK = 20;

export class SliceRequestRenderer extends Widget implements IRenderMime.IRenderer {
  private session: SliceRequestSession | null = null;
  private renderedData: string | null = null;
  private readonly summary = h('p', { class: 'jp-mig-SliceRequest-summary' });
  private readonly button = h(
    'button',
    { class: 'jp-mig-SliceRequest-confirm jp-mod-styled jp-mod-warn', type: 'button' },
    'Save all and restart'
  ) as HTMLButtonElement;
  private readonly message = h('p', { class: 'jp-mig-SliceRequest-message', role: 'status' });

  constructor(
    private readonly ledger: RequestLedger,
    private readonly run: RunRequest
  ) {
    super();
    this.addClass('jp-mig-SliceRequest');
    this.button.addEventListener('click', () => {
      const session = this.session;
      if (session) {
        void session.confirm(view => this.draw(view));
      }
    });
    this.node.append(this.summary, h('div', { class: 'jp-mig-SliceRequest-buttons' }, this.button), this.message);
  }

  renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    const data = model.data[SLICE_REQUEST_MIME];
    const key = JSON.stringify(data ?? null);
    // The same output rendered again keeps its session: a confirmed request stays confirmed.
    if (this.session === null || key !== this.renderedData) {
      this.session = new SliceRequestSession(data, this.ledger, this.run);
      this.renderedData = key;
    }
    this.draw(this.session.view());
    return Promise.resolve();
  }

  private draw(view: ISessionView): void {
    this.node.dataset.phase = view.phase;
    this.summary.textContent = view.summary;
    this.summary.classList.toggle('jp-mig-Error', view.phase === 'invalid');
    this.message.textContent = view.message;
    this.message.classList.toggle('jp-mig-Error', view.phase === 'failed');
    this.button.hidden = view.phase === 'invalid' || view.phase === 'handled';
    this.button.disabled = !view.canConfirm;
    this.button.textContent = view.confirmLabel;
  }
}

/**
 * The rendermime factory. Not `safe`: an untrusted notebook's output (one
 * somebody else ran) falls back to the kernel's text, so only outputs of this
 * user's own kernels, or of notebooks they trust, offer the button.
 */
export function sliceRequestRendererFactory(ledger: RequestLedger, run: RunRequest): IRenderMime.IRendererFactory {
  return {
    safe: false,
    mimeTypes: [SLICE_REQUEST_MIME],
    defaultRank: SLICE_REQUEST_RANK,
    createRenderer: () => new SliceRequestRenderer(ledger, run)
  };
}
