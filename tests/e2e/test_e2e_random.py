"""A random sequence of pod creations and deletions of mixed sizes, end to end.

After every step the test waits until the system has settled — every node applied its spec and
reports exactly the devices pods hold, and the planner, run here on what the agents report,
could place none of the pods still pending — and then checks the hard rule: every MIG device a
pod held before the step and still holds (the pod exists) is the same device, still present in
NVML, still reported as held by that pod.  The monitor checks the same continuously, plus valid
layouts and no failed pod.

The sequence is reproducible: ``JUPYTER_MIG_E2E_SEED`` picks it (the seed is in the failure
message), ``JUPYTER_MIG_E2E_STEPS`` sets its length.
"""

from __future__ import annotations

import os
import random

import pytest
from e2e_harness import System, layout_problems

pytestmark = pytest.mark.cluster

SEED = int(os.environ.get("JUPYTER_MIG_E2E_SEED", "4242"))
STEPS = int(os.environ.get("JUPYTER_MIG_E2E_STEPS", "12"))
#: A100-80GB profiles, weighted towards the small ones users ask for most.
SIZES = (
    "1g.10gb",
    "1g.10gb",
    "1g.10gb",
    "1g.20gb",
    "2g.20gb",
    "2g.20gb",
    "3g.40gb",
    "4g.40gb",
    "7g.80gb",
)


def test_random_creates_and_deletes_never_destroy_a_slice_in_use(system: System) -> None:
    rng = random.Random(SEED)
    where = f"(seed {SEED}; rerun with JUPYTER_MIG_E2E_SEED={SEED})"
    system.add_node("a", "A100-80GB", gpus=2)
    system.add_node("b", "A100-80GB")
    system.start_controller("controller-0")
    live: list[str] = []
    created = 0
    held_before: dict[str, tuple[str, str]] = {}
    for step in range(STEPS):
        if len(live) < 3 or rng.random() < 0.6:
            for _ in range(rng.randint(1, 3)):
                name = f"p{created}-{rng.choice(SIZES).replace('.', '-')}"
                profile = name.split("-", 1)[1].replace("-", ".")
                system.create_pod(name, profile, interactive=rng.random() < 0.5)
                live.append(name)
                created += 1
            action = f"created up to {live[-1]}"
        else:
            gone = rng.sample(sorted(live), rng.randint(1, min(2, len(live))))
            for name in gone:
                system.delete_pod(name)
                live.remove(name)
            action = f"deleted {gone}"
        system.note(f"step {step}: {action}")
        system.wait(f"the system to settle after step {step} ({action}) {where}", system.settled)

        # The hard rule, step by step: a slice held before and still held is untouched.
        held_now = system.held_devices()
        reported = system.reported_holders()
        for device, (node, pod) in held_before.items():
            if pod.split("/")[1] not in live:
                continue
            assert held_now.get(device) == (node, pod), (
                f"{device} of {pod} lost at step {step} {where}"
            )
            assert reported.get(device) == pod, (
                f"{device} of {pod} not reported at step {step} {where}"
            )
            assert device in system.nodes[node].nvml_devices(), f"{device} destroyed {where}"
        for obj in system.mignodes():
            assert layout_problems(obj) == [], where
        held_before = held_now

    # Everything that runs holds exactly its own slices; all pods are accounted for.
    pods = {p["metadata"]["name"]: p for p in system.pods()}
    assert sorted(pods) == sorted(live), where
    running = [n for n, p in pods.items() if p["status"].get("phase") == "Running"]
    assert running, f"nothing ever ran {where}"
    holders = {pod.split("/")[1] for _node, pod in system.held_devices().values()}
    assert holders == set(running), where
