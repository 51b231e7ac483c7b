"""Simulated GPU nodes for a real local cluster (``jupyter-mig sim-node``).

A sim node plays the three parts a MIG node has beside the agent: the GPUs (simulated NVML,
:mod:`jupyter_mig.nvml.sim`), the NVIDIA device plugin (:mod:`.devices`) and the kubelet
(:mod:`.node`, :mod:`.pods`, :mod:`.processes`, and the pod-resources API).  See docs/simnode.md.
"""
