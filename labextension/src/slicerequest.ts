/**
 * The slice request a kernel hands to the front end: the `%gpu_slice` magic and
 * the GpuSlicePicker widget display an output of type
 * `application/vnd.jupyter-mig.slice-request+json`, `{"size": "10gb" | null,
 * "timeout": 600}`, because only the front end can save open documents before
 * the server restarts. A kernel that runs in its own pod (per-kernel slices)
 * asks for a restart of only itself: `{"size": "20gb", "scope": "kernel",
 * "kernel_id": "<uuid>"}`; it has no server token, so the front end makes the
 * request (`POST kernels/<id>/slice`).
 *
 * Outputs are rendered again whenever a notebook is opened, so rendering must
 * never restart anything by itself: the renderer asks, and only the user's
 * click starts the restart, at most once per rendered output. A request that
 * carries an `id` is remembered across renderings (and page loads, through the
 * injected storage): once carried out it is not offered again.
 *
 * Pure: no JupyterLab, no DOM; the renderer (slicerequestview.ts) draws what
 * `SliceRequestSession.view` says.
 */

export const SLICE_REQUEST_MIME = 'application/vnd.jupyter-mig.slice-request+json';

/**
 * The restart limits (seconds), mirroring jupyter_mig/slices/contract.py:
 * the default wait for a restarted server (`RESTART_TIMEOUT`) and the most a
 * request may ask for (`MAX_RESTART_TIMEOUT`).
 */
export const RESTART_TIMEOUT_S = 600;
export const MAX_TIMEOUT_S = 3600;

const MAX_SIZE_LENGTH = 64;
const MAX_ID_LENGTH = 200;
/** A Jupyter kernel id, as the server extension's `kernels/<id>/slice` route accepts it. */
const KERNEL_ID = /^[0-9a-f-]{36}$/;

export interface ISliceRequest {
  /** The size to restart with (`10gb`, `2g`, `1g.10gb`); null: back to no GPU. */
  size: string | null;
  /** Seconds the hub waits for the new server; null: the server's default. */
  timeout: number | null;
  /** Names this request across renderings, when the kernel gave it one. */
  id: string | null;
  /** The kernel to restart with the slice (`scope: "kernel"`); null: the whole server. */
  kernelId: string | null;
}

export type ParsedRequest = { ok: true; request: ISliceRequest } | { ok: false; error: string };

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Reads an output's data; anything off-contract is an error to show, never a restart. */
export function parseSliceRequest(data: unknown): ParsedRequest {
  const bad = (error: string): ParsedRequest => ({ ok: false, error: `Invalid GPU slice request: ${error}` });
  if (!isObject(data)) {
    return bad('the data is not a JSON object');
  }
  if (!('size' in data)) {
    return bad('it names no size (give "size": "10gb", or null for no GPU)');
  }
  let size: string | null = null;
  if (data.size !== null) {
    if (typeof data.size !== 'string' || !data.size.trim()) {
      return bad('"size" must be a size such as "10gb", or null for no GPU');
    }
    size = data.size.trim();
    if (size.length > MAX_SIZE_LENGTH || /\s/.test(size)) {
      return bad(`"size" is not a size: ${JSON.stringify(size.slice(0, MAX_SIZE_LENGTH))}`);
    }
  }
  let timeout: number | null = null;
  if (data.timeout !== undefined && data.timeout !== null) {
    const value = data.timeout;
    if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0 || value > MAX_TIMEOUT_S) {
      return bad(`"timeout" must be a number of seconds above 0 and at most ${MAX_TIMEOUT_S}`);
    }
    timeout = value;
  }
  let id: string | null = null;
  if (data.id !== undefined && data.id !== null) {
    if (typeof data.id !== 'string' || !data.id || data.id.length > MAX_ID_LENGTH) {
      return bad(`"id" must be a non-empty string of at most ${MAX_ID_LENGTH} characters`);
    }
    id = data.id;
  }
  let kernelId: string | null = null;
  if (data.scope !== undefined && data.scope !== 'server') {
    if (data.scope !== 'kernel') {
      return bad('"scope" must be "server" or "kernel"');
    }
    if (typeof data.kernel_id !== 'string' || !KERNEL_ID.test(data.kernel_id)) {
      return bad('a kernel-scoped request needs the "kernel_id" of a Jupyter kernel');
    }
    if (size === null) {
      return bad('a kernel keeps a GPU slice: for no GPU, switch the notebook to a kernel without one');
    }
    kernelId = data.kernel_id;
  }
  return { ok: true, request: { size, timeout, id, kernelId } };
}

/** What the request would do, in one sentence. */
export function describeRequest(request: ISliceRequest): string {
  if (request.kernelId !== null) {
    return `Restart this kernel with a ${request.size} GPU slice.`;
  }
  const what =
    request.size === null
      ? 'Restart this server without a GPU (the slice is given back).'
      : `Restart this server with a ${request.size} GPU slice.`;
  return request.timeout === null ? what : `${what} The hub waits up to ${formatSeconds(request.timeout)} for it.`;
}

function formatSeconds(seconds: number): string {
  if (seconds >= 60 && seconds % 60 === 0) {
    const minutes = seconds / 60;
    return `${minutes} min`;
  }
  return `${seconds} s`;
}

