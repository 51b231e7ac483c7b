"""One HTTP status per reason a slice cannot be had (hub spawner, hub service, notebook API)."""

from __future__ import annotations

import pytest

from jupyter_mig.mig.sizes import SizeError
from jupyter_mig.slices.errors import CapacityError, SliceRefused, http_refusal


@pytest.mark.parametrize(
    ("err", "status"),
    [
        (SizeError("cannot read 'ten' as a GPU slice size"), 400),
        (SliceRefused("40gb is above your cap of 20gb"), 403),
        (CapacityError("the controller is unreachable", True), 503),
        (CapacityError("the controller answered 500", False), 502),
    ],
)
def test_each_reason_has_one_status_and_keeps_its_words(
    err: SizeError | SliceRefused | CapacityError, status: int
) -> None:
    code, message = http_refusal(err)
    assert code == status
    assert str(err) in message
