/** The status-bar item: this server's slice and its memory, refreshed while the page is open. */
import { Widget } from '@lumino/widgets';

import { MigClient } from './api';
import { statusText, statusTitle } from './format';
import { ISlice } from './types';

const REFRESH_MS = 15000;

export class SliceStatus extends Widget {
  private slice: ISlice | null = null;
  private readonly timer: number;

  constructor(
    private readonly client: MigClient,
    onClick: () => void
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
