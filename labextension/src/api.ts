/**
 * Client of the server extension's REST API. The transport is injected so the
 * plugin can use JupyterLab's ServerConnection (token, XSRF, base URL) and the
 * tests a fake fetch.
 */
import {
  ICapacity,
  IGpuInstance,
  IGpuLayout,
  IKernelSlice,
  KernelChangeState,
  IModelCount,
  IProgress,
  ISizeRow,
  ISlice,
  InstanceState,
  RestartOutcome,
  STAGES,
  SizeStatus,
  Stage
} from './types';

/** Sends one request to `<base_url>/jupyter-mig/api/<path>`. */
export type Transport = (path: string, init: RequestInit) => Promise<Response>;

/** A request that failed; `status` is 0 when the server could not be reached. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string
  ) {
    super(message);
    this.name = 'ApiError';
  }

  /** The server is down or restarting (not a refusal by a running server). */
  get unreachable(): boolean {
    return this.status === 0 || this.status === 502 || this.status === 503 || this.status === 424;
  }
}

export class MigClient {
  constructor(private readonly transport: Transport) {}

  async capacity(): Promise<ICapacity> {
    return parseCapacity(await this.call('capacity', { method: 'GET' }));
  }

  async slice(): Promise<ISlice> {
    return parseSlice(await this.call('slice', { method: 'GET' }));
  }

  async progress(): Promise<IProgress> {
    return parseProgress(await this.call('slice/progress', { method: 'GET' }));
  }

  /**
   * Asks for a restart with a slice of `size`; the caller has saved every document.
   * `timeout`: seconds the hub waits for the new server (omitted: the server's default).
   */
  async request(size: string, timeout?: number): Promise<IProgress> {
    const body = JSON.stringify(timeout === undefined ? { size, saved: true } : { size, saved: true, timeout });
    return parseProgress(await this.call('slice', { method: 'POST', body }));
  }

  /** Asks for a restart without a GPU; the caller has saved every document. */
  async release(timeout?: number): Promise<IProgress> {
    const query = timeout === undefined ? 'saved=true' : `saved=true&timeout=${encodeURIComponent(String(timeout))}`;
    return parseProgress(await this.call(`slice?${query}`, { method: 'DELETE' }));
  }

  /** One kernel's own slice and the state of its last change. */
  async kernelSlice(kernelId: string): Promise<IKernelSlice> {
    return parseKernelSlice(await this.call(kernelPath(kernelId), { method: 'GET' }));
  }

  /** Restarts only that kernel with a slice of `size` (202: the restart is under way). */
  async restartKernel(kernelId: string, size: string): Promise<void> {
    await this.call(kernelPath(kernelId), { method: 'POST', body: JSON.stringify({ size }) });
  }

  private async call(path: string, init: RequestInit): Promise<unknown> {
    let response: Response;
    try {
      response = await this.transport(path, init);
    } catch (error) {
      throw new ApiError(0, `cannot reach the server: ${describe(error)}`);
    }
    const text = await response.text();
    const body = parseJson(text);
    if (!response.ok) {
      throw new ApiError(response.status, errorMessage(response, body));
    }
    if (body === undefined) {
      // An HTML page instead of JSON: a proxy or the hub answered for a server that is gone.
      throw new ApiError(503, `the server answered ${path} with something other than JSON`);
    }
    return body;
  }
}

function kernelPath(kernelId: string): string {
  return `kernels/${encodeURIComponent(kernelId)}/slice`;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function errorMessage(response: Response, body: unknown): string {
  if (isObject(body)) {
    for (const key of ['message', 'error', 'reason']) {
      const value = body[key];
      if (typeof value === 'string' && value) {
        return value;
      }
    }
  }
  return `${response.status} ${response.statusText}`.trim();
}

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function object(value: unknown, where: string): Json {
  if (!isObject(value)) {
    throw new ApiError(500, `unexpected response: ${where} is not an object`);
  }
  return value;
}

function list(value: unknown, where: string): unknown[] {
  if (!Array.isArray(value)) {
    throw new ApiError(500, `unexpected response: ${where} is not a list`);
  }
  return value;
}

function str(value: unknown, where: string): string {
  if (typeof value !== 'string') {
    throw new ApiError(500, `unexpected response: ${where} is not a string`);
  }
  return value;
}

function count(value: unknown, where: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
    throw new ApiError(500, `unexpected response: ${where} is not a count`);
  }
  return value;
}

