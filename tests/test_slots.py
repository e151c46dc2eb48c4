"""Worker slots: each child gets the GPU its parent was given (Slurm, Kubernetes and users hand
a worker a CUDA_VISIBLE_DEVICES list such as `2,3` or GPU UUIDs; its children must land on
those, not on 0 and 1, which on a node without a device cgroup are another job's GPUs), and a
worker refuses more slots than the host runs. The device lists are made up: this machine has
no GPU."""
from __future__ import annotations

import pytest

from search.supervisor import MAX_SLOTS_PER_GPU, available_cpus, slots, visible_gpus

UUIDS = "GPU-8a1c0f3e-1b2c-4d5e-8f90-a1b2c3d4e5f6,GPU-0f9e8d7c-6b5a-4c3d-9e2f-1a0b9c8d7e6f"


def test_children_get_the_parents_gpus_not_the_first_ones():
    visible = visible_gpus("2,3", count=2)
    assert slots("all", 1, visible) == ["2", "3"]
    assert slots("all", 2, visible) == ["2", "2", "3", "3"]
    assert slots("1", 1, visible) == ["3"]  # --gpus numbers the GPUs as the worker sees them


def test_uuids_pass_through():
    first, second = UUIDS.split(",")
    assert slots("all", 1, visible_gpus(UUIDS, count=2)) == [first, second]
    assert slots("0", 2, visible_gpus(UUIDS, count=2)) == [first, first]


def test_the_device_list_is_cut_where_cuda_stops():
    assert visible_gpus("5, 7,", count=2) == ["5", "7"]
    assert visible_gpus("5,-1,7", count=1) == ["5"]  # CUDA ignores what follows an entry it cannot use
    assert visible_gpus("", count=0) == []
    assert visible_gpus(None, count=3) == ["0", "1", "2"]  # unset: every GPU of the host


def test_a_gpu_the_worker_was_not_given_is_refused():
    with pytest.raises(ValueError, match="no GPU 2 here"):
        slots("2", 1, visible_gpus("4,5", count=2))


def test_no_gpu_means_cpu_slots():
    assert slots("all", 2, []) == [None, None]


def test_slots_are_bounded_by_what_the_host_runs():
    cpus = available_cpus()
    assert slots("none", cpus) == [None] * cpus
    with pytest.raises(ValueError, match=f"at most {cpus}"):
        slots("none", cpus + 1)
    with pytest.raises(ValueError, match=f"at most {cpus}"):
        slots("all", 10000, [])  # no GPU: CPU slots, the same bound
    assert len(slots("all", MAX_SLOTS_PER_GPU, ["0", "1"])) == 2 * MAX_SLOTS_PER_GPU
    with pytest.raises(ValueError, match=f"at most {MAX_SLOTS_PER_GPU} processes per GPU"):
        slots("all", MAX_SLOTS_PER_GPU + 1, ["0"])
