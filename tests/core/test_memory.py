"""grpo_core.memory: byte counts checked against real arrays, monotonicity, and (slow) RSS."""
import dataclasses
import importlib.util
from pathlib import Path

import jax
import optax
import pytest

from grpo_core.errors import UserError
from grpo_core.memory import (
    ACCELERATORS, GIB, Workload, decode_components, estimate_memory, get_accelerator,
    param_bytes_per_device, prefill_components, update_components,
)
from grpo_core.models.config import PRESETS
from grpo_core.models.decoder import init_kv_cache, init_params, param_logical_axes
from grpo_core.sharding import make_mesh, shard_params

TINY = PRESETS["tiny-llama"]
ROOT = Path(__file__).resolve().parents[2]


def workload(**changes) -> Workload:
    base = Workload(model=TINY, param_bytes=4, prompts=8, group_size=4, max_prompt_tokens=64, new_tokens=64,
                    micro_batch=8, remat=False, optimizer="lion")
    return dataclasses.replace(base, **changes)


def test_accelerator_table():
    v6e8, v6e16 = get_accelerator("v6e-8"), get_accelerator("V6E-16")
    assert (v6e8.chips, v6e8.hosts, v6e8.hbm_gib) == (8, 1, 32)
    assert (v6e16.chips, v6e16.hosts) == (16, 4)
    assert v6e8.capacity_bytes == int(31.25 * GIB)  # what jax reports as bytes_limit on v6e
    assert get_accelerator("v5litepod-16").hbm_gib == 16 and get_accelerator("v4-8").chips == 4
    assert get_accelerator("h100").capacity_bytes == int(0.75 * 79.6 * GIB)
    assert all(a.chips % a.hosts == 0 for a in ACCELERATORS.values())
    with pytest.raises(UserError, match="v6e-8"):
        get_accelerator("v9-8")


def test_param_bytes_match_real_arrays_sharded_8_ways():
    params = init_params(TINY, jax.random.key(0))
    full = sum(x.nbytes for x in jax.tree.leaves(params))
    assert param_bytes_per_device(workload(), 4) == full == TINY.num_params * 4
    mesh = make_mesh(None)
    sharded = shard_params(params, param_logical_axes(TINY), mesh)
    on_device0 = sum(s.data.nbytes for x in jax.tree.leaves(sharded) for s in x.addressable_shards
                     if s.device == mesh.devices.flat[0])
    w = workload(mesh=(("dp", 1), ("fsdp", 8), ("tp", 1)))
    assert param_bytes_per_device(w, 4) == on_device0 < full / 4


@pytest.mark.parametrize("name,moments", [("lion", 1), ("adamw", 2), ("sgd", 0)])
def test_optimizer_state_matches_optax(name, moments):
    params = init_params(TINY, jax.random.key(0))
    opt = {"lion": optax.lion(1e-3), "adamw": optax.adamw(1e-3), "sgd": optax.sgd(1e-3)}[name]
    state = jax.eval_shape(opt.init, params)
    real = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state) if x.size > 1)
    assert update_components(workload(optimizer=name))["optimizer state"] == real == moments * TINY.num_params * 4
    momentum = jax.eval_shape(optax.sgd(1e-3, momentum=0.9).init, params)
    real = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(momentum) if x.size > 1)
    assert update_components(workload(optimizer="sgd", momentum=True))["optimizer state"] == real


def test_kv_cache_matches_sampler_cache_shapes():
    w = workload(prompts=5, group_size=3)  # sampler pads 5 prompts to 8
    cache = jax.eval_shape(lambda: init_kv_cache(TINY, 8 * 3, 64 + 64, jax.numpy.float32))
    assert decode_components(w)["kv cache"] == cache.k.size * 4 * 2
    prompt = jax.eval_shape(lambda: init_kv_cache(TINY, 8, 64, jax.numpy.float32))
    assert prefill_components(w)["prompt cache"] == prompt.k.size * 4 * 2


