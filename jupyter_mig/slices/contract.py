"""What the hub side and the single-user server agree on: environment names and restart limits.

The hub's spawner hook writes these variables into each server's environment and the server
extension reads them; both import the names from here.  The labextension mirrors
:data:`MAX_RESTART_TIMEOUT` in ``labextension/src/slicerequest.ts`` (``MAX_TIMEOUT_S``).
"""

from __future__ import annotations

#: Seconds the hub waits for a restarted server before going back to the previous slice.
RESTART_TIMEOUT = 600.0
#: The longest a restart may be given (seconds), wherever a timeout is accepted.
MAX_RESTART_TIMEOUT = 3600.0

#: Every variable the hub sets starts with this (a restart clears them all first).
ENV_PREFIX = "JUPYTER_MIG_"
#: The controller's base URL.
CONTROLLER_URL_ENV = "JUPYTER_MIG_CONTROLLER_URL"
#: The hub's restart service as the server reaches it.
SERVICE_URL_ENV = "JUPYTER_MIG_SERVICE_URL"
#: The sizes this user may pick, comma-separated (empty: every size).
ALLOWED_SIZES_ENV = "JUPYTER_MIG_ALLOWED_SIZES"
#: This user's caps, comma-separated (any of them; empty: none).
MAX_SIZE_ENV = "JUPYTER_MIG_MAX_SIZE"
#: The slice the server was started with: the size asked for, its profile, resource and models.
SIZE_ENV = "JUPYTER_MIG_SIZE"
SLICE_ENV = "JUPYTER_MIG_SLICE"
RESOURCE_ENV = "JUPYTER_MIG_RESOURCE"
MODELS_ENV = "JUPYTER_MIG_MODELS"
#: The hub's settings, as JSON, for its restart service (a separate process).
HUB_SETTINGS_ENV = "JUPYTER_MIG_HUB_SETTINGS"
