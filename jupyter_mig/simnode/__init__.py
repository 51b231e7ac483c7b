"""Simulated GPU nodes for a real local cluster (``jupyter-mig sim-node``).

A sim node plays the three parts a MIG node has beside the agent: the GPUs (our own
``libnvidia-ml.so.1``, :mod:`jupyter_mig.nvml.simgpu`), the NVIDIA device plugin
(:mod:`.devices`) and the kubelet
(:mod:`.node`, :mod:`.pods`, :mod:`.processes`, and the pod-resources API).  See docs/simnode.md.
"""
