"""Why a slice cannot be had, and the one HTTP status each reason gets.

The hub's spawner hook, the hub's restart service and the notebook server's API all answer a
refused or failed slice request with :func:`http_refusal`, so the same reason is the same
status everywhere.
"""

from __future__ import annotations

from jupyter_mig.mig.sizes import SizeError


class CapacityError(Exception):
    """The controller's capacity API is unreachable or answered something unusable."""

    def __init__(self, message: str, unreachable: bool) -> None:
        super().__init__(message)
        self.unreachable = unreachable


class SliceRefused(ValueError):
    """A valid size that the configured allow-list or maximum does not permit."""


#: Every reason a slice request fails: catch these, answer with :func:`http_refusal`.
SLICE_ERRORS = (SizeError, SliceRefused, CapacityError)


def http_refusal(err: SizeError | SliceRefused | CapacityError) -> tuple[int, str]:
    """(status, message): 400 for a size that cannot be read or exists nowhere here, 403 for one
    the policy does not permit, 503 when the controller is unreachable, 502 when it answered
    something unusable."""
    if isinstance(err, CapacityError):
        return (503 if err.unreachable else 502), f"cannot check GPU capacity: {err}"
    return (403 if isinstance(err, SliceRefused) else 400), str(err)
