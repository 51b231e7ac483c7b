"""The kubelet device-plugin API v1beta1: the .proto, its generated modules, the kubelet's side
(:mod:`.kubelet`) and NVIDIA's device plugin run for a simulated node (:mod:`.nvidia`).

Import the submodules directly; this package itself imports nothing heavy.
"""
