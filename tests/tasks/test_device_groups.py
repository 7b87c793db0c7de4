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


def test_the_first_devices_sample_and_the_rest_train():
    sampler, trainer = split_devices(3, fake_devices(1, 8))
    assert [d.id for d in sampler] == [0, 1, 2] and [d.id for d in trainer] == [3, 4, 5, 6, 7]


@pytest.mark.parametrize("n,hosts,match", [(4, 1, "leaves none"), (9, 1, "leaves none"), (2, 2, "single-process")])
def test_a_split_without_trainer_devices_or_over_several_hosts_is_refused(n, hosts, match):
    with pytest.raises(UserError, match=f"mesh.sampler_devices={n} .*{match}"):
        split_devices(n, fake_devices(hosts, 4 // hosts))


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
