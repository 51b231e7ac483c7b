"""The kubelet pod-resources gRPC API v1: the .proto, its generated modules, a typed client
(:mod:`.client`) and a server that sim nodes run (:mod:`.server`).

Import the submodules directly; this package itself imports nothing heavy.
"""
