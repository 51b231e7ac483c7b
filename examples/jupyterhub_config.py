"""JupyterHub with KubeSpawner and GPU slices from jupyter-mig.

Users pick a slice size in the spawn form (with what the cluster can give now), and change it
later from a notebook (``%gpu_slice 10gb``, the widget or the JupyterLab panel): the hub-side
``jupyter-mig`` service restarts their server with the new slice.  See docs/hub.md.

With the zero-to-jupyterhub Helm chart, put the part below the imports into
``hub.extraConfig`` (the chart already sets ``c.JupyterHub.spawner_class``).
"""

# ruff: noqa: F821  (``c`` is the config object JupyterHub provides)

from jupyter_mig.hub import configure_hub

c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"

# Every setting is a trait of SliceSettings (`jupyterhub --help-all` lists them with defaults).
# The controller's Service (Helm release "jupyter-mig" in namespace "jupyter-mig").
c.SliceSettings.controller_url = "http://jupyter-mig-controller.jupyter-mig.svc:8080"
# The sizes users may pick; leave it out to offer every size the cluster's GPUs have.
c.SliceSettings.sizes = ["10gb", "20gb", "40gb"]
# Everyone may take up to 20gb; members of the "gpu-power" group up to 40gb.
c.SliceSettings.max_size = "20gb"
c.SliceSettings.max_size_by_group = {"gpu-power": "40gb"}
# Where the hub and its proxy reach the restart service (it runs in the hub pod) ...
c.SliceSettings.service_url = "http://hub:10101"
# ... and where single-user servers reach it (through the proxy's public Service).
c.SliceSettings.server_service_url = "http://proxy-public/services/jupyter-mig/"
# At most 40 GB of slices per user across all their servers (docs/security.md lists this and
# the other limits: slice changes per hour, restarts in flight, the restart timeout).
c.SliceSettings.max_total_size = "40gb"

configure_hub(
    c,
    # The admin's own profiles: each one gets the "GPU slice" option.
    profiles=[
        {
            "display_name": "Data science (4 CPUs, 16 GiB)",
            "slug": "datascience",
            "default": True,
            "kubespawner_override": {"cpu_limit": 4, "mem_limit": "16G"},
        },
        {
            "display_name": "Big (16 CPUs, 64 GiB)",
            "slug": "big",
            "kubespawner_override": {"cpu_limit": 16, "mem_limit": "64G"},
        },
    ],
    # The service listens on all interfaces of the hub pod (the proxy pod connects to it).
    listen="0.0.0.0:10101",
)
