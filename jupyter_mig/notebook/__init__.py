"""The notebook side: the Jupyter server extension, the ``%gpu_slice`` magic and the widget.

The server extension (``extension``, ``handlers``) runs in the single-user server; the magic and
the widget run in kernels and talk to it over its REST API (``client``).  See docs/notebook.md.
"""
