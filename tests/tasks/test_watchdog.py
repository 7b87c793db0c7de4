"""The phase watchdog (tasks/watchdog.py): a fake clock for the rules, real processes for the
exit (blocked in a sleep, and inside a jitted program that never finishes)."""
import os
import subprocess
import sys
import textwrap
import time

from tasks.watchdog import EXIT_CODE, PhaseWatchdog, hang_sentence, phase, watching
from tpu.errors import classify_job


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def fake_watchdog(tmp_path, timeout_s=10.0):
    clock, exits = FakeClock(), []
    return PhaseWatchdog(timeout_s, tmp_path, clock=clock, exit=exits.append), clock, exits


def test_a_phase_past_the_timeout_writes_one_sentence_and_exits(tmp_path, caplog):
    dog, clock, exits = fake_watchdog(tmp_path)
    assert not dog.check()  # no phase running: nothing to time
    with dog.phase(3, "rollout"):
        clock.now += 9.9
        assert not dog.check() and exits == []
        clock.now += 0.1
        assert dog.check()
    assert exits == [EXIT_CODE]
    sentence = hang_sentence(3, "rollout", 10.0)
    assert (tmp_path / "hang.txt").read_text() == sentence + "\n"
    assert [r.getMessage() for r in caplog.records if r.name == "grpo_flows.watchdog"] == [sentence]
    assert "step 3" in sentence and "rollout phase" in sentence and "logging.phase_timeout_s" in sentence


def test_time_between_phases_and_before_a_nested_phase_ends_counts_as_progress(tmp_path):
    dog, clock, exits = fake_watchdog(tmp_path)
    with dog.phase(0, "update"):
        clock.now += 8
        with dog.phase(0, "checkpoint"):  # the update's save: watched on its own
            clock.now += 8
            assert not dog.check()
        clock.now += 8  # the update's clock restarted when the save returned
        assert not dog.check()
    clock.now += 1000  # between phases (Prefect bookkeeping, a cache hit): not watched
    assert not dog.check() and exits == []
    with dog.phase(1, "reward"):
        clock.now += 10
        assert dog.check()
    assert "step 1 hung in its reward phase" in (tmp_path / "hang.txt").read_text()


def test_phases_of_two_threads_are_watched_each_on_its_own(tmp_path):
    """A split run's rollout sampled ahead runs in a worker thread beside the update: each
    thread's phase has its own clock, and one ending leaves the other watched."""
    import threading

    dog, clock, exits = fake_watchdog(tmp_path)
    entered, leave = threading.Event(), threading.Event()

    def rollout_ahead():
        with dog.phase(2, "rollout"):
            entered.set()
            leave.wait()

    worker = threading.Thread(target=rollout_ahead)
    worker.start()
    entered.wait()
    with dog.phase(1, "update"):
        clock.now += 8
        leave.set()
        worker.join()  # the rollout ended: no phase of the worker remains
        clock.now += 1.9
        assert not dog.check()
        clock.now += 0.1
        assert dog.check()
    assert exits == [EXIT_CODE] and "step 1 hung in its update phase" in (tmp_path / "hang.txt").read_text()


def test_no_watchdog_when_the_timeout_is_0_or_null(tmp_path):
    for off in (0, None):
        with watching(off, tmp_path) as dog, phase(0, "rollout"):
            assert dog is None


def test_the_smoke_monitor_classifies_the_sentence_as_a_hang():
    line = f"12:00:00.000 | ERROR   | grpo_flows.watchdog - {hang_sentence(7, 'update', 1800)}"
    outcome = classify_job({"exit_code": EXIT_CODE, "last_step": 6, "traceback": "", "tail": f"step=6\n{line}"}, 9)
    assert outcome.reason == "hang" and "step 7 hung in its update phase" in outcome.message
    assert outcome.excerpt.startswith("step 7 hung")


SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from tasks.watchdog import phase, watching

    with watching(float(sys.argv[2]), Path(sys.argv[1])):
        with phase(1, "rollout"):
            time.sleep(0.1)
        with phase(2, "update"):
            assert "jax" not in sys.modules  # the watchdog touches no device
            while True:  # as a thread blocked in a device wait
                time.sleep(1)
""")


def test_the_watchdog_thread_ends_a_process_blocked_in_a_phase(tmp_path):
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), "0.5"], capture_output=True, text=True,
                          timeout=60)
    seconds = time.monotonic() - started
    assert done.returncode == EXIT_CODE, done.stderr
    assert done.stderr.strip() == hang_sentence(2, "update", 0.5) and "Traceback" not in done.stderr
    assert (tmp_path / "hang.txt").read_text().strip() == hang_sentence(2, "update", 0.5)
    assert seconds < 15, seconds  # interpreter start + 0.5 s + a poll


DEVICE_HANG = textwrap.dedent("""
    import sys
    from pathlib import Path
    import jax, jax.numpy as jnp
    from tasks.watchdog import phase, watching

    def forever(x):  # a device program that never finishes: its loop condition stays true
        step = lambda c: (jnp.maximum(c[0] + 1, 0), c[1] @ c[1] * 0.5)
        return jax.lax.while_loop(lambda c: c[0] >= 0, step, (x, jnp.ones((64, 64))))

    compiled = jax.jit(forever).lower(jnp.int32(0)).compile()
    with watching(float(sys.argv[2]), Path(sys.argv[1])), phase(0, "update"):
        jax.block_until_ready(compiled(jnp.int32(0)))
""")


def test_the_watchdog_ends_a_process_blocked_inside_a_device_program(tmp_path):
    done = subprocess.run([sys.executable, "-c", DEVICE_HANG, str(tmp_path), "1"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""})
    assert done.returncode == EXIT_CODE, done.stderr[-2000:]
    assert hang_sentence(0, "update", 1.0) in done.stderr and "Traceback" not in done.stderr
