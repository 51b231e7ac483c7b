"""Size requests: parsing, per-model resolution to the least-waste profile, and clear errors."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_mig.cli import main
from jupyter_mig.mig.models import BUILTIN_MODELS, GpuModel, get_model
from jupyter_mig.mig.sizes import (
    SizeError,
    SizeRequest,
    nominal_gb,
    parse_size,
    resolve,
    resolve_for_model,
)


@pytest.mark.parametrize(
    ("text", "kind", "amount"),
    [
        ("10gb", "gb", 10),
        ("10GB", "gb", 10),
        ("10Gb", "gb", 10),
        ("10G", "gb", 10),
        (" 10gb ", "gb", 10),
        ("10 gb", "gb", 10),
        ("10GiB", "gib", 10),
        ("10gib", "gib", 10),
        ("4.5gb", "gb", 4.5),
        ("2g", "compute", 2),
        ("7g", "compute", 7),
    ],
)
def test_parse_amounts(text: str, kind: str, amount: float) -> None:
    req = parse_size(text)
    assert (req.kind, req.amount) == (kind, amount)


@pytest.mark.parametrize(
    "text",
    ["1g.10gb", "mig-1g.10gb", "nvidia.com/mig-1g.10gb", "1G.10GB", "MIG-1g.10gb"],
)
def test_parse_profile_names(text: str) -> None:
    req = parse_size(text)
    assert req.kind == "profile"
    assert req.profile_name == "1g.10gb"


@pytest.mark.parametrize(
    ("text", "profile"), [("1g.10gb+me", "1g.10gb+me"), ("nvidia.com/mig-1g.10gb.me", "1g.10gb.me")]
)
def test_parse_media_profile_names(text: str, profile: str) -> None:
    req = parse_size(text)
    assert (req.kind, req.profile_name) == ("profile", profile)


# Expected resolutions, worked out by hand from the reference tables (nominal GB in the name;
# least memory, then least compute).
RESOLUTIONS = {
    "5gb": {"A30-24GB": "1g.6gb", "A100-40GB": "1g.5gb", "A100-80GB": "1g.10gb"},
    "10gb": {
        "A30-24GB": "2g.12gb",
        "A100-40GB": "1g.10gb",  # 1g.10gb and 2g.10gb have the same memory: fewer slices win
        "A100-80GB": "1g.10gb",
        "H100-80GB": "1g.10gb",
        "H100-94GB": "1g.12gb",
        "H100-96GB": "1g.12gb",
        "H200-141GB": "1g.18gb",
        "GH200-144GB": "1g.18gb",
        "B200-180GB": "1g.23gb",
        "RTXPRO6000-96GB": "1g.24gb",
    },
    "10G": {"A100-40GB": "1g.10gb", "A30-24GB": "2g.12gb"},
    "20gb": {
        "A30-24GB": "4g.24gb",
        "A100-40GB": "3g.20gb",
        "A100-80GB": "1g.20gb",
        "H100-94GB": "1g.24gb",
        "RTXPRO6000-96GB": "1g.24gb",
    },
    "40gb": {
        "A30-24GB": None,
        "A100-40GB": "7g.40gb",
        "A100-80GB": "3g.40gb",
        "H100-94GB": "3g.47gb",
        "RTXPRO6000-96GB": "2g.48gb",
    },
    "100gb": {"A100-80GB": None, "H200-141GB": "7g.141gb", "RTXPRO6000-96GB": None},
    # real memory: an A100-80GB 1g.10gb has 9728 MiB < 10 GiB; an H100 94GB 1g.12gb has 11008
    "10GiB": {"A100-80GB": "1g.20gb", "H100-80GB": "1g.20gb", "H100-94GB": "1g.12gb"},
    "20GiB": {"A100-40GB": "7g.40gb", "H100-80GB": "3g.40gb", "A30-24GB": "4g.24gb"},
    "1g": {"A100-40GB": "1g.5gb", "A30-24GB": "1g.6gb", "RTXPRO6000-96GB": "1g.24gb"},
    "2g": {"A100-40GB": "2g.10gb", "A30-24GB": "2g.12gb", "RTXPRO6000-96GB": "2g.48gb"},
    "3g": {"A100-80GB": "3g.40gb", "A30-24GB": "4g.24gb", "RTXPRO6000-96GB": "4g.96gb"},
    "5g": {"A100-80GB": "7g.80gb", "A30-24GB": None},
    "1g.10gb": {"A100-40GB": "1g.10gb", "A100-80GB": "1g.10gb", "A30-24GB": None},
    "mig-1g.10gb": {"A100-80GB": "1g.10gb", "H100-80GB": "1g.10gb"},
    "nvidia.com/mig-1g.10gb": {"A100-80GB": "1g.10gb"},
    "1g.10gb+me": {"A100-80GB": "1g.10gb+me", "A100-40GB": None},
    "nvidia.com/mig-1g.24gb.me.all": {"RTXPRO6000-96GB": "1g.24gb+me.all"},
}


@pytest.mark.parametrize(
    ("text", "model_name", "expected"),
    [(t, m, e) for t, table in RESOLUTIONS.items() for m, e in table.items()],
)
def test_resolve_for_model(text: str, model_name: str, expected: str | None) -> None:
    got = resolve_for_model(text, get_model(model_name))
    assert (got.name if got else None) == expected


def test_profile_names_resolve_by_id_on_both_a100s() -> None:
    # 1g.10gb is the double-memory 1g (id 15) on a 40GB part and the plain 1g (id 19) on an 80GB
    forty = resolve_for_model("1g.10gb", get_model("A100-40GB"))
    eighty = resolve_for_model("1g.10gb", get_model("A100-80GB"))
    assert forty is not None and eighty is not None
    assert (forty.nvml_id, eighty.nvml_id) == (15, 19)


def test_resolve_covers_every_model_that_can_serve() -> None:
    chosen = resolve("10gb")
    assert set(chosen) == {m.name for m in BUILTIN_MODELS}
    assert set(resolve("40gb")) == {m.name for m in BUILTIN_MODELS} - {"A30-24GB"}
    only = resolve("2g", [get_model("A30-24GB")])
    assert {k: v.name for k, v in only.items()} == {"A30-24GB": "2g.12gb"}


def test_sizes_never_pick_media_variants() -> None:
    for model in BUILTIN_MODELS:
        for text in ("1gb", "1g", "1GiB", "24gb", "2g"):
            got = resolve_for_model(text, model)
            assert got is not None and got.media == "none", (model.name, text)


# -- errors: one clear line ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0gb", "must be positive"),
        ("-3gb", "must be positive"),
        ("0g", "must be positive"),
        ("ten gb", "cannot read 'ten gb'"),
        ("10", "cannot read '10'"),
        ("10tb", "cannot read"),
        ("", "empty GPU slice size"),
        ("   ", "empty GPU slice size"),
        ("1.5g", "whole numbers"),
    ],
)
def test_malformed_sizes(text: str, expected: str) -> None:
    with pytest.raises(SizeError) as info:
        parse_size(text)
    message = str(info.value)
    assert expected in message and "\n" not in message
    assert "e.g." in message or "whole numbers" in message


def test_too_large_names_the_largest_slice() -> None:
    with pytest.raises(SizeError) as info:
        resolve("5000gb")
    message = str(info.value)
    assert message.startswith("no GPU model offers a 5000 GB slice; the largest is ")
    # the B200 (180 GB) is the largest built-in part
    assert message.endswith("7g.180gb on B200-180GB")
    assert "\n" not in message


def test_too_large_among_given_models() -> None:
    with pytest.raises(SizeError, match=r"the largest is 4g\.24gb on A30-24GB"):
        resolve("40gb", [get_model("A30-24GB")])
    with pytest.raises(SizeError, match="5000 GiB"):
        resolve("5000GiB")
    with pytest.raises(SizeError, match="9-compute-slice"):
        resolve("9g")


def test_unknown_profile_name() -> None:
    with pytest.raises(SizeError) as info:
        resolve("9g.99gb")
    assert "'9g.99gb'" in str(info.value) and "1g.10gb" in str(info.value)


# -- properties: least waste -----------------------------------------------------------------


def satisfies(req: SizeRequest, profile_memory_mib: int, gb: int, compute: int) -> bool:
    if req.kind == "gb":
        return gb >= req.amount
    if req.kind == "gib":
        return profile_memory_mib >= req.amount * 1024
    return compute >= req.amount


@settings(max_examples=200, deadline=None)
@given(
    amount=st.integers(1, 200),
    unit=st.sampled_from(["gb", "GB", "G", "GiB", "g"]),
    model=st.sampled_from(BUILTIN_MODELS),
)
def test_least_waste(amount: int, unit: str, model: GpuModel) -> None:
    req = parse_size(f"{amount}{unit}")
    got = resolve_for_model(req, model)
    plain = [p for p in model.profiles if p.media == "none"]
    fitting = [p for p in plain if satisfies(req, p.memory_mib, nominal_gb(p), p.compute)]
    if not fitting:
        assert got is None
        return
    assert got is not None and got in fitting
    for p in fitting:
        if req.kind == "compute":
            assert (got.compute, got.memory_mib) <= (p.compute, p.memory_mib)
        else:
            assert (got.memory_mib, got.compute) <= (p.memory_mib, p.compute)


@settings(max_examples=100, deadline=None)
@given(model=st.sampled_from(BUILTIN_MODELS), data=st.data())
def test_every_profile_name_resolves_to_itself(model: GpuModel, data: st.DataObject) -> None:
    profile = data.draw(st.sampled_from(model.profiles))
    prefix = data.draw(st.sampled_from(["", "mig-", "nvidia.com/mig-"]))
    name = data.draw(st.sampled_from([profile.name, profile.resource_name]))
    assert resolve_for_model(prefix + name, model) == profile


def test_nominal_gb_reads_the_name() -> None:
    assert nominal_gb(get_model("H100-94GB").profile("3g.47gb")) == 47
    assert nominal_gb(get_model("A100-80GB").profile("1g.10gb+me")) == 10


# -- jupyter-mig resolve ----------------------------------------------------------------------


def test_cli_resolve_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["resolve", "10gb", "--model", "A100-40GB", "--model", "A30-24GB"]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert len(lines) == 3
    assert re.search(r"^A100-40GB\s+1g\.10gb\s+1\s+9\.62 GiB\s+nvidia\.com/mig-1g\.10gb$", lines[1])
    assert re.search(r"^A30-24GB\s+2g\.12gb\s+2\s+11\.69 GiB\s+nvidia\.com/mig-2g\.12gb$", lines[2])


def test_cli_resolve_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["resolve", "40gb", "--json"]) == 0
    rows = {row["model"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(rows) == {m.name for m in BUILTIN_MODELS}
    assert rows["A30-24GB"]["profile"] is None
    assert rows["A100-80GB"]["profile"] == "3g.40gb"
    assert rows["A100-80GB"]["resource"] == "nvidia.com/mig-3g.40gb"


def test_cli_resolve_by_product_label(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["resolve", "1g.10gb+me", "-m", "NVIDIA-H100-80GB-HBM3"]) == 0
    assert "nvidia.com/mig-1g.10gb.me" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["resolve", "5000gb"], "no GPU model offers a 5000 GB slice; the largest is"),
        (["resolve", "ten gb"], "cannot read 'ten gb'"),
        (["resolve", "--", "-3gb"], "must be positive"),
        (["resolve", "10gb", "--model", "Z100"], "unknown GPU model 'Z100'"),
        (["resolve", "40gb", "--model", "A30-24GB"], "the largest is 4g.24gb on A30-24GB"),
    ],
)
def test_cli_resolve_errors(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("jupyter-mig resolve: error: ")
    assert expected in lines[0]
