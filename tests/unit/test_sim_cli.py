"""``jupyter-mig simulate`` end to end: output shapes, files, and one-line errors."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from jupyter_mig.cli import main
from jupyter_mig.errors import UserError
from jupyter_mig.sim.cli import _bounded

TRACES = Path(__file__).resolve().parents[3] / "shared" / "traces" / "openb"
KEYS = {"policy", "pods", "placed", "unplaced", "wait_seconds", "utilization", "ops"}


def check_result(doc: dict[str, object]) -> None:
    assert set(doc) >= KEYS
    assert doc["placed"] + doc["unplaced"] == doc["pods"]  # type: ignore[operator]
    waits = doc["wait_seconds"]
    assert isinstance(waits, dict) and set(waits) == {"p50", "p95", "p99"}
    assert waits["p50"] <= waits["p95"] <= waits["p99"]
    assert isinstance(doc["ops"], dict) and set(doc["ops"]) == {"create", "destroy"}
    assert 0.0 <= doc["utilization"] <= 1.0  # type: ignore[operator]


def test_default_run_compares_every_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.json"
    assert main(["simulate", "--count", "150", "--nodes", "2", "--json", str(out)]) == 0
    docs = json.loads(out.read_text())
    assert isinstance(docs, list)
    assert [d["policy"] for d in docs] == [
        "dynamic",
        "nos-greedy",
        "static:all-1g",
        "static:balanced",
        "static:all-3g",
    ]
    for doc in docs:
        check_result(doc)
        assert doc["pods"] == 150
    table = capsys.readouterr().out
    assert "static:balanced" in table and "wait p50" in table


def test_one_policy_gives_one_object_and_a_plot(tmp_path: Path) -> None:
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    args = ["simulate", "--count", "80", "--policy", "dynamic", "--gpu", "H100-80GB"]
    assert main([*args, "--json", str(out), "--plot", str(png)]) == 0
    doc = json.loads(out.read_text())
    assert isinstance(doc, dict) and doc["policy"] == "dynamic"
    check_result(doc)
    assert png.read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.png"]  # no temp files


def test_csv_workload(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "pods.csv"
    lines = ["name,num_gpu,gpu_milli,creation_time,deletion_time,qos"]
    lines += [f"p{i},1,{(i * 97) % 1000 + 1},{i * 30},{i * 30 + 600},LS" for i in range(60)]
    csv.write_text("\n".join(lines) + "\n")
    out = tmp_path / "r.json"
    args = ["simulate", "--pods", str(csv), "--nodes", "1", "--time-scale", "2"]
    assert main([*args, "--policy", "nos-greedy", "--json", str(out)]) == 0
    check_result(json.loads(out.read_text()))
    assert "rounding waste" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--policy", "greedy"], "--policy 'greedy': unknown policy"),
        (["--gpu", "V100"], "--gpu: unknown GPU model 'V100'"),
        (["--nodes", "-2"], "--nodes: must be at least 1, got -2"),
        (["--gpus-per-node", "two"], "--gpus-per-node: expected a whole number"),
        (["--load", "0"], "--load: must be at least"),
        (["--time-scale", "5"], "--time-scale: only applies to a trace"),
        (["--pods", "/nonexistent/pods.csv"], "--pods /nonexistent/pods.csv: cannot read"),
        (["--plot", "/nonexistent/dir/p.png"], "--plot /nonexistent/dir/p.png: directory"),
        (["--plot", "p.gif"], "--plot p.gif: unknown file type '.gif'"),
        (["--count", "100000000"], "--count: at most 1e+06 (memory), got 100000000"),
        (["--nodes", "1000000"], "--nodes: at most 100000 (memory)"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    out = tmp_path / "r.json"
    assert main(["simulate", "--count", "20", *args, "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not out.exists()


def test_malformed_csv_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text("name,num_gpu,gpu_milli\na,1,250\nb,x,250\n")
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    argv = ["simulate", "--pods", str(csv), "--json", str(out), "--plot", str(png)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        f"jupyter-mig simulate: error: {csv} line 3: num_gpu: expected a whole number, got 'x'"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]


@pytest.mark.skipif(not TRACES.is_dir(), reason="openb traces not present")
def test_openb_trace_slice(tmp_path: Path) -> None:
    source = (TRACES / "openb_pod_list_default.csv").read_text().splitlines()
    csv = tmp_path / "slice.csv"
    csv.write_text("\n".join(source[:301]) + "\n")
    out = tmp_path / "r.json"
    argv = ["simulate", "--pods", str(csv), "--nodes", "2", "--load", "1.0", "--json", str(out)]
    assert main(argv) == 0
    docs = {d["policy"]: d for d in json.loads(out.read_text())}
    for doc in docs.values():
        check_result(doc)
    for name in ("static:all-1g", "static:balanced", "static:all-3g"):
        assert docs["dynamic"]["placed"] > docs[name]["placed"]


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_outputs_get_the_permissions_of_a_new_file(tmp_path: Path, umask: int) -> None:
    out, plot = tmp_path / "r.json", tmp_path / "r.pdf"
    old = os.umask(umask)
    try:
        args = ["simulate", "--count", "30", "--policy", "dynamic"]
        assert main([*args, "--json", str(out), "--plot", str(plot)]) == 0
    finally:
        os.umask(old)
    for path in (out, plot):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert plot.read_bytes().startswith(b"%PDF")  # the format its suffix names
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.pdf"]


def test_an_oversized_trace_is_refused_before_it_fills_memory(tmp_path: Path) -> None:
    csv = tmp_path / "pods.csv"
    csv.write_text("name,num_gpu,gpu_milli\n" + "".join(f"p{i},1,500\n" for i in range(100)))
    with pytest.raises(UserError, match="larger than 0 MiB"):
        list(_bounded(csv.read_text().splitlines(keepends=True), str(csv), limit=200))
