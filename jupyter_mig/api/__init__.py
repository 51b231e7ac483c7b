"""Cluster-side definitions shared by the controller, the agent and the simulated nodes.

The ``MigNode`` custom resource (:mod:`jupyter_mig.api.crd`), the names everyone agrees on
(:mod:`jupyter_mig.api.constants`), typed parsing and rendering of its spec and status
(:mod:`jupyter_mig.api.mignode`) and condition bookkeeping (:mod:`jupyter_mig.api.conditions`).
Everything here is pure except :func:`jupyter_mig.api.cluster.require_crds`, which imports the
Kubernetes client inside the function.
"""
