"""Fingerprints of the labextension's sources and of the committed build output.

The prebuilt output in ``jupyter_mig/labextension/`` is committed (it is what the wheel ships), so
a test has to catch sources changed without a rebuild, or output edited by hand.
``scripts/build.sh`` records both fingerprints in ``build-fingerprint.json``;
``tests/unit/test_labextension_build.py`` recomputes them.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

LABEXTENSION = Path(__file__).resolve().parent.parent
OUTPUT = LABEXTENSION.parent / "jupyter_mig" / "labextension"
RECORD = LABEXTENSION / "build-fingerprint.json"
SOURCE_FILES = ("package.json", "package-lock.json", "tsconfig.json")
SOURCE_DIRS = ("src", "style")


def _digest(root: Path, files: list[Path]) -> str:
    sha = hashlib.sha256()
    for path in sorted(files):
        sha.update(path.relative_to(root).as_posix().encode() + b"\0")
        sha.update(path.read_bytes() + b"\0")
    return sha.hexdigest()


def source_files() -> list[Path]:
    """What the build reads: package metadata, TypeScript sources (not the specs), styles."""
    files = [LABEXTENSION / name for name in SOURCE_FILES]
    for directory in SOURCE_DIRS:
        files += [
            p
            for p in (LABEXTENSION / directory).rglob("*")
            if p.is_file() and "__tests__" not in p.parts
        ]
    return files


def fingerprints() -> dict[str, str]:
    output = [p for p in OUTPUT.rglob("*") if p.is_file()]
    return {
        "sources": _digest(LABEXTENSION, source_files()),
        "output": _digest(OUTPUT, output),
    }


def recorded() -> dict[str, str]:
    data: dict[str, str] = json.loads(RECORD.read_text())
    return data


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: fingerprint.py --write   (run by labextension/scripts/build.sh)")
    RECORD.write_text(json.dumps(fingerprints(), indent=2) + "\n")
