/*
 * Drives a real JupyterLab in Debian's headless Chromium through playwright-core
 * (no browser download): edits a document, reads the status bar, opens the GPU
 * slice panel, requests a slice and follows the restart until the page reloads.
 * Then runs the `%gpu_slice` magic in a notebook, opens the notebook again (its
 * request output renders again and must not restart anything) and confirms the
 * request in the output, which restarts the same way. Last, in a notebook of
 * its own: the kernel picker's choices, and the status bar for a kernel inside
 * the server and for a GPU-slice kernel (whose `GET kernels/<id>/slice` is a
 * stand-in answer: no kernel pod can run here).
 * Screenshots go to the artifacts folder. Prints one JSON line with what it saw;
 * test_labextension_browser.py asserts on it.
 *
 * Input: the JSON in $JUPYTER_MIG_E2E: {url, token, file, text, size, notebook,
 * kernelNotebook, kernelSlice, chromium, playwright, artifacts, profileDir}.
 */
'use strict';

const path = require('path');

const config = JSON.parse(process.env.JUPYTER_MIG_E2E);
const { chromium } = require(config.playwright);

const STEP_MS = 60000;
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync'
];

async function shoot(page, name) {
  const file = path.join(config.artifacts, name);
  await page.screenshot({ path: file });
  return file;
}

/** The side panel's GPUs as drawn: every block with its columns, state and label. */
async function readPanel(page) {
  return page.$$eval('.jp-mig-Gpu', gpus =>
    gpus.map(gpu => ({
      node: gpu.getAttribute('data-node'),
      index: Number(gpu.getAttribute('data-index')),
      columns: Number(gpu.querySelector('.jp-mig-Grid').getAttribute('data-columns')),
      blocks: [...gpu.querySelectorAll('.jp-mig-Block')].map(block => {
        const [start, span] = block.style.gridColumn.split('/').map(s => s.trim());
        return {
          start: Number(start) - 1,
          span: Number(span.replace('span', '').trim()),
          state: block.getAttribute('data-state'),
          label: block.getAttribute('data-profile')
        };
      })
    }))
  );
}

async function readDialog(page) {
  return page.$$eval('.jp-mig-RequestBody input[name="jp-mig-size"]', inputs =>
    inputs.map(input => {
      const row = input.closest('.jp-mig-Option');
      const availability = row.querySelector('.jp-mig-Availability');
      return {
        value: input.value,
        checked: input.checked,
        disabled: input.disabled,
        availability: availability ? availability.textContent : null
      };
    })
  );
}

/** The slice-request output as drawn. */
async function readRequest(output) {
  const button = output.locator('.jp-mig-SliceRequest-confirm');
  return {
    phase: await output.getAttribute('data-phase'),
    summary: (await output.locator('.jp-mig-SliceRequest-summary').textContent()).trim(),
    message: (await output.locator('.jp-mig-SliceRequest-message').textContent()).trim(),
    buttonVisible: await button.isVisible(),
    buttonEnabled: await button.isEnabled()
  };
}

/**
 * The notebook part: run the magic, save, open the notebook again, wait, then
 * confirm in the output. `result.sliceCalls` gets every POST/DELETE of `slice`
 * with whether the button had been clicked by then.
 */
async function requestFromNotebook(page, result) {
  let clicked = false;
  result.sliceCalls = [];
  page.on('request', request => {
    const url = new URL(request.url());
    if (url.pathname.endsWith('/jupyter-mig/api/slice') && request.method() !== 'GET') {
      result.sliceCalls.push({ method: request.method(), afterClick: clicked, body: request.postData() });
    }
  });
  const notebookUrl = `${config.url}lab/tree/${config.notebook}`;
  await page.goto(notebookUrl);
  const output = page.locator('.jp-Notebook .jp-mig-SliceRequest');
  // A run pressed before the new kernel is connected can be lost (seen on a loaded machine):
  // run the cell again until its output appears.  Running it twice only renders it twice.
  for (let attempt = 1; ; attempt++) {
    await page.locator('.jp-Notebook .jp-Cell .cm-content').first().click();
    await page.keyboard.press('Shift+Enter');
    try {
      await output.waitFor({ timeout: 20000 });
      break;
    } catch (err) {
      if (attempt === 4) {
        throw err;
      }
    }
  }
  result.notebookFirst = await readRequest(output);
  result.screenshots.push(await shoot(page, 'slice-request-output.png'));

  // Saved and opened again: the output renders again and must only ask.
  await page.keyboard.press('Escape');
  await page.keyboard.press('Control+s');
  await page.locator('.jp-NotebookPanel-toolbar').waitFor();
  await page.waitForFunction(() => !document.querySelector('.lm-TabBar-tab.jp-mod-current.jp-mod-dirty'));
  await page.goto(notebookUrl);
  await output.waitFor();
  await page.waitForTimeout(3000);
  result.notebookReopened = await readRequest(output);

  const reloaded = page.waitForEvent('load', { timeout: 3 * STEP_MS });
  clicked = true;
  await output.locator('.jp-mig-SliceRequest-confirm').click();
  await page.locator('.jp-mig-Progress').waitFor();
  result.notebookRunning = await readRequest(output);
  await reloaded;
  result.notebookReloaded = true;
}

