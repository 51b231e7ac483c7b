/**
 * The side panel: every GPU of the cluster drawn as its memory-slice grid, with
 * the instances at their placements, and what each slice size can get now.
 */
import { Widget } from '@lumino/widgets';

import { MigClient } from './api';
import { h } from './dom';
import { availabilityText } from './format';
import { IBlock, blockText, byNode, gridLayout, gridSummary, stateWord } from './grid';
import { gpuSliceIcon } from './icon';
import { ICapacity, IGpuLayout } from './types';

const REFRESH_MS = 10000;
const LEGEND: IBlock['state'][] = ['in_use', 'free', 'creating', 'uncarved'];

export class ClusterPanel extends Widget {
  private timer: number | null = null;
  private readonly body = h('div', { class: 'jp-mig-PanelBody' });
  private readonly updated = h('span', { class: 'jp-mig-Updated' });

  constructor(
    private readonly client: MigClient,
    requestSlice: () => void
  ) {
    super();
    this.id = 'jupyter-mig-panel';
    this.addClass('jp-mig-Panel');
    this.title.icon = gpuSliceIcon;
    this.title.caption = 'GPU slices';
    const refresh = h('button', { class: 'jp-mig-Button', title: 'Refresh now' }, 'Refresh');
    refresh.addEventListener('click', () => void this.refresh());
    const request = h('button', { class: 'jp-mig-Button jp-mod-accept' }, 'Request GPU slice…');
    request.addEventListener('click', requestSlice);
    this.node.append(
      h(
        'header',
        { class: 'jp-mig-PanelHeader' },
        h('h2', {}, 'GPU slices'),
        h('div', { class: 'jp-mig-Toolbar' }, request, refresh, this.updated)
      ),
      legend(),
      this.body
    );
  }

  async refresh(): Promise<void> {
    try {
      this.draw(await this.client.capacity());
      this.updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      this.body.replaceChildren(
        h('p', { class: 'jp-mig-Error' }, `Cannot read the cluster: ${(error as Error).message}`)
      );
    }
  }

  protected onAfterShow(): void {
    void this.refresh();
    this.timer ??= window.setInterval(() => void this.refresh(), REFRESH_MS);
  }

  protected onAfterHide(): void {
    if (this.timer !== null) {
      window.clearInterval(this.timer);
      this.timer = null;
    }
  }

  dispose(): void {
    this.onAfterHide();
    super.dispose();
  }

  private draw(capacity: ICapacity): void {
    const parts: HTMLElement[] = [];
    if (capacity.gpus === null) {
      const totals = capacity.models.map(m => `${m.gpus} × ${m.model}`).join(', ');
      parts.push(
        h(
          'p',
          { class: 'jp-mig-Note' },
          `GPUs: ${totals || 'none'}. The controller publishes no per-GPU layouts, so no grid.`
        )
      );
    } else if (capacity.gpus.length === 0) {
      parts.push(h('p', { class: 'jp-mig-Note' }, 'No GPU node takes part in dynamic slicing.'));
    } else {
      for (const [node, gpus] of byNode(capacity.gpus)) {
        parts.push(
          h(
            'section',
            { class: 'jp-mig-Node' },
            h('h3', {}, node),
            ...gpus.map(gpu => drawGpu(gpu))
          )
        );
      }
    }
    parts.push(drawSizes(capacity));
    this.body.replaceChildren(...parts);
  }
}

function legend(): HTMLElement {
  return h(
    'div',
    { class: 'jp-mig-Legend' },
    ...LEGEND.map(state =>
      h(
        'span',
        { class: 'jp-mig-LegendItem' },
        h('span', { class: `jp-mig-Swatch jp-mig-mod-${state}` }),
        stateWord(state)
      )
    )
  );
}

function drawGpu(gpu: IGpuLayout): HTMLElement {
  const layout = gridLayout(gpu);
  const summary = gridSummary(layout);
  const grid = h('div', {
    class: 'jp-mig-Grid',
    style: `grid-template-columns: repeat(${layout.columns}, minmax(0, 1fr))`,
    'data-columns': String(layout.columns)
  });
  for (let column = 0; column < layout.columns; column++) {
    grid.append(
      h('span', { class: 'jp-mig-Tick', style: `grid-column: ${column + 1}; grid-row: 1` }, String(column))
    );
  }
  for (const block of layout.blocks) {
    const title = block.label
      ? `${block.label}: memory slices ${block.column}–${block.column + block.span - 1}, ${stateWord(block.state)}`
      : `memory slice ${block.column}: uncarved`;
    grid.append(
      h(
        'div',
        {
          class: `jp-mig-Block jp-mig-mod-${block.state}`,
          style: `grid-column: ${block.column + 1} / span ${block.span}; grid-row: 2`,
          title,
          'data-state': block.state,
          'data-profile': block.label
        },
        blockText(block)
      )
    );
  }
  const counts = [
    summary.in_use ? `${summary.in_use} in use` : '',
    summary.free ? `${summary.free} free` : '',
    summary.creating ? `${summary.creating} being created` : ''
  ].filter(Boolean);
  return h(
    'div',
    { class: 'jp-mig-Gpu', 'data-node': gpu.node, 'data-index': String(gpu.index) },
    h(
      'div',
      { class: 'jp-mig-GpuTitle' },
      h('span', { class: 'jp-mig-GpuName' }, `GPU ${gpu.index}`),
      h('span', { class: 'jp-mig-GpuModel' }, gpu.model),
      h('span', { class: 'jp-mig-GpuCounts' }, counts.join(' · ') || 'empty')
    ),
    grid,
    ...layout.problems.map(problem => h('p', { class: 'jp-mig-Error' }, problem))
  );
}

function drawSizes(capacity: ICapacity): HTMLElement {
  return h(
    'section',
    { class: 'jp-mig-Sizes' },
    h('h3', {}, 'Sizes you can ask for'),
    capacity.sizes.length === 0
      ? h('p', { class: 'jp-mig-Note' }, 'No GPU in the cluster offers a slice.')
      : h(
          'table',
          {},
          h(
            'thead',
            {},
            h('tr', {}, h('th', {}, 'Size'), h('th', {}, 'Profile'), h('th', {}, 'Can be had'))
          ),
          h(
            'tbody',
            {},
            ...capacity.sizes.map(row =>
              h(
                'tr',
                { class: `jp-mig-mod-${row.status}` },
                h('td', {}, row.size),
                h('td', { title: row.models.join(', ') }, row.profile ?? '–'),
                h('td', {}, availabilityText(row))
              )
            )
          )
        )
  );
}