function optionalNumber(value: unknown): number | null {
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

function optionalString(value: unknown): string | null {
  return typeof value === 'string' && value ? value : null;
}

const INSTANCE_STATES: readonly InstanceState[] = ['in_use', 'free', 'creating'];
const SIZE_STATUSES: readonly SizeStatus[] = ['free', 'repartition', 'busy', 'unavailable'];
const CHANGE_STATES: readonly KernelChangeState[] = ['running', 'ready', 'failed'];
const OUTCOMES: readonly RestartOutcome[] = ['idle', 'running', 'ready', 'failed', 'rolled-back'];

function oneOf<T extends string>(value: unknown, allowed: readonly T[], where: string): T {
  if (typeof value !== 'string' || !allowed.includes(value as T)) {
    throw new ApiError(500, `unexpected response: ${where} is ${JSON.stringify(value)}`);
  }
  return value as T;
}

function strings(value: unknown): string[] {
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : [];
}

export function parseCapacity(data: unknown): ICapacity {
  const doc = object(data, 'capacity');
  const models = list(doc.models, 'models').map((m, i): IModelCount => {
    const model = object(m, `models[${i}]`);
    return { model: str(model.model, `models[${i}].model`), gpus: count(model.gpus, `models[${i}].gpus`) };
  });
  const sizes = list(doc.sizes ?? [], 'sizes').map((r, i): ISizeRow => {
    const where = `sizes[${i}]`;
    const row = object(r, where);
    return {
      size: str(row.size, `${where}.size`),
      status: oneOf(row.status, SIZE_STATUSES, `${where}.status`),
      profile: optionalString(row.profile),
      models: strings(row.models),
      free: row.free === undefined ? 0 : count(row.free, `${where}.free`),
      creatable: row.creatable === undefined ? 0 : count(row.creatable, `${where}.creatable`),
      reason: typeof row.reason === 'string' ? row.reason : ''
    };
  });
  const gpus =
    doc.gpus === undefined || doc.gpus === null
      ? null
      : list(doc.gpus, 'gpus').map((g, i) => parseGpu(g, `gpus[${i}]`));
  return {
    models,
    sizes,
    gpus,
    maxSize: strings(doc.max_size),
    generated: typeof doc.generated === 'string' ? doc.generated : ''
  };
}

function parseGpu(data: unknown, where: string): IGpuLayout {
  const gpu = object(data, where);
  return {
    node: str(gpu.node, `${where}.node`),
    index: count(gpu.index, `${where}.index`),
    model: str(gpu.model, `${where}.model`),
    grid: count(gpu.grid, `${where}.grid`),
    instances: list(gpu.instances, `${where}.instances`).map((d, j): IGpuInstance => {
      const at = `${where}.instances[${j}]`;
      const instance = object(d, at);
      return {
        profile: str(instance.profile, `${at}.profile`),
        start: count(instance.start, `${at}.start`),
        size: count(instance.size, `${at}.size`),
        state: oneOf(instance.state, INSTANCE_STATES, `${at}.state`)
      };
    })
  };
}

export function parseSlice(data: unknown): ISlice {
  const doc = object(data, 'slice');
  const slice = isObject(doc.slice) ? doc.slice : {};
  const memory = isObject(doc.memory) ? doc.memory : {};
  return {
    profile: optionalString(slice.profile),
    size: optionalString(slice.size),
    memoryTotalMiB: optionalNumber(memory.total_mib),
    memoryUsedMiB: optionalNumber(memory.used_mib),
    restartable: doc.restartable !== false
  };
}

export function parseProgress(data: unknown): IProgress {
  const doc = object(data, 'progress');
  const stage = doc.stage ?? null;
  if (stage !== null && !STAGES.includes(stage as Stage)) {
    throw new ApiError(500, `unexpected response: unknown stage ${JSON.stringify(stage)}`);
  }
  return {
    state: oneOf(doc.state ?? 'idle', OUTCOMES, 'state'),
    stage: stage as Stage | null,
    message: typeof doc.message === 'string' ? doc.message : '',
    spawnPendingUrl: optionalString(doc.spawn_pending_url)
  };
}

export function parseKernelSlice(data: unknown): IKernelSlice {
  const doc = object(data, 'kernel slice');
  const change = doc.change === undefined || doc.change === null ? null : object(doc.change, 'change');
  return {
    kernelId: str(doc.kernel_id, 'kernel_id'),
    size: optionalString(doc.gpu_slice),
    profile: optionalString(doc.profile),
    phase: optionalString(doc.phase),
    change:
      change === null
        ? null
        : {
            state: oneOf(change.state, CHANGE_STATES, 'change.state'),
            size: typeof change.size === 'string' ? change.size : '',
            message: typeof change.message === 'string' ? change.message : ''
          }
  };
}