// JupyterLab adds a cache-busting query to GET requests.
const KERNEL_SLICE = /\/jupyter-mig\/api\/kernels\/([0-9a-f-]{36})\/slice(\?|$)/;

/** The id of the kernel the server runs for a notebook, once its session exists. */
async function kernelOf(page, notebook) {
  for (let tries = 0; tries < STEP_MS / 500; tries++) {
    const answer = await page.request.get(`${config.url}api/sessions`, {
      headers: { Authorization: `token ${config.token}` }
    });
    const session = (await answer.json()).find(s => s.path === notebook && s.kernel);
    if (session) {
      return session.kernel.id;
    }
    await page.waitForTimeout(500);
  }
  throw new Error(`no kernel for ${notebook} within ${STEP_MS} ms`);
}

/** The kernel picker, and the status bar for a plain and for a GPU-slice kernel. */
async function kernelSlices(page, result) {
  const read = page.waitForRequest(r => KERNEL_SLICE.test(r.url()) && r.method() === 'GET');
  await page.goto(`${config.url}lab/tree/${config.kernelNotebook}?token=${config.token}`);
  await read; // the status bar asked the server about a notebook's kernel
  const status = page.locator('.jp-mig-StatusItem');
  await status.filter({ hasNotText: 'GPU …' }).waitFor();
  result.statusPlainKernel = (await status.textContent()).trim();

  await page.locator('.jp-NotebookPanel-toolbar .jp-KernelName').click();
  await page.locator('.jp-Dialog select').waitFor();
  result.kernelChoices = await page.$$eval('.jp-Dialog select option', options =>
    options.map(option => option.textContent.trim())
  );
  result.screenshots.push(await shoot(page, 'kernel-picker.png'));
  await page.locator('.jp-Dialog .jp-mod-reject').click();

  const kernelId = await kernelOf(page, config.kernelNotebook);
  // Only this kernel is a GPU-slice kernel; every other kernel gets the real server's answer.
  await page.route(KERNEL_SLICE, route =>
    route.request().method() === 'GET' && route.request().url().match(KERNEL_SLICE)[1] === kernelId
      ? route.fulfill({
          status: 200,
          contentType: 'application/json',
          body: JSON.stringify({ ...config.kernelSlice, kernel_id: kernelId })
        })
      : route.continue()
  );
  const tab = name => page.locator('.lm-DockPanel-tabBar .lm-TabBar-tab').filter({ hasText: name });
  await tab(config.notebook).click();
  await tab(config.kernelNotebook).click(); // the current notebook changes: the status bar asks again
  await status.filter({ hasText: 'this notebook:' }).waitFor();
  result.statusGpuKernel = (await status.textContent()).trim();
  result.statusGpuKernelTitle = await status.getAttribute('title');
  result.screenshots.push(await shoot(page, 'kernel-slice-status.png'));
  // Another notebook, on a kernel inside the server: the server's slice again.
  await tab(config.notebook).click();
  await status.filter({ hasNotText: 'this notebook:' }).waitFor();
  result.statusOtherNotebook = (await status.textContent()).trim();

  // A kernel-scoped request (what %gpu_slice 20gb shows in a kernel pod), made here by the plain
  // kernel for itself: the button asks the real server, which refuses (no pod of its own).
  await tab(config.kernelNotebook).click();
  const output = page.locator('.jp-mig-SliceRequest').filter({ hasText: 'Restart this kernel' });
  for (let attempt = 1; ; attempt++) {
    await page.locator('.jp-Cell .cm-content').filter({ hasText: 'kernel_request_bundle' }).click();
    await page.keyboard.press('Shift+Enter');
    try {
      await output.waitFor({ timeout: 20000 });
      break;
    } catch (err) {
      if (attempt === 4) {
        throw err;
      }
    }
  }
  result.kernelRequest = await readRequest(output);
  result.kernelRequest.button = (await output.locator('.jp-mig-SliceRequest-confirm').textContent()).trim();
  const posted = page.waitForRequest(r => KERNEL_SLICE.test(r.url()) && r.method() === 'POST');
  await output.locator('.jp-mig-SliceRequest-confirm').click();
  const post = await posted;
  result.kernelPost = { kernel: post.url().match(KERNEL_SLICE)[1] === kernelId, body: post.postData() };
  await output.and(page.locator('[data-phase="failed"]')).waitFor();
  result.kernelRequestAfter = await readRequest(output);
  result.kernelProgress = await page.locator('.jp-mig-Progress').last().getAttribute('data-phase');
  result.screenshots.push(await shoot(page, 'kernel-restart-refused.png'));
}