/** The part of `Storage` the ledger needs (window.localStorage in the browser). */
export interface IKeyValueStore {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

export const LEDGER_KEY = 'jupyter-mig:handled-slice-requests';

/**
 * The ids of requests already carried out, newest last. Kept in `store` when
 * one is given, so a restart's page reload does not offer the same request again.
 */
export class RequestLedger {
  private ids: string[];

  constructor(
    private readonly store: IKeyValueStore | null = null,
    private readonly limit = 100
  ) {
    this.ids = this.load();
  }

  /** True when this request (it must have an id) was carried out before. */
  handled(request: ISliceRequest): boolean {
    return request.id !== null && this.ids.includes(request.id);
  }

  /** Remembers the request; without an id there is nothing to remember it by. */
  markHandled(request: ISliceRequest): void {
    if (request.id === null || this.ids.includes(request.id)) {
      return;
    }
    this.ids = [...this.ids, request.id].slice(-this.limit);
    this.save();
  }

  /** Forgets the request again: it was not carried out after all. */
  forget(request: ISliceRequest): void {
    if (request.id === null || !this.ids.includes(request.id)) {
      return;
    }
    this.ids = this.ids.filter(id => id !== request.id);
    this.save();
  }

  private save(): void {
    try {
      this.store?.setItem(LEDGER_KEY, JSON.stringify(this.ids));
    } catch {
      // storage full or disabled: remembered for this page only
    }
  }

  private load(): string[] {
    try {
      const stored: unknown = JSON.parse(this.store?.getItem(LEDGER_KEY) ?? '[]');
      return Array.isArray(stored) ? stored.filter((v): v is string => typeof v === 'string') : [];
    } catch {
      return [];
    }
  }
}

/** How a started restart went: `started` false when it could not start (another one runs). */
export interface IRunOutcome {
  started: boolean;
  failed: boolean;
  message: string;
}

/** Starts the save-then-restart sequence for a request; never rejects. */
export type RunRequest = (request: ISliceRequest) => Promise<IRunOutcome>;

export type SessionPhase = 'invalid' | 'handled' | 'ask' | 'running' | 'failed' | 'done';

export interface ISessionView {
  phase: SessionPhase;
  /** The sentence describing the request (the error, for invalid data). */
  summary: string;
  /** Status under the button: what happened, what to do. */
  message: string;
  /** Whether the confirm button is offered and enabled. */
  canConfirm: boolean;
  /** The confirm button's label. */
  confirmLabel: string;
}

/** Before the click: what the restart costs, so the user knows before confirming. */
export const SERVER_NOTICE = 'Every open document is saved first; running kernels stop and lose their variables.';
export const KERNEL_NOTICE =
  "Only this kernel restarts: its variables are lost. Files, other notebooks and the server carry on.";

/**
 * One rendered output's request: waits for the user's confirmation and runs
 * the restart at most once, however often `confirm` is called.
 */
export class SliceRequestSession {
  readonly request: ISliceRequest | null;
  private phase: SessionPhase;
  private readonly summary: string;
  private message = '';

  constructor(
    data: unknown,
    private readonly ledger: RequestLedger,
    private readonly run: RunRequest
  ) {
    const parsed = parseSliceRequest(data);
    if (!parsed.ok) {
      this.request = null;
      this.phase = 'invalid';
      this.summary = parsed.error;
      return;
    }
    this.request = parsed.request;
    this.summary = describeRequest(parsed.request);
    if (ledger.handled(parsed.request)) {
      this.phase = 'handled';
      this.message = 'This request was already carried out.';
    } else {
      this.phase = 'ask';
      this.message = parsed.request.kernelId === null ? SERVER_NOTICE : KERNEL_NOTICE;
    }
  }

  view(): ISessionView {
    return {
      phase: this.phase,
      summary: this.summary,
      message: this.message,
      canConfirm: this.phase === 'ask',
      confirmLabel: this.request?.kernelId ? 'Restart this kernel' : 'Save all and restart'
    };
  }

  /**
   * The user confirmed: runs the restart unless this output already did (or
   * has nothing valid to run). Resolves to whether it ran.
   */
  async confirm(onChange: (view: ISessionView) => void = () => undefined): Promise<boolean> {
    if (this.phase !== 'ask' || this.request === null) {
      return false;
    }
    if (this.ledger.handled(this.request)) {
      // Carried out meanwhile from another rendering of the same request.
      this.phase = 'handled';
      this.message = 'This request was already carried out.';
      onChange(this.view());
      return false;
    }
    // Remembered before it starts: a successful restart reloads the page before it resolves.
    this.ledger.markHandled(this.request);
    this.phase = 'running';
    this.message =
      this.request.kernelId === null
        ? 'Saving and restarting: the progress is shown in a dialog.'
        : 'Restarting this kernel: the progress is shown in a dialog.';
    onChange(this.view());
    let outcome: IRunOutcome;
    try {
      outcome = await this.run(this.request);
    } catch (error) {
      outcome = { started: true, failed: true, message: error instanceof Error ? error.message : String(error) };
    }
    if (!outcome.started) {
      // Nothing was done (another restart is under way): the user may ask again later.
      this.ledger.forget(this.request);
      this.phase = 'ask';
      this.message = outcome.message;
      onChange(this.view());
      return false;
    }
    this.phase = outcome.failed ? 'failed' : 'done';
    this.message = outcome.failed
      ? `${outcome.message} ${this.request.kernelId === null ? 'Run the cell again, or use "Request GPU slice…", to try again.' : 'Run the cell again to try again.'}`
      : outcome.message;
    onChange(this.view());
    return true;
  }
}
