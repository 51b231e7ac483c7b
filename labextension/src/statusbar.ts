/**
 * The status-bar item, refreshed while the page is open: the slice of the
 * current notebook's kernel when that kernel runs in its own pod ("this
 * notebook: 1g.20gb"), else this server's slice and its memory.
 */
import { Widget } from '@lumino/widgets';

import { MigClient } from './api';
import { kernelStatusText, kernelStatusTitle, statusText, statusTitle } from './format';
import { ISlice } from './types';

const REFRESH_MS = 15000;

export class SliceStatus extends Widget {
  private slice: ISlice | null = null;
  private readonly timer: number;

  constructor(
    private readonly client: MigClient,
    onClick: () => void,
    /** The id of the current notebook's kernel, if any. */
    private readonly activeKernel: () => string | null = () => null
  ) {
    super();
    this.addClass('jp-mig-StatusItem');
    this.addClass('jp-mod-highlighted');
    this.node.setAttribute('role', 'button');
    this.node.addEventListener('click', onClick);
    this.node.textContent = 'GPU …';
    this.timer = window.setInterval(() => void this.refresh(), REFRESH_MS);
    void this.refresh();
  }

  /** The slice as last read, for the request dialog. */
  get current(): ISlice | null {
    return this.slice;
  }

  async refresh(): Promise<void> {
    const kernelId = this.activeKernel();
    // A kernel inside the server (no slice of its own), or one that is gone: the server's slice.
    const kernel = kernelId === null ? null : await this.client.kernelSlice(kernelId).catch(() => null);
    if (kernel !== null && kernel.size !== null) {
      this.node.textContent = kernelStatusText(kernel);
      this.node.title = kernelStatusTitle(kernel);
      this.node.classList.add('jp-mig-mod-gpu');
      this.node.classList.remove('jp-mig-mod-error');
      return;
    }
    try {
      this.slice = await this.client.slice();
      this.node.textContent = statusText(this.slice);
      this.node.title = statusTitle(this.slice);
      this.node.classList.toggle('jp-mig-mod-gpu', this.slice.profile !== null);
      this.node.classList.remove('jp-mig-mod-error');
    } catch (error) {
      this.node.textContent = 'GPU ?';
      this.node.title = `Cannot read this server's GPU slice: ${(error as Error).message}`;
      this.node.classList.add('jp-mig-mod-error');
    }
  }

  dispose(): void {
    window.clearInterval(this.timer);
    super.dispose();
  }
}