async function main() {
  const result = { phases: [], screenshots: [], console: [] };
  const context = await chromium.launchPersistentContext(config.profileDir, {
    executablePath: config.chromium,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1440, height: 900 }
  });
  const page = context.pages()[0] || (await context.newPage());
  try {
    page.setDefaultTimeout(STEP_MS);
    page.on('console', message => {
      if (message.type() === 'error' || message.text().includes('jupyter-mig')) {
        result.console.push(`${message.type()}: ${message.text()}`);
      }
    });
    await page.exposeFunction('jupyterMigPhase', (phase, message) => {
      result.phases.push({ phase, message });
    });

    await page.goto(`${config.url}lab/tree/${config.file}?token=${config.token}`);
    const status = page.locator('.jp-mig-StatusItem');
    await status.filter({ hasNotText: 'GPU …' }).waitFor();
    result.statusText = (await status.textContent()).trim();
    result.statusTitle = await status.getAttribute('title');

    // Leave unsaved changes in the open document: the restart must save them first.
    const editor = page.locator('.jp-FileEditor .cm-content');
    await editor.click();
    await page.keyboard.press('Control+End');
    await page.keyboard.type(config.text);
    await page.locator('.jp-mod-dirty').first().waitFor();

    await page.locator('.jp-SideBar.jp-mod-right li[data-id="jupyter-mig-panel"]').click();
    await page.locator('.jp-mig-Panel .jp-mig-Sizes').waitFor();
    result.panelNote = await page.locator('.jp-mig-Panel .jp-mig-Note').allTextContents();
    result.panel = await readPanel(page);
    result.panelSizes = await page.$$eval('.jp-mig-Sizes tbody tr', rows =>
      rows.map(row => [...row.querySelectorAll('td')].map(td => td.textContent))
    );
    result.screenshots.push(await shoot(page, 'jupyterlab-gpu-panel.png'));

    await status.click();
    await page.locator('.jp-mig-RequestBody').waitFor();
    result.dialog = await readDialog(page);
    await page.locator(`.jp-mig-RequestBody input[value="${config.size}"]`).check();
    result.screenshots.push(await shoot(page, 'request-dialog.png'));

    // Record every phase the progress view shows, until the page reloads.
    await page.evaluate(() => {
      let last = '';
      new MutationObserver(() => {
        const view = document.querySelector('.jp-mig-Progress');
        const phase = view ? view.dataset.phase : undefined;
        const message = view ? view.querySelector('.jp-mig-Message').textContent : '';
        if (phase && `${phase}|${message}` !== last) {
          last = `${phase}|${message}`;
          window.jupyterMigPhase(phase, message);
        }
      }).observe(document.body, { subtree: true, childList: true, attributes: true, characterData: true });
    });
    const reloaded = page.waitForEvent('load', { timeout: 3 * STEP_MS });
    await page.locator('.jp-Dialog-button.jp-mod-accept').click();
    await page.locator('.jp-mig-Progress[data-phase="scheduled"]').waitFor();
    result.screenshots.push(await shoot(page, 'restart-progress.png'));
    await reloaded;
    result.reloaded = true;

    await status.filter({ hasNotText: 'GPU …' }).waitFor();
    result.statusAfterReload = (await status.textContent()).trim();
    result.screenshots.push(await shoot(page, 'after-restart.png'));

    await requestFromNotebook(page, result);
    await kernelSlices(page, result);
  } catch (error) {
    await shoot(page, 'failure.png').catch(() => undefined);
    error.message += `\nseen so far: ${JSON.stringify(result)}`;
    throw error;
  } finally {
    await context.close();
  }
  return result;
}

main().then(
  result => {
    process.stdout.write(`${JSON.stringify(result)}\n`);
  },
  error => {
    process.stderr.write(`${error.stack || error}\n`);
    process.exit(1);
  }
);
