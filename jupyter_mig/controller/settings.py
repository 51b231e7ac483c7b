"""The controller's settings, each declared once with its default and help.

The flags of ``jupyter-mig controller`` are derived from these fields (:func:`add_flags`), and
the parsed flags become a :class:`Settings` by name (:func:`from_flags`), so a default or a help
text is never written twice.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import uuid
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from jupyter_mig.mig.planner import DEFAULT_SPARES, MAX_SPARES

_DURATION = re.compile(r"^\s*(?P<value>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
ELECTION = "leader election"


def duration(text: str) -> float:
    """``2s``, ``500ms``, ``1.5m``, ``1h`` or plain seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 2s, 500ms, 5m)")
    return float(match["value"]) * _UNITS[match["unit"] or "s"]


def show_duration(seconds: float) -> str:
    """The shortest of ``1h``, ``5m``, ``2s`` that :func:`duration` reads back as ``seconds``."""
    for unit in ("h", "m", "s"):
        if seconds >= _UNITS[unit] and seconds % _UNITS[unit] == 0:
            return f"{seconds / _UNITS[unit]:g}{unit}"
    return f"{seconds:g}s"


def namespace_list(text: str) -> tuple[str, ...]:
    """``jhub,research`` → ``("jhub", "research")``; each a namespace name or ``*``."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    for name in names:
        if name != "*" and not _NAMESPACE.match(name):
            raise argparse.ArgumentTypeError(
                f"{name!r} is not a namespace name (lower-case letters, digits and '-')"
            )
    return names


def own_namespace() -> str:
    """$POD_NAMESPACE, else the service account's namespace, else ``default``."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return _NAMESPACE_FILE.read_text().strip() or "default"
    except OSError:
        return "default"


def spare_count(text: str) -> int:
    """0 to MAX_SPARES spare instances per profile."""
    if not text.strip().isdigit() or not 0 <= int(text) <= MAX_SPARES:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 0 to {MAX_SPARES}")
    return int(text)


def replica_identity() -> str:
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


def setting(
    default: Any = MISSING,
    *,
    help: str,
    parse: Callable[[str], Any] | None = None,
    metavar: str | None = None,
    group: str | None = None,
    shown: str | None = None,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """A field with what its flag needs: ``help``, how to ``parse`` it, how its default is
    ``shown`` (durations as ``5m`` by default), a ``factory`` for defaults computed at start."""
    meta = {"help": help, "parse": parse, "metavar": metavar, "group": group, "shown": shown}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Settings:
    batch_idle: float = setting(
        2.0, help="plan new batch pods once none has arrived for this long", parse=duration
    )
    batch_max: float = setting(
        10.0, help="...but no later than this after the first arrived", parse=duration
    )
    resync: float = setting(
        300.0, help="list everything again this often, besides watching", parse=duration
    )
    inflight_timeout: float = setting(
        300.0,
        help="how long pods wait for a node that is applying a layout carved for them before "
        "they are planned elsewhere",
        parse=duration,
    )
    spares: int = setting(
        DEFAULT_SPARES,
        help="in rounds that serve pending pods, keep this many free instances of each profile "
        "in use, carved only from space the round leaves free, so the next pod of a size in "
        "demand binds at once (0: create only what pods ask for)",
        parse=spare_count,
        metavar="N",
    )
    #: Where the interactive mark counts (``*``: everywhere); elsewhere pods are batch pods.
    interactive_namespaces: tuple[str, ...] = setting(
        (),
        help="namespaces whose pods may claim interactive priority (the hub's); elsewhere the "
        "component=singleuser-server label and the jupyter-mig.io/interactive annotation are "
        "ignored; '*' trusts every namespace",
        parse=namespace_list,
        metavar="NS,NS",
        shown="none",
    )
    #: Watch pods in these namespaces only (empty: the whole cluster).
    watch_namespaces: tuple[str, ...] = setting(
        (),
        help="serve pods in these namespaces only, with read access to no others",
        parse=namespace_list,
        metavar="NS,NS",
        shown="the whole cluster",
    )
    #: Publish per-GPU layouts (node names, which slices are in use) in the capacity API.
    capacity_detail: bool = setting(
        False,
        help="publish per-GPU layouts (node names, which slices are in use) in the capacity "
        "API, for the JupyterLab slice grid; by default it gives counts per model and profile "
        "only (docs/security.md)",
    )
    leader_elect: bool = setting(
        False, help="run several replicas; only the holder of the Lease plans", group=ELECTION
    )
    lease_name: str = setting(
        "jupyter-mig-controller",
        help="the coordination.k8s.io Lease the replicas compete for",
        group=ELECTION,
    )
    lease_namespace: str = setting(
        help="the Lease's namespace",
        group=ELECTION,
        factory=own_namespace,
        shown="$POD_NAMESPACE, else the service account's namespace, else default",
    )
    lease_duration: float = setting(
        15.0,
        help="how long a Lease holds without renewal before another replica takes over",
        parse=duration,
        group=ELECTION,
    )
    renew_deadline: float = setting(
        10.0,
        help="the leader stops planning when it could not renew for this long",
        parse=duration,
        group=ELECTION,
    )
    retry_period: float = setting(
        2.0,
        help="how often replicas try to acquire or renew the Lease",
        parse=duration,
        group=ELECTION,
    )
    identity: str = setting(
        help="this replica's name in the Lease",
        group=ELECTION,
        factory=replica_identity,
        shown="host name + random id",
    )


def add_flags(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per setting: its help, with the default as the setting declares it."""
    groups: dict[str | None, Any] = {None: parser}
    for spec in fields(Settings):
        meta = spec.metadata
        if meta["group"] not in groups:
            groups[meta["group"]] = parser.add_argument_group(meta["group"])
        target = groups[meta["group"]]
        flag = "--" + spec.name.replace("_", "-")
        if spec.default is False:
            target.add_argument(flag, action="store_true", help=meta["help"])
            continue
        shown = meta["shown"]
        if shown is None:
            default: Any = spec.default
            shown = show_duration(default) if meta["parse"] is duration else default
        target.add_argument(
            flag,
            type=meta["parse"],
            default=None if spec.default is MISSING else spec.default,
            metavar=meta["metavar"] or ("DURATION" if meta["parse"] is duration else None),
            help=f"{meta['help']} (default: {shown})",
        )


def from_flags(args: argparse.Namespace) -> Settings:
    """The settings the parsed flags name (a setting computed at start when its flag is unset)."""
    given = {spec.name: getattr(args, spec.name) for spec in fields(Settings)}
    return Settings(**{name: value for name, value in given.items() if value is not None})
