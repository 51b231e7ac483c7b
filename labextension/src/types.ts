/**
 * What the views work with, read from the server extension's REST API under
 * `<base_url>/jupyter-mig/api/` (docs/notebook.md). api.ts turns the JSON into
 * these shapes, so the views never see the wire format.
 */

/** How one instance of a GPU's layout is used. */
export type InstanceState = 'in_use' | 'free' | 'creating';

/** One MIG instance at its placement on a GPU's memory-slice grid. */
export interface IGpuInstance {
  profile: string;
  /** First memory slice. */
  start: number;
  /** Memory slices covered. */
  size: number;
  state: InstanceState;
}

/** One GPU of the cluster with its current layout. */
export interface IGpuLayout {
  node: string;
  index: number;
  model: string;
  /** Memory slices of the GPU model (8, 4 or 12). */
  grid: number;
  instances: IGpuInstance[];
}

/**
 * How soon a size can be had: a free instance exists, the controller can carve
 * one by repartitioning, every one is held (the request waits), or this user
 * may not have it / no GPU offers it.
 */
export type SizeStatus = 'free' | 'repartition' | 'busy' | 'unavailable';

/** One size of the menu (hub policy applied) with the profile it would get. */
export interface ISizeRow {
  /** What to ask for: "10gb", or a profile name. */
  size: string;
  status: SizeStatus;
  /** The profile the request resolves to; null when unavailable. */
  profile: string | null;
  models: string[];
  free: number;
  creatable: number;
  /** Why the size is unavailable; empty otherwise. */
  reason: string;
}

export interface IModelCount {
  model: string;
  gpus: number;
}

/** `GET capacity`. */
export interface ICapacity {
  models: IModelCount[];
  sizes: ISizeRow[];
  /** Per-GPU layouts; null when the controller does not publish them. */
  gpus: IGpuLayout[] | null;
  /** The largest sizes this user may ask for (any of them); empty: no cap. */
  maxSize: string[];
  generated: string;
}

/** `GET slice`: the slice this server runs with. */
export interface ISlice {
  /** MIG profile name, or null for a server without a GPU. */
  profile: string | null;
  /** The size asked for ("10gb"); null without a GPU. */
  size: string | null;
  /** Device memory in MiB, when the server can read it through NVML. */
  memoryTotalMiB: number | null;
  memoryUsedMiB: number | null;
  /** Whether the hub can restart this server with another slice. */
  restartable: boolean;
}

/** The stages of a restart with a new slice, in order. */
export const STAGES = ['queued', 'repartitioning', 'scheduled', 'starting', 'ready'] as const;
export type Stage = (typeof STAGES)[number];

/** How a restart ended up; `idle`: none has been asked for. */
export type RestartOutcome = 'idle' | 'running' | 'ready' | 'failed' | 'rolled-back';

/** `GET slice/progress`, and the answer to `POST`/`DELETE slice`. */
export interface IProgress {
  state: RestartOutcome;
  /** Null while no restart has been requested. */
  stage: Stage | null;
  message: string;
  /** The hub's page that shows the restart while this server is gone. */
  spawnPendingUrl: string | null;
}

/** How the last change of a kernel's slice went (`kernels/<id>/slice`). */
export type KernelChangeState = 'running' | 'ready' | 'failed';

/** `GET kernels/<id>/slice`: one kernel's own slice (per-kernel slices). */
export interface IKernelSlice {
  kernelId: string;
  /** The size the kernel runs with; null: it runs inside the server, without a slice of its own. */
  size: string | null;
  /** The MIG profile of its pod, once the pod is placed. */
  profile: string | null;
  /** Its pod's phase (Pending, Running, ...); null before there is a pod. */
  phase: string | null;
  /** The last change of its slice; null when none was asked for. */
  change: { state: KernelChangeState; size: string; message: string } | null;
}
