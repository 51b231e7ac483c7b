"""The hub's unit tests again on the JupyterHub 5.4 line (Zero to JupyterHub 4.x ships it).

This environment has the newest JupyterHub; scripts/setup.sh installs 5.4.4 into ``.venv-hub5``
(extra ``hub5-test``), where the same tests run in a separate process.  The integration tests
(tests/integration/test_hub_*.py) start a hub of each line themselves.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HUB5_PYTHON = REPO / ".venv-hub5" / "bin" / "python"
HUB_UNIT_TESTS = ["test_hub_spawner.py", "test_hub_service.py", "test_hub_policy.py"]


def test_the_hub_unit_tests_pass_on_jupyterhub_5() -> None:
    if not HUB5_PYTHON.exists():
        pytest.skip(f"no {HUB5_PYTHON}: scripts/setup.sh installs the JupyterHub 5.4 line there")
    version = subprocess.run(
        [str(HUB5_PYTHON), "-c", "import jupyterhub; print(jupyterhub.__version__)"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    assert version.startswith("5.4."), version
    tests = [str(Path(__file__).parent / name) for name in HUB_UNIT_TESTS]
    done = subprocess.run(
        [str(HUB5_PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_the_hub_docs_show_the_tested_values() -> None:
    """docs/hub.md quotes examples/z2jh-values.yaml whole, the file the hub tests load."""
    values = (REPO / "examples" / "z2jh-values.yaml").read_text().rstrip("\n")
    assert f"```yaml\n{values}\n```" in (REPO / "docs" / "hub.md").read_text()
