"""``jupyter-mig plan``: the JSON contract end to end, and one clear line for every bad input."""

from __future__ import annotations

import copy
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from jupyter_mig.cli import main
from jupyter_mig.mig.contract import MAX_INSTANCES_PER_POD

GOOD: dict[str, Any] = {
    "nodes": [
        {
            "name": "node-1",
            "labels": {"pool": "a"},
            "gpus": [
                {
                    "index": 0,
                    "model": "A100-80GB",
                    "instances": [{"profile": "1g.10gb", "start": 0, "used": True}],
                }
            ],
        }
    ],
    "pending": [
        {
            "name": "demo/pod-a",
            "requests": {"1g.10gb": 1},
            "nodes": ["node-1"],
            "priority": 0,
            "interactive": False,
        }
    ],
}


def run_plan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], document: Any, raw: str | None = None
) -> tuple[int, str, str]:
    path = tmp_path / "input.json"
    path.write_text(raw if raw is not None else json.dumps(document), encoding="utf-8")
    code = main(["plan", str(path)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_plan_the_architecture_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_plan(tmp_path, capsys, GOOD)
    assert (code, err) == (0, "")
    result = json.loads(out)
    assert set(result) == {"gpus", "placements", "unplaced", "ops"}
    (gpu,) = result["gpus"]
    assert (gpu["node"], gpu["index"]) == ("node-1", 0)
    assert {"profile": "1g.10gb", "start": 0} in gpu["instances"]
    assert len(gpu["instances"]) == 2
    (placed,) = result["placements"]["demo/pod-a"]
    assert placed["node"] == "node-1" and placed["gpu"] == 0 and placed["profile"] == "1g.10gb"
    assert placed["start"] != 0  # slice 0 holds the in-use instance
    assert {"profile": "1g.10gb", "start": placed["start"]} in gpu["instances"]
    assert result["unplaced"] == []
    assert result["ops"] == {"create": 1, "destroy": 0}


def test_plan_from_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(GOOD)))
    assert main(["plan", "-", "--indent", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") > 5  # pretty-printed
    assert json.loads(out)["ops"] == {"create": 1, "destroy": 0}


def test_plan_lists_unchanged_gpus_and_unplaced_pods(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = {
        "nodes": [
            {
                "name": "n",
                "gpus": [
                    {
                        "index": 0,
                        "model": "A30-24GB",
                        "instances": [{"profile": "4g.24gb", "start": 0, "used": True}],
                    },
                    {"index": 1, "model": "NVIDIA-A30"},
                ],
            }
        ],
        "pending": [
            {"name": "big", "requests": {"40gb": 1}},
            {"name": "small", "requests": {"6gb": 1}},
        ],
    }
    code, out, _ = run_plan(tmp_path, capsys, doc)
    result = json.loads(out)
    assert code == 0
    assert result["gpus"][0] == {
        "node": "n",
        "index": 0,
        "instances": [{"profile": "4g.24gb", "start": 0}],
    }
    assert result["unplaced"] == ["big"]  # no A30 slice has 40 GB
    assert result["placements"]["small"][0]["gpu"] == 1


def test_plan_an_empty_round(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_plan(tmp_path, capsys, {"nodes": []})
    assert code == 0
    assert json.loads(out) == {
        "gpus": [],
        "placements": {},
        "unplaced": [],
        "ops": {"create": 0, "destroy": 0},
    }


def edited(path: list[Any], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(GOOD)
    target: Any = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return doc


def with_pods(*pods: dict[str, Any]) -> dict[str, Any]:
    return {"nodes": copy.deepcopy(GOOD["nodes"]), "pending": list(pods)}


def with_instances(*instances: dict[str, Any]) -> dict[str, Any]:
    return edited(["nodes", 0, "gpus", 0, "instances"], list(instances))


BAD_DOCUMENTS: list[tuple[str, Any, str]] = [
    ("top-level list", [], "input: expected an object"),
    ("unknown top-level field", {**GOOD, "pendng": []}, "input: unknown field 'pendng'"),
    ("nodes missing", {"pending": []}, "nodes: expected a list"),
    ("nodes not a list", {"nodes": {}}, "nodes: expected a list"),
    ("node not an object", {"nodes": ["n"]}, "nodes[0]: expected an object"),
    ("node without name", edited(["nodes", 0, "name"], None), "nodes[0].name"),
    ("node name empty", edited(["nodes", 0, "name"], ""), "nodes[0].name: must not be empty"),
    (
        "duplicate node names",
        {"nodes": [GOOD["nodes"][0], GOOD["nodes"][0]]},
        "nodes[1].name: duplicate node name 'node-1'",
    ),
    ("label not a string", edited(["nodes", 0, "labels"], {"a": 1}), "nodes[0].labels['a']"),
    (
        "unknown model",
        edited(["nodes", 0, "gpus", 0, "model"], "Z100-80GB"),
        "nodes[0].gpus[0].model: unknown GPU model 'Z100-80GB'",
    ),
    ("model not a string", edited(["nodes", 0, "gpus", 0, "model"], 80), "nodes[0].gpus[0].model"),
    ("gpu index missing", edited(["nodes", 0, "gpus", 0, "index"], None), "nodes[0].gpus[0].index"),
    (
        "gpu index negative",
        edited(["nodes", 0, "gpus", 0, "index"], -1),
        "nodes[0].gpus[0].index: must be >= 0",
    ),
    (
        "duplicate gpu index",
        edited(["nodes", 0, "gpus"], [GOOD["nodes"][0]["gpus"][0]] * 2),
        "nodes[0].gpus[1].index: duplicate GPU index 0",
    ),
    (
        "unknown instance profile",
        with_instances({"profile": "9g.99gb", "start": 0}),
        "nodes[0].gpus[0].instances[0].profile: A100-80GB has no MIG profile '9g.99gb'",
    ),
    (
        "unknown instance profile id",
        with_instances({"profile": 77, "start": 0}),
        "nodes[0].gpus[0].instances[0].profile: A100-80GB has no MIG profile with NVML id 77",
    ),
    (
        "instance profile of another model",
        with_instances({"profile": "1g.5gb", "start": 0}),
        "nodes[0].gpus[0].instances[0].profile",
    ),
    (
        "instance start missing",
        with_instances({"profile": "1g.10gb"}),
        "nodes[0].gpus[0].instances[0].start",
    ),
    (
        "instance used not a bool",
        with_instances({"profile": "1g.10gb", "start": 0, "used": "yes"}),
        "nodes[0].gpus[0].instances[0].used",
    ),
    (
        "overlapping input layout",
        with_instances(
            {"profile": "4g.40gb", "start": 0}, {"profile": "2g.20gb", "start": 2, "used": True}
        ),
        "nodes[0].gpus[0].instances: invalid A100-80GB layout: ",
    ),
    (
        "illegal start in the input layout",
        with_instances({"profile": "3g.40gb", "start": 2}),
        "nodes[0].gpus[0].instances: invalid A100-80GB layout: 3g.40gb cannot start at slice 2",
    ),
    (
        "two +me in the input layout",
        with_instances(
            {"profile": "1g.10gb+me", "start": 0}, {"profile": "1g.10gb.me", "start": 1}
        ),
        "nodes[0].gpus[0].instances: invalid A100-80GB layout: ",
    ),
    ("pending not a list", edited(["pending"], {}), "pending: expected a list"),
    ("pod without name", with_pods({"requests": {"10gb": 1}}), "pending[0].name"),
    ("pod requests missing", with_pods({"name": "a"}), "pending[0].requests"),
    (
        "duplicate pod names",
        with_pods({"name": "a", "requests": {"10gb": 1}}, {"name": "a", "requests": {"20gb": 1}}),
        "pending[1].name: duplicate pod name 'a'",
    ),
    (
        "unknown requested profile",
        with_pods({"name": "a", "requests": {"9g.99gb": 1}}),
        "pending[0].requests['9g.99gb']: no GPU model offers the profile '9g.99gb'",
    ),
    (
        "zero size",
        with_pods({"name": "a", "requests": {"0gb": 1}}),
        "pending[0].requests['0gb']: a GPU slice size must be positive",
    ),
    (
        "malformed size",
        with_pods({"name": "a", "requests": {"ten gb": 1}}),
        "pending[0].requests['ten gb']: cannot read",
    ),
    (
        "huge size",
        with_pods({"name": "a", "requests": {"5000gb": 1}}),
        "pending[0].requests['5000gb']: no GPU model offers a 5000 GB slice; the largest is",
    ),
    (
        "negative count",
        with_pods({"name": "a", "requests": {"10gb": -3}}),
        "pending[0].requests['10gb']: count must be between 1 and",
    ),
    (
        "zero count",
        with_pods({"name": "a", "requests": {"10gb": 0}}),
        "pending[0].requests['10gb']: count must be between 1 and",
    ),
    (
        "huge count",
        with_pods({"name": "a", "requests": {"10gb": 10**12}}),
        "pending[0].requests['10gb']: count must be between 1 and",
    ),
    (
        "count not an integer",
        with_pods({"name": "a", "requests": {"10gb": "2"}}),
        "pending[0].requests['10gb']: expected a count",
    ),
    (
        "count a float",
        with_pods({"name": "a", "requests": {"10gb": 1.0}}),
        "pending[0].requests['10gb']: expected a count",
    ),
    (
        "count a bool",
        with_pods({"name": "a", "requests": {"10gb": True}}),
        "pending[0].requests['10gb']: expected a count",
    ),
    (
        "too many instances in total",
        with_pods({"name": "a", "requests": {"10gb": MAX_INSTANCES_PER_POD, "20gb": 1}}),
        "pending[0].requests: more than",
    ),
    (
        "pod nodes not a list",
        with_pods({"name": "a", "requests": {"10gb": 1}, "nodes": "node-1"}),
        "pending[0].nodes",
    ),
    (
        "pod nodes not names",
        with_pods({"name": "a", "requests": {"10gb": 1}, "nodes": [1]}),
        "pending[0].nodes",
    ),
    (
        "priority not an integer",
        with_pods({"name": "a", "requests": {"10gb": 1}, "priority": "high"}),
        "pending[0].priority",
    ),
    (
        "interactive not a bool",
        with_pods({"name": "a", "requests": {"10gb": 1}, "interactive": 1}),
        "pending[0].interactive",
    ),
    ("models not a list", {**GOOD, "models": {}}, "models: expected a list"),
    (
        "published table without profiles",
        {**GOOD, "models": [{"model": "X", "grid": 8, "compute_budget": 7}]},
        "models[0]",
    ),
]


@pytest.mark.parametrize(
    ("document", "expected"),
    [(d, e) for _, d, e in BAD_DOCUMENTS],
    ids=[n for n, _, _ in BAD_DOCUMENTS],
)
def test_bad_input_is_one_line_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], document: Any, expected: str
) -> None:
    code, out, err = run_plan(tmp_path, capsys, document)
    assert code == 2
    assert out == ""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("jupyter-mig plan: error: ")
    assert expected in lines[0], lines[0]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"nodes": [', "not valid JSON (line 1, column 12"),
        ("", "not valid JSON"),
        ("{'nodes': []}", "not valid JSON"),
        ("[" * 100_000, "input.json: "),  # deeper than the JSON parser's recursion limit
    ],
    ids=["truncated", "empty", "single quotes", "deep nesting"],
)
def test_malformed_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], raw: str, expected: str
) -> None:
    code, out, err = run_plan(tmp_path, capsys, None, raw=raw)
    assert (code, out) == (2, "")
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert expected in err


def test_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "input.json"
    path.write_bytes(b"\xff\xfe{}")
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and str(path) in err


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(tmp_path / "nope.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jupyter-mig plan: error: cannot read ") and len(err.splitlines()) == 1


def console_script() -> list[str]:
    script = Path(sys.executable).with_name("jupyter-mig")
    if not script.exists():
        pytest.skip("the jupyter-mig console script is not installed next to this interpreter")
    return [str(script)]


def test_console_script_plan_and_bad_input() -> None:
    command = [*console_script(), "plan", "-"]
    ok = subprocess.run(
        command, input=json.dumps(GOOD), capture_output=True, text=True, timeout=120, check=False
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["ops"] == {"create": 1, "destroy": 0}
    bad = with_pods({"name": "a", "requests": {"10gb": -3}})
    result = subprocess.run(
        command, input=json.dumps(bad), capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "jupyter-mig plan: error: pending[0].requests['10gb']: count must be between 1 and "
        f"{MAX_INSTANCES_PER_POD}, got -3"
    ]
