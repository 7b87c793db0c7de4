"""The sampler/trainer device split and the sampler group's own dispatch thread."""
import threading
from types import SimpleNamespace

import pytest

from grpo_core.errors import UserError
from tasks.device_groups import split_devices
from tasks.dispatch import GroupThread, WrongDispatchThread


def fake_devices(hosts: int, per_host: int):
    return [SimpleNamespace(id=h * per_host + i, process_index=h) for h in range(hosts) for i in range(per_host)]


def test_no_split_gives_every_device_to_both_groups():
    devices = fake_devices(1, 4)
    sampler, trainer = split_devices(0, devices)
    assert sampler is trainer and sampler == devices


def test_each_host_gives_its_first_devices_to_the_sampler():
    sampler, trainer = split_devices(4, fake_devices(2, 4))
    assert [d.id for d in sampler] == [0, 1, 4, 5] and [d.id for d in trainer] == [2, 3, 6, 7]


@pytest.mark.parametrize("n", [3, 8, 10])
def test_a_split_that_is_uneven_over_hosts_or_leaves_no_trainer_is_refused(n):
    with pytest.raises(UserError, match="mesh.sampler_devices"):
        split_devices(n, fake_devices(2, 4))


def test_the_group_thread_owns_its_programs_and_runs_calls_in_order():
    group = GroupThread("test-sampler")
    try:
        seen = []
        for i in range(5):
            group.submit(seen.append, i)
        assert group.run(lambda: threading.current_thread().name).startswith("test-sampler")
        assert seen == list(range(5))
        group.run(group.owner.check, "rollout")  # its own thread passes
        with pytest.raises(WrongDispatchThread, match="test-sampler"):
            group.owner.check("rollout")  # this thread does not own the group
    finally:
        group.close()
