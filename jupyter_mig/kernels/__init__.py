"""Per-kernel GPU slices: a kernel runs in its own pod with a MIG slice of its own size.

Shared by the notebook side (the provisioner, in the single-user server) and the hub side (the
hub service that creates the pods, since a user's server never gets the right to create pods):
the wire contract (:mod:`.contract`), the admin's pod template (:mod:`.template`), the
``jupyter_client`` provisioner (:mod:`.provisioner`), the kernel specs that use it
(:mod:`.specs`) and what the pod runs (:mod:`.launch`).
"""
