"""The lab's cgroup subtree under concurrent labs: one lab's teardown removes the shared
``novanet-lab`` domain when it finds it empty, and that must never break another lab's creation
(two pytest workers bring labs up and down at once)."""

from __future__ import annotations

import os
import threading
import uuid

import pytest
from novanet_lab import cgroups

from novanet_core.bpf.cgroups import cgroup2_mount

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or cgroup2_mount() is None, reason="needs root and cgroup v2"
)


def test_creating_one_lab_while_another_is_removed_never_fails() -> None:
    tag = uuid.uuid4().hex[:6]
    errors: list[BaseException] = []

    def churn(lab: str) -> None:
        try:
            for _ in range(150):
                cgroups.create(lab, ["n1", "n2"])
                assert cgroups.node_dir(lab, "n2").is_dir()
                cgroups.remove(lab)
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    labs = [f"tcg{tag}{i}" for i in range(3)]
    threads = [threading.Thread(target=churn, args=(lab,)) for lab in labs]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for lab in labs:
            cgroups.remove(lab)
    assert not errors, errors[0]
    assert all(not cgroups.lab_dir(lab).exists() for lab in labs)
