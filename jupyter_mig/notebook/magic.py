"""``%gpu_slice``: see and change this server's GPU slice from a notebook cell.

``%load_ext jupyter_mig`` registers it (or ``c.InteractiveShellApp.extensions = ["jupyter_mig"]``
in ``ipython_kernel_config.py`` for every kernel)::

    %gpu_slice                  the current slice and every size with its availability
    %gpu_slice --help           these options
    %gpu_slice 10gb             what 10gb would get; a button confirms the restart
    %gpu_slice 1g.10gb --yes    no confirmation
    %gpu_slice --release        back to no GPU
    %gpu_slice 10gb --yes --saved --timeout 300
                                restart straight from the kernel: you saved your notebooks
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
from IPython.core import magic_arguments
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.display import display

from jupyter_mig.kernels.contract import KERNEL_ID_ENV
from jupyter_mig.mig.sizes import SizeError, parse_size
from jupyter_mig.notebook.client import ClientError, ServerClient
from jupyter_mig.notebook.restart import NOT_RESTARTABLE
from jupyter_mig.notebook.widget import (
    GpuSlicePicker,
    describe_plan,
    display_data,
    kernel_request_bundle,
    pod_kernel_answer,
    start_change,
)
from jupyter_mig.slices.contract import MAX_RESTART_TIMEOUT, RESTART_TIMEOUT


@magics_class
class GpuSliceMagics(Magics):
    def __init__(
        self, shell: Any = None, client_factory: Callable[[], ServerClient] | None = None
    ) -> None:
        super().__init__(shell)
        self.client_factory = client_factory or ServerClient.discover

    def _client(self) -> ServerClient:
        try:
            return self.client_factory()
        except ClientError as err:
            raise UsageError(str(err)) from None

    @magic_arguments.magic_arguments()
    @magic_arguments.argument(
        "size",
        nargs="*",
        help="e.g. 10gb, 10 gb, 10GiB, 2g (compute slices) or a profile like 1g.10gb",
    )
    @magic_arguments.argument("--yes", "-y", action="store_true", help="restart without asking")
    @magic_arguments.argument("--release", action="store_true", help="go back to no GPU")
    @magic_arguments.argument(
        "--saved",
        action="store_true",
        help="your notebooks are saved: restart from the kernel, without the front end saving",
    )
    @magic_arguments.argument(
        "--timeout",
        type=float,
        default=RESTART_TIMEOUT,
        help="seconds the hub waits for the new server before going back to the current slice "
        f"(default {RESTART_TIMEOUT:g}, at most {MAX_RESTART_TIMEOUT:g})",
    )
    @magic_arguments.argument("--help", "-h", action="store_true", help="show this help")
    @line_magic
    def gpu_slice(self, line: str) -> Any:
        """Show or change this server's GPU slice (the server restarts for a change)."""
        try:
            args = magic_arguments.parse_argstring(self.gpu_slice, line)
        except UsageError as err:
            raise UsageError(f"{err} (see %gpu_slice --help)") from None
        if args.help:
            print(self.gpu_slice.parser.format_help())
            return None
        typed = " ".join(args.size).strip()
        if args.release and typed:
            raise UsageError("give a size or --release, not both")
        if not 0 < args.timeout <= MAX_RESTART_TIMEOUT:
            raise UsageError(
                f"--timeout must be a positive number of seconds, at most {MAX_RESTART_TIMEOUT:g}"
            )
        if typed:
            try:
                parse_size(typed)
            except SizeError as err:
                raise UsageError(str(err)) from None
        # "10 gb" is sent as "10gb": a request output carries one token (the front end's rule).
        size = typed.replace(" ", "") or None
        kernel_id = os.environ.get(KERNEL_ID_ENV)
        if kernel_id:
            if not size:
                raise UsageError(pod_kernel_answer(os.environ, args.release))
            # The front end's button is the confirmation: it says the kernel's state is lost.
            display(kernel_request_bundle(size, kernel_id), raw=True)
            return None
        client = self._client()
        if not size and not args.release:
            try:
                display(GpuSlicePicker(client, timeout=args.timeout))
            except ClientError as err:
                raise UsageError(str(err)) from None
            return None
        try:
            current = client.current()
            if size is None and not current.get("slice"):
                raise UsageError("this server has no GPU slice, so there is nothing to release")
            summary = (
                "Release the GPU slice (no GPU after the restart)."
                if size is None
                else f"{size} would get {describe_plan(client.plan(size)['plan'])}."
            )
        except ClientError as err:
            raise UsageError(str(err)) from None
        if not current.get("restartable", False):
            # Say what the size would get, but offer no restart that can only fail.
            raise UsageError(f"{summary} But {NOT_RESTARTABLE}")
        notice = "The server restarts: open notebooks are saved first; kernels lose their state."

        def change() -> dict[str, Any]:
            try:
                return start_change(client, size, args.timeout, args.saved)
            except ClientError as err:
                raise UsageError(str(err)) from None

        if args.yes:
            print(summary)
            display(change(), raw=True)
        else:
            what = "--release" if size is None else size
            display(Confirmation(summary, notice, change, f"%gpu_slice {what} --yes"))
        return None


class Confirmation(widgets.VBox):  # type: ignore[misc]
    """The summary, a notice and two buttons; confirming shows what ``on_confirm`` returns.

    Where widgets cannot be shown (terminal IPython) it reads as text with the command that
    does the same without a button.
    """

    def __init__(
        self,
        summary: str,
        notice: str,
        on_confirm: Callable[[], dict[str, Any]],
        command: str = "",
    ) -> None:
        self._text = "\n".join(
            [summary, notice] + ([f"To go ahead, run:  {command}"] if command else [])
        )
        yes = widgets.Button(description="Restart with it", button_style="warning", icon="refresh")
        no = widgets.Button(description="Cancel")
        output = widgets.Output()

        def confirm(_: Any) -> None:
            yes.disabled = no.disabled = True
            try:
                bundle = on_confirm()
            except UsageError as err:
                bundle = {"text/plain": f"UsageError: {err}"}
            output.outputs = (display_data(bundle),)

        def cancel(_: Any) -> None:
            yes.disabled = no.disabled = True
            output.outputs = (display_data({"text/plain": "Cancelled: nothing changed."}),)

        yes.on_click(confirm)
        no.on_click(cancel)
        super().__init__(
            [
                widgets.HTML(f"<b>{html.escape(summary)}</b><br>{html.escape(notice)}"),
                widgets.HBox([yes, no]),
                output,
            ]
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle: dict[str, Any] = super()._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = self._text
        return bundle


def load_ipython_extension(ipython: Any) -> None:
    ipython.register_magics(GpuSliceMagics(ipython))


def unload_ipython_extension(ipython: Any) -> None:
    """Remove ``%gpu_slice`` again (``%unload_ext``, ``%reload_ext``)."""
    ipython.magics_manager.magics["line"].pop("gpu_slice", None)
    ipython.magics_manager.registry.pop(GpuSliceMagics.__name__, None)
