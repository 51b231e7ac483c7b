"""Command-line options of the parts that talk to Kubernetes (standard library only)."""

from __future__ import annotations

import argparse


def add_kubeconfig_argument(parser: argparse.ArgumentParser) -> None:
    """``--kubeconfig FILE``, read by :func:`jupyter_mig.kube.client.new_api_client`."""
    parser.add_argument(
        "--kubeconfig",
        help="kubeconfig file (default: in-cluster service account, else $KUBECONFIG or "
        "~/.kube/config)",
    )
