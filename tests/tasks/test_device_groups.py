"""The sampler/trainer device split and the sampler group's own dispatch thread."""
import threading
from types import SimpleNamespace

import pytest

from grpo_core.errors import UserError
from tasks.device_groups import check_cpu_concurrency, split_devices
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


@pytest.mark.parametrize("n,hosts,match", [(4, 1, "leaves none"), (9, 1, "leaves none"),
                                           (3, 2, "not a multiple of the 2 processes")])
def test_a_split_without_trainer_devices_or_with_unequal_hosts_is_refused(n, hosts, match):
    with pytest.raises(UserError, match=f"mesh.sampler_devices={n} .*{match}"):
        split_devices(n, fake_devices(hosts, 4 // hosts))


def test_on_several_hosts_each_host_gives_the_same_share_of_its_own_devices():
    sampler, trainer = split_devices(4, fake_devices(2, 4))
    assert [(d.process_index, d.id) for d in sampler] == [(0, 0), (0, 1), (1, 4), (1, 5)]
    assert [(d.process_index, d.id) for d in trainer] == [(0, 2), (0, 3), (1, 6), (1, 7)]


def test_cpu_processes_with_more_devices_than_cores_are_refused():
    devices = [SimpleNamespace(id=i, process_index=i // 4, platform="cpu") for i in range(8)]
    sampler, trainer = split_devices(4, devices)
    with pytest.raises(UserError, match="4 devices are more than its 2 cores"):
        check_cpu_concurrency(sampler, trainer, cores=2)
    check_cpu_concurrency(sampler, trainer, cores=4)  # one worker per device
    one_host = [SimpleNamespace(id=i, process_index=0, platform="cpu") for i in range(8)]
    check_cpu_concurrency(*split_devices(4, one_host), cores=2)  # one process: in-process collectives


def test_a_tpu_slice_of_several_hosts_splits_into_two_slabs_of_its_torus():
    from tasks.device_groups import grid_chips

    v6e_16 = grid_chips((4, 4), (2, 2, 1))  # 4 hosts of 2x2 chips
    sampler, trainer = split_devices(8, v6e_16)
    assert {c.coords[0] for c in sampler} == {1, 2} and {c.coords[0] for c in trainer} == {3, 0}
    assert [c.process_index for c in sampler] == [0, 0, 1, 1, 2, 2, 3, 3]  # host by host
    with pytest.raises(UserError, match="mesh.sampler_devices=4: no slab .* holds 1 chips of every host"):
        split_devices(4, v6e_16)  # one chip per host: the groups cannot both be blocks
    sampler, _ = split_devices(16, grid_chips((4, 8), (2, 2, 1)))  # v6e-32: 8 hosts
    assert {c.coords[0] for c in sampler} == {1, 2}
    with pytest.raises(UserError, match="no slab"):
        split_devices(32, grid_chips((8, 8), (2, 2, 1)))  # 4 hosts along each axis: no slab holds 2 of each


def test_a_trainer_tp_group_never_spans_hosts_in_a_split():
    from tasks.device_groups import run_meshes

    chips = [SimpleNamespace(id=i, process_index=i // 4, platform="tpu") for i in range(8)]
    sampler, trainer = split_devices(4, chips)  # 2 of each host's 4 chips train
    shape = SimpleNamespace(model_dump=lambda: {"dp": 1, "fsdp": 1, "tp": 4})
    cfg = SimpleNamespace(mesh=SimpleNamespace(shape=shape, sampler_devices=4))
    with pytest.raises(UserError, match="mesh.shape tp=4 does not divide the 2 trainer devices of each host"):
        run_meshes(cfg, 2, sampler, trainer)


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
