"""``GpuSlicePicker``: sizes with live availability, a request button, progress and a usage bar.

Changing the slice restarts the server, so unsaved work must be saved first, and only the front
end can save.  The picker and the magic therefore hand the change to the front end as a
``application/vnd.jupyter-mig.slice-request+json`` output, which the jupyter-mig JupyterLab
extension renders by saving every open document and then calling ``POST slice`` with
``saved: true``.  Without that extension the output says how to do it by hand (save, then
``%gpu_slice SIZE --yes --saved``).  State is shown through widget values, not printed, so
updates from the refresh thread reach the page (ipywidgets' advice for threads).
"""

from __future__ import annotations

import html
import json
import os
import threading
from collections.abc import Mapping
from typing import Any

import ipywidgets as widgets

from jupyter_mig.kernels.contract import KERNEL_ID_ENV
from jupyter_mig.notebook.client import ClientError, ServerClient
from jupyter_mig.slices.contract import MAX_RESTART_TIMEOUT, RESTART_TIMEOUT, SIZE_ENV, SLICE_ENV

STAGES = ("queued", "repartitioning", "scheduled", "starting", "ready")
REQUEST_MIME = "application/vnd.jupyter-mig.slice-request+json"

_STATUS = {
    "free": "{free} free now",
    "repartition": "ready after repartitioning",
    "busy": "all in use: waits for one to be released",
}


def describe_row(row: dict[str, Any]) -> str:
    """One size of ``GET capacity``: what it gets and whether it can be had now."""
    if row.get("status") == "unavailable":
        return f"{row['size']}: not possible here ({row.get('reason', '')})"
    compute = int(row.get("compute", 0))
    plural = "s" if compute > 1 else ""
    status = _STATUS.get(str(row.get("status")), str(row.get("status"))).format(
        free=row.get("free", 0)
    )
    return (
        f"{row['size']}: {row['profile']} ({float(row['memory_gib']):.1f} GiB, "
        f"{compute} compute slice{plural}) — {status}"
    )


def describe_current(doc: dict[str, Any]) -> str:
    """``GET slice`` in one line."""
    current = doc.get("slice")
    if not current:
        text = "No GPU slice."
    else:
        where = ", ".join(current.get("models") or []) or "a GPU"
        text = f"GPU slice {current['profile']} (asked as {current['size']}) on {where}."
    memory = doc.get("memory")
    if memory:
        text += (
            f" GPU memory: {memory['used_mib'] / 1024:.1f} of "
            f"{memory['total_mib'] / 1024:.1f} GiB in use."
        )
    elif doc.get("memory_error"):
        text += f" ({doc['memory_error']})"
    return text


def describe_plan(plan: dict[str, Any]) -> str:
    models = ", ".join(plan.get("models") or [])
    return f"{describe_row(plan)} — on {models}"


def request_bundle(size: str | None, timeout: float) -> dict[str, Any]:
    """The output that asks the front end to save everything and then restart."""
    what = "--release" if size is None else size
    manual = (
        "Saving needs the jupyter-mig JupyterLab extension. Without it: save your notebooks "
        f"(Ctrl+S), then run  %gpu_slice {what} --yes --saved"
    )
    return {
        REQUEST_MIME: {"size": size, "timeout": timeout},
        "text/plain": manual,
        "text/html": f"<p>{html.escape(manual)}</p>",
    }


def kernel_request_bundle(size: str, kernel_id: str) -> dict[str, Any]:
    """The output that asks the front end to restart only this kernel with a slice of ``size``.

    A kernel in its own pod has no server token, so the front end (the user's session) makes the
    request; the server and the other kernels carry on, this kernel's variables are lost.
    """
    manual = (
        f"Restarting this kernel with a {size} GPU slice loses its variables (files are kept; the "
        "server and other notebooks carry on). The jupyter-mig JupyterLab extension offers a "
        f"button for it. Without it: switch this notebook to the GPU {size} kernel "
        "(Kernel > Change Kernel)."
    )
    return {
        REQUEST_MIME: {"size": size, "scope": "kernel", "kernel_id": kernel_id},
        "text/plain": manual,
        "text/html": f"<p>{html.escape(manual)}</p>",
    }


def pod_kernel_answer(env: Mapping[str, str], release: bool) -> str:
    """What ``%gpu_slice`` without a size says in a kernel that runs in its own pod (per-kernel
    slices): its slice, and how to change it."""
    current = f"{env.get(SIZE_ENV, '?')} ({env.get(SLICE_ENV, '?')})"
    here = f"this kernel runs in its own pod with a GPU slice of {current}"
    if release:
        return (
            f"{here}; for no GPU, switch this notebook to a kernel without one "
            "(Kernel > Change Kernel)"
        )
    return f"{here}; %gpu_slice SIZE offers to restart this kernel with another size"


def restarting_bundle(record: dict[str, Any]) -> dict[str, Any]:
    """The output after the hub accepted a restart: where to follow it (this kernel ends)."""
    url = str(record.get("spawn_pending_url", ""))
    text = (
        "The hub is restarting this server with the new slice; this kernel stops now. "
        f"Follow the progress at {url}"
    )
    return {
        "text/plain": text,
        "text/html": (
            f"<p>{html.escape(text[: -len(url)])}"
            f'<a href="{html.escape(url)}" target="_top">{html.escape(url)}</a></p>'
        ),
        "application/javascript": f"window.location.href = {json.dumps(url)};",
    }


