import { blockText, byNode, gridLayout, gridSummary } from '../grid';
import { IGpuInstance, IGpuLayout } from '../types';

function gpu(grid: number, instances: IGpuInstance[], node = 'node-1', index = 0): IGpuLayout {
  return { node, index, model: 'A100-80GB', grid, instances };
}

function inst(profile: string, start: number, size: number, state: IGpuInstance['state'] = 'free'): IGpuInstance {
  return { profile, start, size, state };
}

describe('gridLayout', () => {
  it('covers every memory slice exactly once, left to right', () => {
    const layout = gridLayout(
      gpu(8, [inst('3g.40gb', 4, 4, 'in_use'), inst('1g.10gb', 0, 1, 'creating'), inst('1g.10gb', 2, 1)])
    );
    expect(layout.problems).toEqual([]);
    const columns: number[] = [];
    for (const block of layout.blocks) {
      for (let c = block.column; c < block.column + block.span; c++) {
        columns.push(c);
      }
    }
    expect(columns).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(layout.blocks.map(b => [b.column, b.span, b.state, b.label])).toEqual([
      [0, 1, 'creating', '1g.10gb'],
      [1, 1, 'uncarved', ''],
      [2, 1, 'free', '1g.10gb'],
      [3, 1, 'uncarved', ''],
      [4, 4, 'in_use', '3g.40gb']
    ]);
  });

  it('draws an empty GPU as uncarved slices of its grid (4 on an A30, 12 on an RTX PRO 6000)', () => {
    expect(gridLayout(gpu(4, [])).blocks).toHaveLength(4);
    expect(gridLayout(gpu(12, [])).blocks.every(b => b.state === 'uncarved')).toBe(true);
    expect(gridLayout(gpu(12, [])).columns).toBe(12);
  });

  it('reports and skips instances outside the grid or overlapping another', () => {
    const layout = gridLayout(
      gpu(4, [inst('2g.12gb', 0, 2, 'in_use'), inst('2g.12gb', 1, 2), inst('1g.6gb', 4, 1)])
    );
    expect(layout.problems).toEqual([
      '2g.12gb at slice 1 overlaps 2g.12gb at slice 0',
      '1g.6gb at slice 4 lies outside the 4-slice grid'
    ]);
    expect(layout.blocks.map(b => b.state)).toEqual(['in_use', 'uncarved', 'uncarved']);
  });

  it('counts instances by state and the uncarved slices', () => {
    const layout = gridLayout(
      gpu(8, [inst('1g.10gb', 0, 1, 'in_use'), inst('1g.10gb', 1, 1, 'in_use'), inst('2g.20gb', 2, 2)])
    );
    expect(gridSummary(layout)).toEqual({ in_use: 2, free: 1, creating: 0, uncarved: 4 });
  });
});

describe('blockText', () => {
  it('shortens a one-column block to its compute part', () => {
    expect(blockText({ column: 0, span: 1, state: 'free', label: '1g.10gb' })).toBe('1g');
    expect(blockText({ column: 0, span: 1, state: 'free', label: '1g.10gb+me' })).toBe('1g');
    expect(blockText({ column: 2, span: 2, state: 'in_use', label: '2g.20gb' })).toBe('2g.20gb');
    expect(blockText({ column: 3, span: 1, state: 'uncarved', label: '' })).toBe('');
  });
});

describe('byNode', () => {
  it('groups GPUs per node in natural order, GPUs by index', () => {
    const groups = byNode([
      gpu(8, [], 'node-10', 1),
      gpu(8, [], 'node-2', 1),
      gpu(8, [], 'node-10', 0),
      gpu(8, [], 'node-2', 0)
    ]);
    expect(groups.map(([node, gpus]) => [node, gpus.map(g => g.index)])).toEqual([
      ['node-2', [0, 1]],
      ['node-10', [0, 1]]
    ]);
  });
});
