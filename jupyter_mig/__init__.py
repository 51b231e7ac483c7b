"""jupyter-mig: GPU slices by size on Kubernetes, from notebooks and ordinary pods."""

__version__ = "0.1.0"
