"""Loopback ports, plain HTTP GETs and Prometheus samples."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """Status and body of a GET; an HTTP error's own status, ``(0, b"")`` when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return int(answer.status), bytes(answer.read())
    except urllib.error.HTTPError as err:
        return int(err.code), bytes(err.read())
    except OSError:
        return 0, b""


def http_text(url: str, timeout: float = 5.0) -> str | None:
    """The body of a 200 answer as text; None for an HTTP error or when nothing answers."""
    status, body = http_get(url, timeout)
    return body.decode() if status == 200 else None


def local_url(port: int, path: str) -> str:
    return f"http://127.0.0.1:{port}{path}"


def metric(port: int, name: str, labels: str = "") -> float | None:
    """One sample from the ``/metrics`` of 127.0.0.1:``port``, None when absent.

    ``labels`` as written in the exposition (e.g. ``result="ok"``) picks that sample; without
    it the first sample of ``name`` counts, labelled or not.
    """
    status, body = http_get(local_url(port, "/metrics"))
    if status != 200:
        return None
    prefixes = (f"{name}{{{labels}}} ",) if labels else (f"{name} ", f"{name}{{")
    for line in body.decode().splitlines():
        if line.startswith(prefixes):
            return float(line.rsplit(" ", 1)[1])
    return None
