"""tasks.host: the training process keeps freed memory (glibc mallopt), opt-out by env."""
import subprocess
import sys

import pytest

CHECK = "from tasks.host import keep_freed_memory; print(keep_freed_memory(), keep_freed_memory())"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_glibc_accepts_the_settings_once_per_process():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True"]


def test_opt_out_leaves_malloc_alone():
    env = {"GRPO_KEEP_FREED_MEMORY": "0", "PATH": ""}
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True, env=env).stdout
    assert out.split() == ["False", "False"]
