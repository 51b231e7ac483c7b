"""The process a sim node runs for one container: the pod's command, and its exit code on disk.

``python -m jupyter_mig.simnode.container EXIT_FILE -- COMMAND [ARG...]`` runs the command,
forwards SIGTERM/SIGINT to it, and writes its exit status (128 + signal when killed) to
EXIT_FILE, so that a sim node restarted meanwhile still learns how the container ended.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType


def _write_exit(path: Path, code: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{code}\n", encoding="utf-8")
    os.replace(tmp, path)


def main(argv: Sequence[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m jupyter_mig.simnode.container EXIT_FILE -- COMMAND [ARG...]")
        return 2
    exit_file = Path(argv[0])
    children: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        if not children:  # stopped before the command started: it never will
            _write_exit(exit_file, 128 + signum)
            os._exit(128 + signum)
        children[0].send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    try:
        children.append(subprocess.Popen(list(argv[2:])))
    except OSError as err:
        print(f"cannot run {argv[2]!r}: {err.strerror}", file=sys.stderr, flush=True)
        code = 127 if isinstance(err, FileNotFoundError) else 126
        _write_exit(exit_file, code)
        return code
    returncode = children[0].wait()
    code = 128 - returncode if returncode < 0 else returncode
    _write_exit(exit_file, code)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
