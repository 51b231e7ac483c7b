/**
 * Geometry of the slice grid: where each instance of a GPU's layout sits on
 * the GPU's memory-slice columns, and which slices are left uncarved. The side
 * panel turns these blocks into CSS grid items.
 */
import { IGpuLayout, InstanceState } from './types';

/** A block of the grid: an instance, or one uncarved memory slice. */
export interface IBlock {
  /** First column, 0-based (= first memory slice). */
  column: number;
  /** Columns covered. */
  span: number;
  state: InstanceState | 'uncarved';
  /** Profile name; empty for an uncarved slice. */
  label: string;
}

export interface IGridLayout {
  columns: number;
  blocks: IBlock[];
  /** Instances that could not be drawn (outside the grid, overlapping), for a warning. */
  problems: string[];
}

const STATE_WORDS: Record<IBlock['state'], string> = {
  in_use: 'in use',
  free: 'free',
  creating: 'being created',
  uncarved: 'uncarved'
};

export function stateWord(state: IBlock['state']): string {
  return STATE_WORDS[state];
}

/** The blocks of one GPU, left to right; every memory slice is covered exactly once. */
export function gridLayout(gpu: IGpuLayout): IGridLayout {
  const columns = gpu.grid;
  const owner: (IBlock | null)[] = new Array(columns).fill(null);
  const problems: string[] = [];
  const instances = [...gpu.instances].sort((a, b) => a.start - b.start || b.size - a.size);
  for (const instance of instances) {
    const where = `${instance.profile} at slice ${instance.start}`;
    if (instance.size < 1 || instance.start + instance.size > columns) {
      problems.push(`${where} lies outside the ${columns}-slice grid`);
      continue;
    }
    const covered = owner.slice(instance.start, instance.start + instance.size);
    const clash = covered.find(block => block !== null);
    if (clash) {
      problems.push(`${where} overlaps ${clash.label} at slice ${clash.column}`);
      continue;
    }
    const block: IBlock = {
      column: instance.start,
      span: instance.size,
      state: instance.state,
      label: instance.profile
    };
    owner.fill(block, instance.start, instance.start + instance.size);
  }
  const blocks: IBlock[] = [];
  for (let column = 0; column < columns; column++) {
    const block = owner[column];
    if (block === null) {
      blocks.push({ column, span: 1, state: 'uncarved', label: '' });
    } else if (block.column === column) {
      blocks.push(block);
    }
  }
  return { columns, blocks, problems };
}

/**
 * The text that fits in a block: the full profile name from two columns on, the
 * compute part alone ("1g") in a single column; the tooltip has the full name.
 */
export function blockText(block: IBlock): string {
  return block.span >= 2 ? block.label : block.label.split('.')[0];
}

/** Counts of a GPU's instances by state, and its uncarved slices. */
export function gridSummary(layout: IGridLayout): Record<IBlock['state'], number> {
  const summary: Record<IBlock['state'], number> = {
    in_use: 0,
    free: 0,
    creating: 0,
    uncarved: 0
  };
  for (const block of layout.blocks) {
    summary[block.state] += 1;
  }
  return summary;
}

/** GPUs grouped by node (nodes in name order, GPUs by index), for drawing one card per node. */
export function byNode(gpus: IGpuLayout[]): [string, IGpuLayout[]][] {
  const nodes = new Map<string, IGpuLayout[]>();
  for (const gpu of gpus) {
    const list = nodes.get(gpu.node) ?? [];
    list.push(gpu);
    nodes.set(gpu.node, list);
  }
  return [...nodes.entries()]
    .sort(([a], [b]) => a.localeCompare(b, undefined, { numeric: true }))
    .map(([node, list]) => [node, list.sort((a, b) => a.index - b.index)]);
}
