"""What a kernel pod runs: ipykernel on a private copy of the connection file from the Secret.

The Secret is mounted read-only, and ipykernel writes its connection file back, so it gets a
copy that only this user can read.
"""

from __future__ import annotations

import os
import sys
import tempfile

from jupyter_mig.kernels.contract import CONNECTION_ENV


def main() -> None:
    source = os.environ.get(CONNECTION_ENV, "")
    if not source or not os.path.isfile(source):
        sys.exit(f"${CONNECTION_ENV} names no connection file ({source!r}): mount the Secret")
    with open(source, "rb") as secret:
        data = secret.read()
    fd, copy = tempfile.mkstemp(prefix="kernel-", suffix=".json")  # mode 0600
    with os.fdopen(fd, "wb") as private:
        private.write(data)
    os.execv(sys.executable, [sys.executable, "-m", "ipykernel_launcher", "-f", copy])


if __name__ == "__main__":
    main()