def display_data(bundle: dict[str, Any]) -> dict[str, Any]:
    """An output for ``Output.outputs``: set as a value, so it also works from callbacks."""
    return {"output_type": "display_data", "data": bundle, "metadata": {}}


def start_change(
    client: ServerClient, size: str | None, timeout: float, saved: bool
) -> dict[str, Any]:
    """Start a slice change; the output bundle to show for it."""
    if not saved:
        return request_bundle(size, timeout)
    return restarting_bundle(client.request(size, saved=True, timeout=timeout))


class GpuSlicePicker(widgets.VBox):  # type: ignore[misc]
    """Pick a GPU slice size for this server and see what the cluster can give now."""

    def __init__(
        self,
        client: ServerClient | None = None,
        refresh_seconds: float = 0.0,
        timeout: float = RESTART_TIMEOUT,
    ) -> None:
        # Set first: ipywidgets calls close() from __del__ even when __init__ raised.
        self._summary = ""
        self._stop = threading.Event()
        if not 0 < timeout <= MAX_RESTART_TIMEOUT:
            raise ValueError(f"timeout must be above 0 and at most {MAX_RESTART_TIMEOUT:g} seconds")
        if refresh_seconds < 0:
            raise ValueError("refresh_seconds must be 0 (no automatic refresh) or more")
        if client is None and os.environ.get(KERNEL_ID_ENV):
            # A kernel in its own pod has no server token to read the sizes with.
            raise ClientError(pod_kernel_answer(os.environ, release=False))
        self.client = client or ServerClient.discover()
        self.timeout = timeout
        self.current = widgets.HTML()
        self.usage = widgets.FloatProgress(
            value=0.0, min=0.0, max=1.0, description="GPU memory", bar_style="info"
        )
        self.sizes = widgets.Dropdown(description="Size", options=[])
        self.request_button = widgets.Button(
            description="Restart with this slice", button_style="primary", icon="microchip"
        )
        self.release_button = widgets.Button(description="Release the GPU", icon="power-off")
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.progress = widgets.IntProgress(value=0, min=0, max=len(STAGES) - 1)
        self.status = widgets.HTML()
        self.output = widgets.Output()
        self.request_button.on_click(lambda _: self.change(self.sizes.value))
        self.release_button.on_click(lambda _: self.change(None))
        self.refresh_button.on_click(lambda _: self.refresh())
        super().__init__(
            [
                self.current,
                self.usage,
                widgets.HBox([self.sizes, self.request_button]),
                widgets.HBox([self.release_button, self.refresh_button]),
                self.progress,
                self.status,
                self.output,
            ]
        )
        self.refresh()
        if refresh_seconds > 0:
            thread = threading.Thread(
                target=self._refresh_loop, args=(refresh_seconds,), daemon=True
            )
            thread.start()

    def _refresh_loop(self, seconds: float) -> None:
        while not self._stop.wait(seconds):
            self.refresh()

    def close(self) -> None:
        self._stop.set()
        super().close()

    def refresh(self) -> None:
        """Read the current slice, the sizes on offer and any restart under way."""
        lines: list[str] = []
        notes: list[str] = []
        try:
            current = self.client.current()
            text = describe_current(current)
            self.current.value = f"<b>{html.escape(text)}</b>"
            memory = current.get("memory")
            self.usage.layout.display = None if memory else "none"
            if memory:
                self.usage.value = memory["used_mib"] / max(memory["total_mib"], 1)
            lines.append(text)
            self.release_button.disabled = not current.get("slice")
            self._show_capacity(lines, notes)
            self._show_progress(notes)
        except ClientError as err:
            notes.append(str(err))
            lines.append(str(err))
        self.status.value = "<br>".join(html.escape(note) for note in notes)
        self._summary = "\n".join(lines)

    def _show_capacity(self, lines: list[str], notes: list[str]) -> None:
        try:
            rows = self.client.capacity()["sizes"]
        except ClientError as err:
            self.sizes.options = []
            self.request_button.disabled = True
            notes.append(f"Availability unknown: {err}")
            lines.append(f"Availability unknown: {err}")
            return
        choices = [(describe_row(r), r["size"]) for r in rows if r.get("status") != "unavailable"]
        chosen = self.sizes.value
        self.sizes.options = choices
        if chosen in [size for _, size in choices]:
            self.sizes.value = chosen
        self.request_button.disabled = not choices
        lines.extend(describe_row(r) for r in rows)

    def _show_progress(self, notes: list[str]) -> None:
        record = self.client.progress()
        stage = record.get("stage")
        if stage in STAGES:
            self.progress.value = STAGES.index(stage)
        state = record.get("state", "idle")
        if state != "idle":
            notes.append(f"Last restart: {state}, {stage} — {record.get('message', '')}")

    def change(self, size: str | None, saved: bool = False) -> None:
        """Ask for ``size`` (None: release); the front end saves, then restarts."""
        try:
            bundle = start_change(self.client, size, self.timeout, saved)
        except ClientError as err:
            self.status.value = html.escape(str(err))
            return
        self.output.outputs = (display_data(bundle),)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle: dict[str, Any] = super()._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = self._summary
        return bundle
