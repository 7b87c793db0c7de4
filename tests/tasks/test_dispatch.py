"""One dispatch thread per run (tasks/dispatch.py): a session's device programs come from
the thread that owns it, and a helper hands it over only with its work finished."""
import threading

import jax.numpy as jnp
import pytest

from tasks.dispatch import DispatchOwner, WrongDispatchThread
from tasks.session import TrainSession
from train_helpers import tiny_config


def _in_thread(fn, name: str):
    """fn() in a thread called `name`; returns what it raised (or None)."""
    raised = []

    def run():
        try:
            fn()
        except BaseException as err:  # handed back to the test
            raised.append(err)
    thread = threading.Thread(target=run, name=name)
    thread.start()
    thread.join()
    return raised[0] if raised else None


def test_a_session_refuses_programs_from_another_thread_and_names_it(tmp_path):
    session = TrainSession.open(tiny_config("train.steps=2"), tmp_path / "run")
    try:
        for what, call in [("rollout", lambda: session.rollout(0)),
                           ("checkpoint", lambda: session.save_checkpoint(0))]:
            err = _in_thread(call, "stray-helper")
            assert isinstance(err, WrongDispatchThread), what
            assert f"{what}: " in str(err) and "'stray-helper'" in str(err) and "'MainThread'" in str(err)
        assert session.checkpoints.latest() is None  # the refused save wrote nothing
        session.rollout(0)  # the owner still dispatches
    finally:
        session.close()


def test_hand_over_moves_ownership_only_with_the_work_done():
    made = {}
    owner = _in_thread(lambda: made.update(owner=DispatchOwner(), x=jnp.ones(4) * 2), "opener") or made["owner"]
    with pytest.raises(WrongDispatchThread, match="'opener'"):
        owner.check("update")
    made["x"].block_until_ready()
    owner.hand_over(made["x"])
    owner.check("update")  # the caller owns it now
    assert isinstance(_in_thread(lambda: owner.check("update"), "opener"), WrongDispatchThread)
