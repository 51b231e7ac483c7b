/**
 * Text the extension shows: the status-bar label and the availability of each
 * slice size. Pure functions, so the wording is tested without a browser.
 */
import { IKernelSlice, ISizeRow, ISlice } from './types';

/** MiB as GiB with one decimal ("3.1"). */
export function gib(mib: number): string {
  return (mib / 1024).toFixed(1);
}

/** The status-bar label: "GPU 1g.10gb · 3.1/9.5 GiB", "GPU 1g.10gb" or "No GPU". */
export function statusText(slice: ISlice | null): string {
  if (!slice || !slice.profile) {
    return 'No GPU';
  }
  if (slice.memoryTotalMiB !== null && slice.memoryUsedMiB !== null) {
    return `GPU ${slice.profile} · ${gib(slice.memoryUsedMiB)}/${gib(slice.memoryTotalMiB)} GiB`;
  }
  return `GPU ${slice.profile}`;
}

/** The status-bar tooltip. */
export function statusTitle(slice: ISlice | null): string {
  const action = slice && !slice.restartable ? '' : ' Click to request another.';
  if (!slice || !slice.profile) {
    return `This server has no GPU slice.${action.replace('another', 'one')}`;
  }
  const memory =
    slice.memoryTotalMiB !== null && slice.memoryUsedMiB !== null
      ? ` (${gib(slice.memoryUsedMiB)} GiB of ${gib(slice.memoryTotalMiB)} GiB in use)`
      : '';
  const asked = slice.size && slice.size !== slice.profile ? `, asked for as ${slice.size}` : '';
  return `This server has the MIG slice ${slice.profile}${asked}${memory}.${action}`;
}

/** The label when the notebook's kernel has its own slice: "this notebook: 1g.20gb". */
export function kernelStatusText(kernel: IKernelSlice): string {
  const what = kernel.profile ?? `${kernel.size} (pending)`;
  return kernel.change?.state === 'running' ? `this notebook: ${what} → ${kernel.change.size}…` : `this notebook: ${what}`;
}

/** Its tooltip: where the slice is, and how to change it. */
export function kernelStatusTitle(kernel: IKernelSlice): string {
  const asked = kernel.profile && kernel.size !== kernel.profile ? `, asked for as ${kernel.size}` : '';
  const slice = kernel.profile ? `the MIG slice ${kernel.profile}${asked}` : `a ${kernel.size} slice (its pod is not placed yet)`;
  return `This notebook's kernel runs in its own pod with ${slice}. %gpu_slice SIZE in the notebook restarts only this kernel with another size.`;
}

/** The availability of a size in words, as the dialog and the panel show it. */
export function availabilityText(row: ISizeRow): string {
  switch (row.status) {
    case 'free':
      return `${row.free} free now`;
    case 'repartition':
      return row.creatable > 1
        ? `after repartitioning (room for ${row.creatable})`
        : 'after repartitioning';
    case 'busy':
      return 'all in use: waits for one';
    default:
      return row.reason || 'not available';
  }
}

/** The size worth preselecting: the smallest free now, else the smallest to be carved. */
export function defaultRow(rows: ISizeRow[]): ISizeRow | null {
  return rows.find(r => r.status === 'free') ?? rows.find(r => r.status === 'repartition') ?? null;
}
