"""Asynchronous checkpoints: what is reported while a save is in flight, donation after the
copy, errors of a background write, and the synchronous mode."""
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grpo_core.checkpoint import Checkpoints


def _state(value: float):
    params = {"w": jnp.full((64, 32), value, jnp.float32), "b": jnp.arange(32, dtype=jnp.float32) + value}
    return params, {"mu": jax.tree.map(jnp.zeros_like, params), "count": jnp.int32(value)}


def _host(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_latest_never_reports_the_save_in_flight(tmp_path):
    release = threading.Event()
    gate = lambda label: release.wait(timeout=120) if label == 2 else None  # noqa: E731
    checkpoints = Checkpoints(tmp_path, keep=2, before_commit=gate)
    try:
        checkpoints.save(1, *_state(1.0), {"next_step": 1})
        checkpoints.wait()
        saved = checkpoints.save(2, *_state(2.0), {"next_step": 2})
        assert saved.write_s is None  # the write is still in flight
        assert checkpoints.latest() == 1 and checkpoints.steps() == [1]
        assert Checkpoints(tmp_path, read_only=True).steps() == [1]  # nor on disk
        release.set()
        checkpoints.wait()
        assert checkpoints.latest() == 2 and saved.write_s >= saved.blocking_s - saved.wait_previous_s
        assert Checkpoints(tmp_path, read_only=True).steps() == [1, 2]
    finally:
        release.set()
        checkpoints.close()


def test_state_donated_right_after_save_is_saved_as_it_was(tmp_path):
    params, opt_state = _state(3.0)
    expected = _host(params) + _host(opt_state)
    checkpoints = Checkpoints(tmp_path)
    checkpoints.save(1, params, opt_state, {"next_step": 1})
    bump = jax.jit(lambda p, s: (jax.tree.map(lambda x: x + 1, p), s), donate_argnums=(0, 1))
    bump(params, opt_state)  # what the next train step does to the saved arrays
    checkpoints.close()
    reader = Checkpoints(tmp_path, read_only=True)
    like_params, like_opt = _state(0.0)
    restored, restored_opt, meta = reader.restore(1, like_params, like_opt)
    assert meta["next_step"] == 1
    for ours, theirs in zip(_host(restored) + _host(restored_opt), expected):
        np.testing.assert_array_equal(ours, theirs)


def test_a_failed_background_write_raises_at_wait_and_is_not_listed(tmp_path):
    def fail(label):
        raise OSError(f"disk gone while writing {label}")

    checkpoints = Checkpoints(tmp_path, before_commit=fail)
    checkpoints.save(1, *_state(1.0), {"next_step": 1})
    with pytest.raises(Exception, match="disk gone while writing 1"):
        checkpoints.wait()
    assert checkpoints.latest() is None
    checkpoints.close()
    assert Checkpoints(tmp_path, read_only=True).steps() == []


def test_synchronous_saves_are_committed_when_save_returns(tmp_path):
    checkpoints = Checkpoints(tmp_path, asynchronous=False)
    saved = checkpoints.save(1, *_state(1.0), {"next_step": 1})
    assert saved.write_s == saved.blocking_s and checkpoints.latest() == 1
    assert Checkpoints(tmp_path, read_only=True).steps() == [1]
    checkpoints.close()


def test_a_process_that_exits_with_a_save_in_flight_commits_it_first(tmp_path):
    import os
    import subprocess
    import sys

    script = ("import sys, jax.numpy as jnp\nfrom grpo_core.checkpoint import Checkpoints\n"
              "Checkpoints(sys.argv[1]).save(1, {'w': jnp.ones((256, 256))}, {'count': jnp.int32(1)}, {'next_step': 1})\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), *sys.path]))
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert Checkpoints(tmp_path, read_only=True).steps() == [1]


def _bytes_on_disk(path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@pytest.mark.parametrize("compress", [False, True])
def test_arrays_are_written_uncompressed_unless_asked_and_restore_either_way(tmp_path, compress):
    params = {"w": jnp.zeros((1024, 1024), jnp.float32), "b": jnp.arange(32, dtype=jnp.float32)}
    opt_state = {"mu": jax.tree.map(jnp.zeros_like, params), "count": jnp.int32(5)}
    writer = Checkpoints(tmp_path, compress=compress)
    writer.save(1, params, opt_state, {"next_step": 1})
    writer.wait()
    size = _bytes_on_disk(tmp_path / "1")
    raw = 2 * 4 * 1024 * 1024  # w and mu: 4 MiB of zeros each
    assert (size < raw / 8) if compress else (size >= raw), size
    for reader in (writer, Checkpoints(tmp_path, read_only=True)):
        restored, restored_opt, meta = reader.restore(1, params, opt_state)
        assert meta["next_step"] == 1
        for ours, theirs in zip(_host(restored) + _host(restored_opt), _host(params) + _host(opt_state)):
            np.testing.assert_array_equal(ours, theirs)
    for reader in (writer, Checkpoints(tmp_path, read_only=True)):  # restore_params: a fresh reader each
        only_params, meta = reader.restore_params(1, params)
        assert meta["next_step"] == 1
        np.testing.assert_array_equal(np.asarray(only_params["b"]), np.asarray(params["b"]))
    writer.close()
