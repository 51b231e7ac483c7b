"""Stopping the processes a test started: politely first, then for sure."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess

STOP_S = 10.0


def stop_process(
    process: subprocess.Popen[bytes], how: int = signal.SIGTERM, timeout: float = STOP_S
) -> None:
    """Send ``how`` to a running process, wait up to ``timeout``, then SIGKILL it."""
    if process.poll() is None:
        process.send_signal(how)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


def terminate_pid(pid: int) -> None:
    """SIGTERM to a process the test did not start itself (gone already is fine)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
