"""With libtpu installed but no TPU chips, grpo commands run on the CPU without libtpu's probe."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks import platforms

ROOT = Path(__file__).resolve().parents[2]


def _libtpu(monkeypatch, present: bool):
    real = importlib.util.find_spec
    monkeypatch.setattr(platforms.importlib.util, "find_spec",
                        lambda name, *a: (object() if present else None) if name == "libtpu" else real(name, *a))


def test_cpu_is_chosen_only_with_libtpu_and_no_chips(monkeypatch):
    _libtpu(monkeypatch, True)
    monkeypatch.setattr(platforms, "has_tpu_chips", lambda: False)
    env = {}
    assert platforms.prefer_cpu_without_tpu(env) and env == {"JAX_PLATFORMS": "cpu"}
    env = {"JAX_PLATFORMS": "tpu"}  # the user's choice stands
    assert not platforms.prefer_cpu_without_tpu(env) and env == {"JAX_PLATFORMS": "tpu"}
    monkeypatch.setattr(platforms, "has_tpu_chips", lambda: True)  # a TPU VM
    env = {}
    assert not platforms.prefer_cpu_without_tpu(env) and env == {}
    _libtpu(monkeypatch, False)
    monkeypatch.setattr(platforms, "has_tpu_chips", lambda: False)
    assert not platforms.prefer_cpu_without_tpu(env) and env == {}


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu is not installed")
def test_grpo_command_is_quiet_with_libtpu_installed():
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    # What every grpo command and deployed flow does (import the flows package), then jax's first use:
    script = "import flows.cli.main, jax; print(jax.devices()[0].platform)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip() == "cpu"
    assert "TPU_WORKER_HOSTNAMES" not in done.stderr and "libtpu" not in done.stderr, done.stderr
