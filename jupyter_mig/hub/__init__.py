"""JupyterHub/KubeSpawner integration: GPU slices in the spawn form and on restart.

In ``jupyterhub_config.py``::

    from jupyter_mig.hub import SliceSettings, configure_hub
    configure_hub(c, SliceSettings(controller_url="http://jupyter-mig-controller.jupyter-mig:8080"))

See docs/hub.md.
"""

from jupyter_mig.hub.config import configure_hub
from jupyter_mig.hub.settings import SliceSettings
from jupyter_mig.hub.spawner import SliceOptions, SliceProfiles, apply_slice

__all__ = ["SliceOptions", "SliceProfiles", "SliceSettings", "apply_slice", "configure_hub"]
