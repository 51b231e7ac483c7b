"""Files the command line writes: checked before the long work, written whole or not at all.

A run of many minutes must not fail at its end on a typo in an output path, and a reader must
never see a half-written file, so outputs are checked up front (:func:`output_path`) and written
to a temporary file in the same directory, then renamed over the target (:func:`write_atomic`).
The file gets the permissions an ordinary ``open(path, "w")`` would give (0666 less the umask),
not the 0600 of a temporary file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from jupyter_mig.errors import UserError


def output_path(path: str | None, flag: str, suffixes: tuple[str, ...] = ()) -> Path | None:
    """``path`` as a writable output file (None stays None); ``suffixes``: the ones allowed."""
    if path is None:
        return None
    target = Path(path)
    if suffixes and target.suffix.lower() not in suffixes:
        raise UserError(
            f"{flag} {path}: unknown file type {target.suffix or '(none)'!r}; "
            f"name it with one of {', '.join(suffixes)}"
        )
    if target.is_dir():
        raise UserError(f"{flag} {path}: is a directory; give a file name")
    parent = target.parent
    if not parent.is_dir():
        raise UserError(f"{flag} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: cannot write into directory {parent}")
    if target.exists() and not os.access(target, os.W_OK):
        raise UserError(f"{flag} {path}: the file exists and is not writable")
    return target


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(target: Path, data: bytes) -> None:
    """Replace ``target`` with ``data`` in one step, with the permissions of a new file."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), 0o666 & ~_umask())
        os.replace(tmp, target)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise UserError(f"cannot write {target}: {err.strerror}") from None
