import { availabilityText, defaultRow, gib, kernelStatusText, kernelStatusTitle, statusText, statusTitle } from '../format';
import { ISizeRow, ISlice } from '../types';

function slice(profile: string | null, used: number | null, total: number | null): ISlice {
  return { profile, size: profile ? '10gb' : null, memoryUsedMiB: used, memoryTotalMiB: total, restartable: true };
}

describe('statusText', () => {
  it('says "No GPU" for a server without a slice', () => {
    expect(statusText(slice(null, null, null))).toBe('No GPU');
    expect(statusText(null)).toBe('No GPU');
  });

  it('shows the profile and memory in GiB with one decimal', () => {
    // 3174 MiB = 3.099… GiB, 9728 MiB = 9.5 GiB
    expect(statusText(slice('1g.10gb', 3174, 9728))).toBe('GPU 1g.10gb · 3.1/9.5 GiB');
  });

  it('leaves memory out when the server cannot read it', () => {
    expect(statusText(slice('3g.40gb', null, 40192))).toBe('GPU 3g.40gb');
  });

  it('explains the slice in the tooltip', () => {
    const title = statusTitle(slice('1g.10gb', 0, 9728));
    expect(title).toContain('asked for as 10gb');
    expect(title).toContain('0.0 GiB of 9.5 GiB');
    expect(title).toContain('Click to request another');
    expect(statusTitle(null)).toBe('This server has no GPU slice. Click to request one.');
  });

  it('offers no click-through for a server the hub cannot restart', () => {
    expect(statusTitle({ ...slice('1g.10gb', null, null), restartable: false })).not.toContain('Click');
  });
});

describe('gib', () => {
  it('rounds to one decimal', () => {
    expect(gib(1024)).toBe('1.0');
    expect(gib(1536)).toBe('1.5');
    expect(gib(0)).toBe('0.0');
  });
});

function row(size: string, status: ISizeRow['status'], free = 0, creatable = 0): ISizeRow {
  return { size, status, profile: status === 'unavailable' ? null : `x.${size}`, models: [], free, creatable, reason: '' };
}

describe('availabilityText', () => {
  it('describes each status in words', () => {
    expect(availabilityText(row('10gb', 'free', 2, 8))).toBe('2 free now');
    expect(availabilityText(row('20gb', 'repartition', 0, 4))).toBe('after repartitioning (room for 4)');
    expect(availabilityText(row('20gb', 'repartition', 0, 1))).toBe('after repartitioning');
    expect(availabilityText(row('40gb', 'busy'))).toBe('all in use: waits for one');
  });

  it("gives the server's reason for an unavailable size", () => {
    expect(availabilityText({ ...row('80gb', 'unavailable'), reason: 'above your maximum of 20gb' })).toBe(
      'above your maximum of 20gb'
    );
    expect(availabilityText(row('80gb', 'unavailable'))).toBe('not available');
  });
});

describe('defaultRow', () => {
  it('preselects the first size free now, else the first to be carved, else none', () => {
    const rows = [row('10gb', 'busy'), row('20gb', 'repartition', 0, 1), row('40gb', 'free', 1)];
    expect(defaultRow(rows)?.size).toBe('40gb');
    expect(defaultRow(rows.slice(0, 2))?.size).toBe('20gb');
    expect(defaultRow([row('10gb', 'busy'), row('80gb', 'unavailable')])).toBeNull();
  });
});

describe('kernelStatusText', () => {
  const kernel = {
    kernelId: '0b5c4e2e-1111-4222-8333-944455556666',
    size: '20gb',
    profile: '1g.20gb' as string | null,
    phase: 'Running' as string | null,
    change: null
  };

  it("names the notebook's own slice", () => {
    expect(kernelStatusText(kernel)).toBe('this notebook: 1g.20gb');
    expect(kernelStatusTitle(kernel)).toContain('own pod with the MIG slice 1g.20gb, asked for as 20gb');
  });

  it('says when the pod is not placed yet, and when the slice is changing', () => {
    expect(kernelStatusText({ ...kernel, profile: null, phase: 'Pending' })).toBe('this notebook: 20gb (pending)');
    expect(kernelStatusText({ ...kernel, change: { state: 'running', size: '40gb', message: '' } })).toBe(
      'this notebook: 1g.20gb → 40gb…'
    );
  });
});
