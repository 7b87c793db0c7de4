"""Sharding: mesh construction, the rules table, and sharded == unsharded forward (8 CPU devices)."""
import jax
import numpy as np
import pytest

from grpo_core.errors import UserError
from grpo_core.models import PRESETS, Model
from grpo_core.models.decoder import init_params, param_logical_axes
from grpo_core.sharding import (
    LOGICAL_AXIS_RULES, batch_shards, batch_sharding, logical_to_spec, make_mesh, shard_params,
)
from jax.sharding import PartitionSpec as P


def test_make_mesh_default_and_shapes():
    assert dict(make_mesh().shape) == {"dp": 1, "fsdp": 8, "tp": 1}
    assert dict(make_mesh({"dp": 2, "tp": -1}).shape) == {"dp": 2, "fsdp": 1, "tp": 4}
    assert dict(make_mesh({"tp": 2}, devices=jax.devices()[:2]).shape) == {"dp": 1, "fsdp": 1, "tp": 2}
    for bad in ({"fsdp": 3}, {"dq": 8}, {"dp": -1, "tp": -1}):
        with pytest.raises(UserError):
            make_mesh(bad)


def test_logical_to_spec_follows_rules_and_divisibility():
    mesh = make_mesh({"dp": 2, "fsdp": 2, "tp": 2})
    assert logical_to_spec(("batch", "seq")) == P(("dp", "fsdp"), None)
    assert logical_to_spec(("layers", "embed", "q_heads", "head_dim")) == P(None, "fsdp", "tp", None)
    # 3 kv heads do not split over tp=2: replicated on that dimension instead of failing.
    assert logical_to_spec(("layers", "embed", "kv_heads", "head_dim"), (2, 64, 3, 8), mesh) == P(None, "fsdp", None, None)
    # batch 2 splits over dp only; a mesh axis is never used twice.
    assert logical_to_spec(("batch", "embed"), (2, 8), mesh) == P("dp", "fsdp")
    assert logical_to_spec(("embed", "embed"), (8, 8), mesh) == P("fsdp", None)
    assert set(LOGICAL_AXIS_RULES) >= {n for t in jax.tree.leaves(
        param_logical_axes(PRESETS["tiny-qwen2"]), is_leaf=lambda x: isinstance(x, tuple)) for n in t}
    assert batch_shards(mesh) == 4 and batch_shards(None) == 1


@pytest.mark.parametrize("shape", [None, {"dp": 2, "fsdp": 2, "tp": 2}])
def test_sharded_logits_equal_single_device(shape):
    cfg = PRESETS["tiny-qwen2"]
    mesh = make_mesh(shape)
    params = init_params(cfg, jax.random.key(0))
    sharded = shard_params(params, param_logical_axes(cfg), mesh)
    assert sharded["layers"]["wq"].sharding.mesh == mesh
    tokens = np.random.default_rng(0).integers(3, cfg.vocab_size, (8, 6))
    mask = np.arange(6)[None] >= np.arange(8)[:, None] % 5
    ref = Model(cfg, params).logits(tokens, mask)
    tokens_s = jax.device_put(tokens, batch_sharding(mesh))
    mask_s = jax.device_put(mask, batch_sharding(mesh))
    out = Model(cfg, sharded).logits(tokens_s, mask_s)
    assert out.sharding.spec[0] == (("dp", "fsdp") if shape else "fsdp")  # batch stayed sharded
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-5)
