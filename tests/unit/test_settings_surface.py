"""Every setting of every part is declared once, with help, and shown where its users look.

The controller's flags, the hub's ``c.SliceSettings`` and the server's ``c.JupyterMig`` each come
from one declaration; these tests read the help their users read.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from dataclasses import MISSING, fields
from pathlib import Path

import pytest
from traitlets.config import Config, Configurable

from jupyter_mig import cli
from jupyter_mig.controller.settings import Settings, from_flags
from jupyter_mig.hub import SliceSettings, configure_hub
from jupyter_mig.kernels.template import TEMPLATE_ENV, KernelPodTemplate
from jupyter_mig.notebook.config import JupyterMig
from jupyter_mig.slices import contract

REPO = Path(__file__).resolve().parents[2]


def controller_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jupyter-mig controller")
    from jupyter_mig.controller.cli import add_arguments

    add_arguments(parser)
    return parser


def test_controller_help_shows_every_setting_with_its_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        cli.main(["controller", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    actions = {a.dest: a for a in controller_parser()._actions}
    for spec in fields(Settings):
        flag = "--" + spec.name.replace("_", "-")
        assert flag in text, flag
        action = actions[spec.name]
        assert action.help and " ".join(action.help.split()) in text, flag
        if spec.default is not False:
            assert "(default: " in action.help, flag


def test_the_flags_left_out_give_the_declared_defaults() -> None:
    settings = from_flags(controller_parser().parse_args([]))
    for spec in fields(Settings):
        if spec.default is not MISSING:
            assert getattr(settings, spec.name) == spec.default, spec.name
    assert settings.identity and settings.lease_namespace


def test_a_flag_reaches_its_setting() -> None:
    args = controller_parser().parse_args(["--batch-max", "1m", "--watch-namespaces", "a,b"])
    settings = from_flags(args)
    assert (settings.batch_max, settings.watch_namespaces) == (60.0, ("a", "b"))


def trait_help_lines(cls: type[Configurable], text: str) -> None:
    """Each config trait of ``cls`` in ``text`` as ``--Class.name=...``, help and default."""
    for name, trait in cls.class_traits(config=True).items():
        entry = re.search(rf"--{cls.__name__}\.{name}=.*?(?=\n--|\Z)", text, re.S)
        assert entry, f"{cls.__name__}.{name} missing"
        assert trait.help and trait.help.split()[0] in entry.group(), name
        assert "Default:" in entry.group(), name


def test_the_hubs_help_all_shows_every_slice_setting() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "jupyterhub", "--help-all"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    trait_help_lines(SliceSettings, done.stdout)
    trait_help_lines(KernelPodTemplate, done.stdout)


def test_the_servers_settings_show_help_and_default() -> None:
    trait_help_lines(JupyterMig, "\n".join(JupyterMig.class_get_help().splitlines()))


def test_hub_settings_are_set_as_c_slice_settings() -> None:
    c = Config()
    c.SliceSettings.controller_url = "http://controller:8080"
    c.SliceSettings.sizes = ["10gb"]
    c.SliceSettings.slice_changes_per_period = 3
    configure_hub(c)
    carried = json.loads(c.JupyterHub.services[-1]["environment"][contract.HUB_SETTINGS_ENV])
    assert carried["sizes"] == ["10gb"] and carried["slice_changes_per_period"] == 3
    assert carried["restart_timeout"] == contract.RESTART_TIMEOUT


def test_the_kernel_pod_template_is_set_as_c_kernel_pod_template() -> None:
    c = Config()
    c.SliceSettings.controller_url = "http://controller:8080"
    configure_hub(c)
    assert TEMPLATE_ENV not in c.JupyterHub.services[-1]["environment"], "off by default"
    c.KernelPodTemplate.namespace = "jhub"
    c.KernelPodTemplate.image = "kernel:1"
    c.KernelPodTemplate.max_kernels_per_user = 2
    configure_hub(c)
    carried = c.JupyterHub.services[-1]["environment"][TEMPLATE_ENV]
    assert KernelPodTemplate.from_json(carried).max_kernels_per_user == 2


def test_a_hub_without_a_controller_url_is_refused() -> None:
    with pytest.raises(ValueError, match=r"c\.SliceSettings\.controller_url"):
        configure_hub(Config())


def test_the_labextension_mirrors_the_restart_limits() -> None:
    source = (REPO / "labextension" / "src" / "slicerequest.ts").read_text()
    found = dict(re.findall(r"export const (\w+_S) = (\d+);", source))
    assert float(found["RESTART_TIMEOUT_S"]) == contract.RESTART_TIMEOUT
    assert float(found["MAX_TIMEOUT_S"]) == contract.MAX_RESTART_TIMEOUT


def test_a_restart_timeout_longer_than_a_request_may_ask_is_refused() -> None:
    """Else every restart request without its own timeout would get a 400."""
    too_long = contract.MAX_RESTART_TIMEOUT + 1
    with pytest.raises(ValueError, match="at most"):
        SliceSettings(controller_url="http://controller:8080", restart_timeout=too_long)
