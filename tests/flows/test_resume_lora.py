"""A LoRA run through `grpo train` on 2 host devices, killed with -9 in step 1's update,
resumes to the adapters of an uninterrupted run; its checkpoints hold the adapters and
their optimizer state only, never a base weight (slow tier)."""
import signal

import jax
import orbax.checkpoint as ocp
import pytest

from test_cli_devices import assert_trained, grpo_train
from test_resume import write_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]
LORA = ["model.lora.rank=4", "model.lora.alpha=8", "model.lora.dropout=0.1"]


def saved_tree(checkpoint_dir):
    metadata = ocp.StandardCheckpointer().metadata(checkpoint_dir / "state")
    return getattr(metadata, "item_metadata", metadata).tree


def test_lora_run_killed_mid_update_resumes_to_the_same_adapters(tmp_path):
    config = str(write_config(tmp_path, steps=3))
    whole = assert_trained(grpo_train(tmp_path / "whole", 2, config, *LORA), tmp_path / "whole", 3)
    killed = grpo_train(tmp_path / "killed", 2, config, *LORA, fault="update:1:kill")
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:]
    resumed = assert_trained(grpo_train(tmp_path / "killed", 2, config, *LORA), tmp_path / "killed", 3)
    assert resumed["params_sha256"] == whole["params_sha256"]  # the adapters' sha256 (the base never changes)

    tree = saved_tree(tmp_path / "killed" / "checkpoints" / "3")
    assert set(tree["params"]) == {"layers"}
    assert set(tree["params"]["layers"]) == {"wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down"}
    leaves = jax.tree.leaves(tree["params"], is_leaf=lambda x: hasattr(x, "shape"))
    assert all(leaf.shape[-1] == 4 or leaf.shape[1] == 4 for leaf in leaves)  # every saved param has the rank axis
    names = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(
        tree, is_leaf=lambda x: hasattr(x, "shape"))}
    assert not any("embed" in n or "norm" in n or "lm_head" in n for n in names)
