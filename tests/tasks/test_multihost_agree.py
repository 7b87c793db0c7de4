"""What several processes agree on goes through the distributed runtime's key-value store
(tasks/multihost.py), not through a device program: a fake store plays the other process."""
import numpy as np
import pytest

from tasks import multihost


class FakeStore:
    """The coordination service's key-value calls; `peer(key)` gives the other process's bytes."""

    def __init__(self, peer):
        self.values, self.peer, self.deleted = {}, peer, []

    def key_value_set_bytes(self, key, value):
        assert key not in self.values, f"{key} written twice"
        self.values[key] = value

    def blocking_key_value_get_bytes(self, key, timeout_ms):
        assert timeout_ms > 3600 * 1000  # a slow peer (compiling, checkpointing) is waited for
        return self.values[key] if key.endswith("/0") else self.peer(key)

    def key_value_delete(self, key):
        self.deleted.append(key)
        del self.values[key]


@pytest.fixture
def two_processes(monkeypatch):
    from jax._src import distributed

    peer = {}
    store = FakeStore(lambda key: peer[key.rsplit("/", 3)[1]](key))
    monkeypatch.setattr(distributed.global_state, "client", store)
    monkeypatch.setattr(multihost.jax, "process_count", lambda: 2)
    monkeypatch.setattr(multihost.jax, "process_index", lambda: 0)
    monkeypatch.setattr(multihost, "_counts", {})
    return store, peer


def test_agreement_takes_every_process_into_account(two_processes):
    store, peer = two_processes
    peer["all"] = lambda key: np.array([0], np.int32).tobytes()
    peer["max"] = lambda key: np.array([7], np.int64).tobytes()
    assert multihost.all_processes(True) is False  # the other process lacks the cache hit
    assert multihost.global_max(3) == 7
    peer["stats"] = lambda key: np.array([3.0, 10.0], np.float64).tobytes()  # sorted names: a_max, b
    combined = multihost.combine_stats({"a_max": 1.0, "b": 2.0, "step": 4})
    assert combined == {"a_max": 3.0, "b": 6.0, "step": 4}


def test_each_kind_counts_its_exchanges_and_drops_its_previous_key(two_processes):
    store, peer = two_processes
    peer["max"] = lambda key: np.array([int(key.split("/")[-2])], np.int64).tobytes()  # the exchange's number
    assert [multihost.global_max(0) for _ in range(3)] == [1, 2, 3]
    assert set(store.values) == {"grpo-flows/agree/max/3/0"}
    assert store.deleted == ["grpo-flows/agree/max/1/0", "grpo-flows/agree/max/2/0"]


def test_one_process_exchanges_nothing(monkeypatch):
    from jax._src import distributed

    monkeypatch.setattr(distributed.global_state, "client", None)
    assert multihost.all_processes(False) is False and multihost.global_max(5) == 5
