"""The memory estimate with LoRA: adapter bytes checked against real sharded adapters, no
reference copy, adapter-sized gradients and optimizer state; and the preflight's base dtype."""
import dataclasses

import jax
import optax

from grpo_core import lora
from grpo_core.memory import adapter_bytes_per_device, estimate_memory, update_components
from grpo_core.models.config import PRESETS
from grpo_core.sharding import make_mesh
from test_memory import workload

TARGETS = tuple(lora.TARGETS)


def test_adapter_bytes_match_real_sharded_adapters():
    mesh = make_mesh({"fsdp": 2, "tp": 2}, devices=jax.devices()[:4])
    spec = lora.LoraSpec(rank=8, alpha=16.0)
    adapters = lora.init_sharded_adapters(PRESETS["tiny-llama"], spec, 0, mesh)
    real = sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(adapters))
    w = workload(mesh=(("dp", 1), ("fsdp", 2), ("tp", 2)), lora_rank=8, lora_targets=TARGETS)
    assert adapter_bytes_per_device(w) == real
    opt = jax.eval_shape(optax.adamw(1e-3).init, adapters)
    assert sum(x.size * 4 for x in jax.tree.leaves(opt) if x.ndim) == 2 * sum(x.size * 4 for x in jax.tree.leaves(adapters))


def test_lora_update_holds_adapter_sized_state_and_no_reference_copy():
    qwen = PRESETS["qwen2.5-7b"]
    full = workload(model=qwen, param_bytes=2, optimizer="adamw", reference=True, tpu=True,
                    mesh=(("dp", 1), ("fsdp", 8), ("tp", 1)))
    with_lora = dataclasses.replace(full, lora_rank=16, lora_targets=TARGETS)
    f, l_ = update_components(full), update_components(with_lora)
    assert "reference params" in f and "reference params" not in l_  # the base is the reference
    assert l_["params"] == f["params"]  # the base is held as before
    assert l_["optimizer state"] * 10 < f["optimizer state"]  # bf16 moments of 7.6B vs float32 ones of 40M
    assert l_["gradients"] * 20 < f["gradients"] and "head gradient" not in l_
    assert estimate_memory(with_lora).total("update") < estimate_memory(full).total("update")
    merged = estimate_memory(with_lora).phases["decode"]["merged weights"]
    assert 0 < merged < f["params"]  # the merged target weights, not the embedding


def test_preflight_holds_a_lora_base_in_bfloat16_on_accelerators_only():
    from flows.preflight import base_dtype
    from train_helpers import tiny_config

    cfg = tiny_config("model.lora.rank=4")
    assert (base_dtype(cfg.model, "tpu"), base_dtype(cfg.model, "gpu"), base_dtype(cfg.model, "cpu")) == \
        ("bfloat16", "bfloat16", "float32")
    assert base_dtype(tiny_config("model.lora.rank=4", "model.lora.base_dtype=float32").model, "tpu") == "float32"
    assert base_dtype(tiny_config().model, "tpu") == "float32"  # full fine-tuning: model.dtype
