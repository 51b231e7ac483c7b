"""Helpers shared by the tests: ports and HTTP (``net``), processes (``processes``), waiting
(``waiting``), the MigNode CRD (``kube``) and the JupyterHub test configuration (``hub``).

``tests/`` is on ``sys.path`` (pytest puts the directory of ``tests/conftest.py`` there), so a
test imports ``from support.net import free_port``.
"""
