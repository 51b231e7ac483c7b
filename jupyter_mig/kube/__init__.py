"""The one way the project talks to Kubernetes: controller, agent and sim node use it alike.

- :mod:`.client`: credentials (``new_api_client``), requests and watches on plain dicts
  (``Kube``), one timeout convention, one error type (``KubeError``; ``Gone`` for 410).
- :mod:`.watch`: ``ListWatch``, list then watch with resourceVersion resume and 410 handling.
- :mod:`.events`: core/v1 Events, one body builder.
- :mod:`.options`: the ``--kubeconfig`` flag (standard library only, so ``--help`` works
  without the ``kubernetes`` package).

It imports nothing of the project but :mod:`jupyter_mig.errors`.  This file imports nothing, so
importing :mod:`.options` does not load the Kubernetes client.
"""