def test_knobs_move_the_right_components():
    base = estimate_memory(workload())
    remat = estimate_memory(workload(remat=True))
    assert remat.phases["update"]["activations"] < 0.6 * base.phases["update"]["activations"]  # 2 layers
    half = estimate_memory(workload(micro_batch=4))
    assert half.phases["update"]["logits"] * 2 == base.phases["update"]["logits"]
    assert "reference params" in estimate_memory(workload(reference=True)).phases["update"]
    bigger = estimate_memory(workload(prompts=64))
    assert bigger.phases["decode"]["kv cache"] == 8 * base.phases["decode"]["kv cache"]
    assert base.total("update") == int(sum(base.phases["update"].values()) * 1.1)
    with pytest.raises(UserError, match="optimizer"):
        estimate_memory(workload(optimizer="adafactor"))


def _memory_check_module():
    spec = importlib.util.spec_from_file_location("memory_check", ROOT / "benchmarks" / "memory_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_estimate_within_30_percent_of_measured_rss_on_cpu():
    rows = _memory_check_module().compare()
    assert len(rows) == 6
    for row in rows:
        assert 0.7 <= row["ratio"] <= 1.3, row


def test_generation_layouts_in_the_rollout_estimate():
    from grpo_core.layout_choice import choose_weights_layout, with_weights_layout

    m = dataclasses.replace(PRESETS["tiny-qwen2"], vocab_size=264, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                            head_dim=16)
    fsdp8 = workload(model=m, mesh=(("dp", 1), ("fsdp", 8), ("tp", 1)))
    same = with_weights_layout(fsdp8, "fsdp", 8)
    assert same.weights_layout == "fsdp" and estimate_memory(same) == estimate_memory(fsdp8)  # unchanged
    replicated = with_weights_layout(fsdp8, "replicated", 8)
    tp = with_weights_layout(fsdp8, "tp", 8)
    assert (replicated.weights_layout, tp.weights_layout) == ("replicated", "tp")
    for phase in (prefill_components, decode_components):
        base, rep, split = phase(fsdp8), phase(replicated), phase(tp)
        # The whole model beside the resident (still fsdp-split) training state, no gathers.
        assert rep["generation weights"] == m.num_params * 4 and rep["gathered weights"] == 0
        assert rep["params"] == base["params"] and rep["optimizer state"] == base["optimizer state"]
        assert rep["kv cache"] == base["kv cache"]  # the batch is split 8 ways on both meshes
        # tp=2: half the heads per device but twice the rows (dp=4): the same cache bytes.
        assert split["kv cache"] == base["kv cache"] and split["generation weights"] < 0.6 * m.num_params * 4
    assert with_weights_layout(workload(model=m), "replicated", 1).weights_layout == "fsdp"  # one device: no copy
    rollout_peak = lambda w: max(estimate_memory(w).total(p) for p in ("prefill", "decode"))
    assert choose_weights_layout(fsdp8, rollout_peak(replicated), 8) == "replicated"
    assert choose_weights_layout(fsdp8, rollout_peak(replicated) - 1, 8) == "tp"
    assert choose_weights_layout(fsdp8, rollout_peak(tp) - 1, 8) == "fsdp"


def test_shipped_configs_choose_their_layout_per_slice():
    from flows.preflight import run_preflight
    from schemas import load_run_config

    def layout(size, slice_name):
        cfg = load_run_config(str(ROOT / f"configs/grpo_gsm8k_qwen25_{size}_bs128_steps100.yaml"), [])
        return run_preflight(cfg, slice_name).workload.weights_layout

    # Both fit on v6e-8; tp reads half (3B) or a quarter (7B) of the weights per chip and step,
    # and its all-reduces of [rows, D] activations are ~0.3% of the weights' bytes.
    assert layout("3b", "v6e-8") == layout("7b", "v6e-8") == layout("3b", "v6e-16") == "tp"
    assert layout("7b", "v5e-8") == "tp"  # 14 GiB of bf16 weights do not fit twice in 15.25 GiB


def test_auto_layout_ranks_the_fitting_layouts_by_the_predicted_decode_step():
    from grpo_core.accelerators import DECODE_RATES, tpu_generation
    from grpo_core.layout_choice import (COLLECTIVE_LATENCY_S, choose_weights_layout, decode_step_seconds,
                                         with_weights_layout)

    rates = DECODE_RATES["v6e"]
    for name, expected in (("qwen2.5-0.5b", "replicated"), ("qwen2.5-3b", "tp")):
        w = workload(model=PRESETS[name], param_bytes=2, prompts=16, group_size=8, new_tokens=512, max_prompt_tokens=256,
                     mesh=(("dp", 1), ("fsdp", 8), ("tp", 1)))
        rep, tp, fsdp = (with_weights_layout(w, layout, 8) for layout in ("replicated", "tp", "fsdp"))
        # Replicated: no collective, every chip reads all the weights and its share of the cache.
        m = w.model
        cache = 2 * m.num_hidden_layers * 16 * m.num_key_value_heads * (256 + 512) * m.head_dim * 2
        assert decode_step_seconds(rep, rates) == pytest.approx((m.num_params * 2 + cache) / rates[0])
        # fsdp gathers 7/8 of the weights over ICI every step: the slowest by far.
        assert decode_step_seconds(fsdp, rates) > 2 * max(decode_step_seconds(rep, rates), decode_step_seconds(tp, rates))
        # 0.5B: tp=2 halves ~1 GB of weight reads (0.3 ms) but adds 52 collectives' latency.
        assert choose_weights_layout(w, 10**12, 8, rates=rates) == expected
        assert choose_weights_layout(w, 10**12, 8) == "replicated"  # no rates: the fitting order
    # Without latency tp would win for 0.5B too: the ranking is what the latency term decides.
    w = workload(model=PRESETS["qwen2.5-0.5b"], param_bytes=2, prompts=16, group_size=8,
                 new_tokens=512, mesh=(("dp", 1), ("fsdp", 8), ("tp", 1)))
    assert (decode_step_seconds(with_weights_layout(w, "tp", 8), rates, latency=0.0)
            < decode_step_seconds(with_weights_layout(w, "replicated", 8), rates) and COLLECTIVE_LATENCY_S > 0)
    assert [tpu_generation(k) for k in ("TPU v6 lite", "TPU v5 lite", "TPU v5", "TPU v4", "cpu")] == [
        "v6e", "v5e", "v5", "v4", ""]


def test_float32_generation_weights_on_tpu_count_xlas_bf16_copies():
    # XLA:TPU converts a float32 generation copy's layer weights to bf16 outside the decode
    # loop and relays out the [V, D] embedding (quickstart_cpu's replicated rollout on v6e-8).
    from grpo_core.layout_choice import with_weights_layout

    m = PRESETS["smollm2-135m"]
    fsdp8 = dict(model=m, mesh=(("dp", 1), ("fsdp", 8), ("tp", 1)))
    tpu32 = with_weights_layout(workload(param_bytes=4, tpu=True, **fsdp8), "replicated", 8)
    copies = prefill_components(tpu32)["float32 weight copies"]
    layers = m.num_params - m.vocab_size * m.hidden_size  # tied embedding
    assert copies == pytest.approx(layers * 2 + m.vocab_size * m.hidden_size * 4, rel=1e-3)
    for other in (workload(param_bytes=2, tpu=True, **fsdp8), workload(param_bytes=4, tpu=False, **fsdp8)):
        assert "float32 weight copies" not in prefill_components(with_weights_layout(other, "replicated", 8))
    assert "float32 weight copies" not in prefill_components(workload(param_bytes=4, tpu=True, **fsdp8))  # fsdp
