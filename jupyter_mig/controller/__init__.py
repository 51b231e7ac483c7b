"""The controller: batches pending MIG pods, plans layouts and writes them to MigNode specs.

Pure decision modules (:mod:`.selection`, :mod:`.batching`, :mod:`.snapshot`, :mod:`.planning`,
:mod:`.capacity`, :mod:`.events`, :mod:`.leader`) and a thin Kubernetes shell
(:mod:`.kube`, :mod:`.informer`, :mod:`.manager`, :mod:`.http`, :mod:`.cli`).
"""
