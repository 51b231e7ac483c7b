/**
 * jupyter-mig's JupyterLab plugins: the status-bar slice, the "Request GPU
 * slice…" command and dialog, the cluster side panel, and the save → restart →
 * reload sequence; and the renderer of the slice requests that the `%gpu_slice`
 * magic and the GpuSlicePicker widget display, which runs that same sequence
 * (or, for a kernel in its own pod, restarts only that kernel).
 */
import {
  ILabShell,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { Dialog, ICommandPalette, ISessionContext, showDialog } from '@jupyterlab/apputils';
import { URLExt } from '@jupyterlab/coreutils';
import { IDocumentManager } from '@jupyterlab/docmanager';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { ServerConnection } from '@jupyterlab/services';
import { IStatusBar } from '@jupyterlab/statusbar';
import { Widget } from '@lumino/widgets';

import { MigClient } from './api';
import { restartKernelWithSlice } from './kernelrestart';
import { SliceChoice, SliceRequestBody } from './dialog';
import { ClusterPanel } from './panel';
import { RestartProgress } from './progressview';
import { IRestartState, KERNEL_STEPS } from './progress';
import { restartWithSlice } from './restart';
import {
  IKeyValueStore,
  RequestLedger,
  RESTART_TIMEOUT_S,
  ISliceRequest,
  IRunOutcome,
  RunRequest
} from './slicerequest';
import { sliceRequestRendererFactory } from './slicerequestview';
import { SliceStatus } from './statusbar';
import { ICapacity } from './types';

const PLUGIN_ID = '@jupyter-mig/labextension:plugin';
const RENDERER_ID = '@jupyter-mig/labextension:slice-request-renderer';

namespace CommandIDs {
  export const request = 'jupyter-mig:request-slice';
  export const openPanel = 'jupyter-mig:open-panel';
}

/** Poll every 1.5 s; give the hub its restart timeout (pulling an image can be slow). */
const POLL_MS = 1500;
const RESTART_TIMEOUT_MS = RESTART_TIMEOUT_S * 1000;
/** After this many unanswered polls (the old server is gone) the hub's own page takes over. */
const HANDOVER_AFTER = 3;

function clientFor(app: JupyterFrontEnd): MigClient {
  const settings = app.serviceManager.serverSettings;
  return new MigClient((path, init) =>
    ServerConnection.makeRequest(URLExt.join(settings.baseUrl, 'jupyter-mig', 'api', path), init, settings)
  );
}

/** Saves every open document that has unsaved changes; resolves to those still unsaved. */
async function saveAll(app: JupyterFrontEnd, docManager: IDocumentManager | null): Promise<string[]> {
  if (!docManager) {
    await app.commands.execute('docmanager:save-all');
    return [];
  }
  const contexts = new Set<ReturnType<IDocumentManager['contextForWidget']>>();
  for (const widget of app.shell.widgets('main')) {
    contexts.add(docManager.contextForWidget(widget));
  }
  const unsaved: string[] = [];
  for (const context of contexts) {
    if (!context || !context.model.dirty) {
      continue;
    }
    try {
      await context.save();
    } catch {
      // reported below: the document is still dirty
    }
    if (context.model.dirty) {
      unsaved.push(context.path);
    }
  }
  return unsaved;
}

async function requestSlice(
  app: JupyterFrontEnd,
  client: MigClient,
  status: SliceStatus | null,
  docManager: IDocumentManager | null
): Promise<void> {
  let capacity: ICapacity | null = null;
  let capacityError: string | null = null;
  try {
    capacity = await client.capacity();
  } catch (error) {
    capacityError = (error as Error).message;
  }
  const slice = status?.current ?? (await client.slice().catch(() => null));
  const result = await showDialog<SliceChoice | null>({
    title: 'Request GPU slice',
    body: new SliceRequestBody(capacity, capacityError, slice),
    buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Save and restart' })],
    focusNodeSelector: 'input[name="jp-mig-size"]:checked'
  });
  const choice = result.button.accept ? result.value : null;
  if (!choice) {
    return;
  }
  const size = choice.kind === 'release' ? null : choice.size;
  if ((await runRestart(app, client, docManager, size)) === null) {
    void showDialog({
      title: 'Changing your GPU slice',
      body: ALREADY_RESTARTING,
      buttons: [Dialog.okButton()]
    });
  }
}

const ALREADY_RESTARTING = 'A restart of this server is already under way: wait for it to finish.';

/** One restart at a time per page, whichever of the dialog or a notebook output asked. */
let restartUnderWay = false;

/**
 * The save → ask → follow → reload sequence with its progress dialog, for the
 * request dialog and the slice-request renderer alike. Resolves to the last
 * state, or null (nothing done) while another restart is under way.
 */
async function runRestart(
  app: JupyterFrontEnd,
  client: MigClient,
  docManager: IDocumentManager | null,
  size: string | null,
  timeoutSeconds?: number
): Promise<IRestartState | null> {
  if (restartUnderWay) {
    return null;
  }
  restartUnderWay = true;
  try {
    const view = new RestartProgress(
      size === null ? 'Restarting your server without a GPU.' : `Restarting your server with a ${size} slice.`
    );
    void showDialog({
      title: 'Changing your GPU slice',
      body: view,
      buttons: [Dialog.cancelButton({ label: 'Hide' })],
      hasClose: true
    });
    return await restartWithSlice(
      size,
      {
        client,
        saveAll: () => saveAll(app, docManager),
        onState: state => view.render(state),
        reload: () => window.location.reload(),
        handover: url => window.location.assign(url),
        sleep: ms => new Promise(resolve => window.setTimeout(resolve, ms)),
        now: () => Date.now(),
        pollIntervalMs: POLL_MS,
        timeoutMs: RESTART_TIMEOUT_MS,
        handoverAfter: HANDOVER_AFTER
      },
      timeoutSeconds
    );
  } finally {
    restartUnderWay = false;
  }
}

/** Kernels being restarted with another slice from this page, by kernel id. */
const kernelsRestarting = new Set<string>();

/**
 * Restarts only the request's kernel with its size (POST kernels/<id>/slice),
 * showing the kernel's steps in the same progress dialog as a server restart.
 */
async function runKernelRestart(client: MigClient, request: ISliceRequest & { kernelId: string; size: string }): Promise<IRunOutcome> {
  const { kernelId, size } = request;
  if (kernelsRestarting.has(kernelId)) {
    return { started: false, failed: false, message: 'This kernel is already restarting: wait for it to finish.' };
  }
  kernelsRestarting.add(kernelId);
  try {
    const view = new RestartProgress(`Restarting this notebook's kernel with a ${size} slice.`, KERNEL_STEPS);
    void showDialog({
      title: "Changing this kernel's GPU slice",
      body: view,
      buttons: [Dialog.okButton({ label: 'Hide' })],
      hasClose: true
    });
    const state = await restartKernelWithSlice(kernelId, size, {
      client,
      onState: next => view.render(next),
      sleep: ms => new Promise(resolve => window.setTimeout(resolve, ms)),
      now: () => Date.now(),
      pollIntervalMs: POLL_MS,
      timeoutMs: RESTART_TIMEOUT_MS
    });
    return { started: true, failed: state.failed, message: state.message };
  } finally {
    kernelsRestarting.delete(kernelId);
  }
}

/** The session of a notebook (or console) widget; null for other widgets. */
function sessionContextOf(widget: Widget | null): ISessionContext | null {
  const candidate = (widget as { sessionContext?: unknown } | null)?.sessionContext;
  return typeof candidate === 'object' && candidate !== null && 'kernelChanged' in candidate
    ? (candidate as ISessionContext)
    : null;
}

/** The browser's localStorage, where the page may use it. */
function localStore(): IKeyValueStore | null {
  try {
    return window.localStorage;
  } catch {
    return null;
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'GPU slice status, requests and the cluster slice grid',
  autoStart: true,
  optional: [IStatusBar, ICommandPalette, IDocumentManager, ILabShell],
  activate: (
    app: JupyterFrontEnd,
    statusBar: IStatusBar | null,
    palette: ICommandPalette | null,
    docManager: IDocumentManager | null,
    labShell: ILabShell | null
  ) => {
    const client = clientFor(app);
    let status: SliceStatus | null = null;

    app.commands.addCommand(CommandIDs.request, {
      label: 'Request GPU slice…',
      caption: 'Restart this server with another GPU slice (documents are saved first)',
      execute: () => requestSlice(app, client, status, docManager)
    });
    palette?.addItem({ command: CommandIDs.request, category: 'GPU' });

    if (statusBar) {
      const activeKernel = (): string | null =>
        sessionContextOf(labShell?.currentWidget ?? null)?.session?.kernel?.id ?? null;
      const item = new SliceStatus(client, () => void app.commands.execute(CommandIDs.request), activeKernel);
      statusBar.registerStatusItem('jupyter-mig:slice', { item, align: 'left', rank: 50 });
      // Follow the current notebook, and its kernel when it is changed or restarted.
      const followed = new WeakSet<ISessionContext>();
      labShell?.currentChanged.connect((_, change) => {
        const context = sessionContextOf(change.newValue);
        if (context && !followed.has(context)) {
          followed.add(context);
          context.kernelChanged.connect(() => void item.refresh());
        }
        void item.refresh();
      });
      status = item;
    }

    if (labShell) {
      const panel = new ClusterPanel(client, () => void app.commands.execute(CommandIDs.request));
      labShell.add(panel, 'right', { rank: 900 });
      app.commands.addCommand(CommandIDs.openPanel, {
        label: 'Show GPU slices of the cluster',
        execute: () => labShell.activateById(panel.id)
      });
      palette?.addItem({ command: CommandIDs.openPanel, category: 'GPU' });
    }
    console.log(`JupyterLab extension ${PLUGIN_ID} is activated`);
  }
};

/**
 * Renders `application/vnd.jupyter-mig.slice-request+json` outputs. A plugin
 * that adds the factory to the rendermime registry (rather than a standalone
 * mime extension) because the renderer needs the document manager to save.
 * Notebooks copy the registry when they open, after this has run at startup.
 */
const sliceRequestRenderer: JupyterFrontEndPlugin<void> = {
  id: RENDERER_ID,
  description: 'Renders the GPU slice requests of the %gpu_slice magic and the GpuSlicePicker widget',
  autoStart: true,
  requires: [IRenderMimeRegistry],
  optional: [IDocumentManager],
  activate: (app: JupyterFrontEnd, rendermime: IRenderMimeRegistry, docManager: IDocumentManager | null) => {
    const client = clientFor(app);
    const run: RunRequest = async request => {
      if (request.kernelId !== null && request.size !== null) {
        return runKernelRestart(client, { ...request, kernelId: request.kernelId, size: request.size });
      }
      const state = await runRestart(app, client, docManager, request.size, request.timeout ?? undefined);
      if (state === null) {
        return { started: false, failed: false, message: ALREADY_RESTARTING };
      }
      return {
        started: true,
        failed: state.failed,
        message: state.failed ? state.message : 'The server is restarting; this page reloads when it is back.'
      };
    };
    const factory = sliceRequestRendererFactory(new RequestLedger(localStore()), run);
    rendermime.addFactory(factory, factory.defaultRank);
  }
};

export default [plugin, sliceRequestRenderer];
