"""Generation layouts of the weights on an 8-device CPU mesh: the same tokens as the training
layout, and no weight gathers left in the compiled decode loop."""
import dataclasses

import jax
import numpy as np
import pytest

from grpo_core import hlo
from grpo_core.errors import UserError
from grpo_core.layouts import generation_mesh, generation_mesh_shape, to_generation_layout, tp_size
from grpo_core.models import PRESETS, Model
from grpo_core.models.decoder import init_params, param_logical_axes
from grpo_core.sampling import generate, lower_generate
from grpo_core.sharding import make_mesh, shard_params

PROMPTS = [[5, 17, 9, 200, 31], [44], [7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17], [99, 3], [1, 2], [250, 251, 252]]
# tiny-qwen2 (untied LM head, q/k/v biases) with 4 query and 2 kv heads, so tp=2 applies on 8
# devices, and a width of 64 so the training layout really splits every matrix 8 ways.
CFG = dataclasses.replace(PRESETS["tiny-qwen2"], hidden_size=64, intermediate_size=96, num_attention_heads=4,
                          num_key_value_heads=2, head_dim=16)


@pytest.fixture(scope="module")
def trained():
    """(model with params fsdp-sharded 8 ways as in training, the training mesh)."""
    params = jax.tree.map(lambda x: 5 * x, init_params(CFG, jax.random.key(0)))  # peaked, non-trivial outputs
    mesh = make_mesh(None)
    return Model(CFG, shard_params(params, param_logical_axes(CFG), mesh)), mesh


def _on_layout(trained, layout):
    model, mesh = trained
    gen_mesh = generation_mesh(mesh, layout, CFG, local_devices=8)
    return Model(CFG, to_generation_layout(model.params, CFG, gen_mesh)), gen_mesh


def test_generation_meshes():
    assert tp_size(CFG, 8) == 2 and tp_size(PRESETS["qwen2.5-3b"], 8) == 2 and tp_size(PRESETS["qwen2.5-7b"], 8) == 4
    sizes = {"dp": 1, "fsdp": 8, "tp": 1}
    assert generation_mesh_shape("replicated", sizes, CFG, 8) == {"dp": 8, "fsdp": 1, "tp": 1}
    assert generation_mesh_shape("tp", sizes, CFG, 8) == {"dp": 4, "fsdp": 1, "tp": 2}
    assert generation_mesh_shape("fsdp", sizes, CFG, 8) == sizes
    # v6e-16: 4 hosts of 4; tp stays within a host's 4 devices.
    assert generation_mesh_shape("tp", {"dp": 4, "fsdp": 4, "tp": 1}, PRESETS["qwen2.5-7b"], 4)["tp"] == 4
    with pytest.raises(UserError, match="rollout.weights_layout=tp"):
        generation_mesh_shape("tp", sizes, PRESETS["tiny-qwen2"], 8)  # 6 and 3 heads: no tp divides 8


def test_reshard_places_the_weights_as_the_layout_says(trained):
    model, _ = trained
    replicated, _ = _on_layout(trained, "replicated")
    assert all(x.sharding.is_fully_replicated for x in jax.tree.leaves(replicated.params))
    tp, mesh = _on_layout(trained, "tp")
    wq = tp.params["layers"]["wq"]  # [L, D, Nq, Hd]: heads split over tp=2, D whole
    assert wq.addressable_shards[0].data.shape == (CFG.num_hidden_layers, CFG.hidden_size, 2, CFG.head_dim)
    same, _ = _on_layout(trained, "fsdp")
    assert same.params is model.params  # the training layout is used as it is, no copy
    for a, b in zip(jax.tree.leaves(model.params), jax.tree.leaves(tp.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_layouts_give_the_same_greedy_tokens(trained):
    ref = generate(trained[0], PROMPTS, 10, temperature=0.0, n=2, stop_at_eos=False, mesh=trained[1])
    assert len({tuple(t) for t in ref.tokens}) > 3  # the check is not about constant outputs
    for layout in ("replicated", "tp"):
        model, mesh = _on_layout(trained, layout)
        out = generate(model, PROMPTS, 10, temperature=0.0, n=2, stop_at_eos=False, mesh=mesh)
        assert out.tokens == ref.tokens, layout
        np.testing.assert_allclose(out.logps_bt, ref.logps_bt, atol=1e-4)


def test_layouts_draw_the_same_samples_from_the_same_seed(trained):
    """The sampler's uniforms do not depend on the sharding and the logits agree to float
    rounding, so the same seed draws the same tokens: the distributions are the same."""
    kwargs = dict(temperature=0.9, top_p=0.95, top_k=50, seed=11, n=4, stop_at_eos=False)
    ref = generate(trained[0], PROMPTS, 12, mesh=trained[1], **kwargs)
    assert len({tuple(t) for t in ref.tokens}) > len(PROMPTS)  # samples of a group differ
    for layout in ("replicated", "tp"):
        model, mesh = _on_layout(trained, layout)
        out = generate(model, PROMPTS, 12, mesh=mesh, **kwargs)
        assert out.tokens == ref.tokens, layout
        np.testing.assert_allclose(out.logps_bt, ref.logps_bt, atol=1e-4)


def _decode_collectives(model, mesh) -> hlo.LoopCost:
    lowered = lower_generate(model, len(PROMPTS), 16, mesh, max_new_tokens=8, n=2, temperature=1.0)
    return hlo.decode_loop_cost(lowered.compile().as_text())


def test_decode_loop_gathers_no_weights_on_the_generation_layouts(trained):
    fsdp = _decode_collectives(*trained)
    weights = sum(x.nbytes for x in jax.tree.leaves(trained[0].params))
    # The training layout gathers the weights inside the loop, every token (most of them:
    # XLA:CPU hoists a few gathers out of the loop).
    assert fsdp.collective_ops.get("all-gather", 0) > 0 and fsdp.total_collective_bytes > 0.5 * weights
    replicated = _decode_collectives(*_on_layout(trained, "replicated"))
    assert "all-gather" not in replicated.collective_ops
    assert replicated.total_collective_bytes < 0.01 * weights
    tp = _decode_collectives(*_on_layout(trained, "tp"))
    assert tp.total_collective_bytes < 0.5 * fsdp.total_collective_bytes
    assert replicated.flops == pytest.approx(fsdp.flops, rel=0.05)  # the same work, without the traffic


HLO = """HloModule m

%inner_body (p: (s32[], f32[4,8])) -> (s32[], f32[4,8]) {
  %p = (s32[], f32[4,8]{1,0}) parameter(0)
  %w = f32[8,8]{1,0} all-gather(f32[1,8]{1,0} %x), channel_id=1, replicas=[8], replica_groups=[1,8]<=[8], dimensions={0}
  %d = f32[4,8]{1,0} dot(f32[4,8]{1,0} %h, f32[8,8]{1,0} %w), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  ROOT %t = (s32[], f32[4,8]{1,0}) tuple(%i, %d)
}

%outer_body (p: (s32[], f32[4,8])) -> (s32[], f32[4,8]) {
  %p = (s32[], f32[4,8]{1,0}) parameter(0)
  %loop = (s32[], f32[4,8]{1,0}) while((s32[], f32[4,8]{1,0}) %p), condition=%cond, body=%inner_body, backend_config={"known_trip_count":{"n":"3"}}
  %r0 = f32[4,8]{1,0} all-reduce(f32[4,8]{1,0} %h), channel_id=3, replica_groups=mesh['axis_0'=4,'axis_1'=4], device_ids=([4,4]T(1,0)) {'axis_0'}, to_apply=%add
  ROOT %r = f32[4,8]{1,0} all-reduce(f32[4,8]{1,0} %h), channel_id=2, replica_groups={{0,1},{2,3}}, to_apply=%add
}

%tpu_cond (p: (s32[], f32[4,8])) -> pred[] {
  %p = (s32[], f32[4,8]{1,0}) parameter(0)
  %limit = s32[] constant(5)
  %i = s32[] get-tuple-element(%p), index=0
  ROOT %lt = pred[] compare(%i, %limit), direction=LT
}

%tpu_body (p: (s32[], f32[4,8])) -> (s32[], f32[4,8]) {
  %p = (s32[], f32[4,8]{1,0}) parameter(0)
  %h = f32[4,8]{1,0} parameter(1)
  %k = f32[8,1,16]{2,1,0} parameter(2)
  %c = f32[4,16,16]{2,1,0} convolution(f32[4,8,1]{2,1,0} %x, f32[8,1,16]{2,1,0} %k), window={size=16 pad=15_15 rhs_reversal=1}, dim_labels=bf0_i0o->b0f
  %g0 = f32[4,8]{1,0} all-gather(f32[4,1]{1,0} %h), channel_id=9, replica_groups=[2,4]<=[8], dimensions={1}
  ROOT %g = f32[4,8]{1,0} all-gather(f32[4,1]{1,0} %h), channel_id=9, replica_groups=[2,4]<=[8], dimensions={1}
}

ENTRY %main (a: f32[4,8]) -> f32[4,8] {
  %tpu_loop = (s32[], f32[4,8]{1,0}) while((s32[], f32[4,8]{1,0}) %a), condition=%tpu_cond, body=%tpu_body
  %a = f32[4,8]{1,0} parameter(0)
  ROOT %w = (s32[], f32[4,8]{1,0}) while((s32[], f32[4,8]{1,0}) %t), condition=%cond2, body=%outer_body
}
"""


def test_loop_cost_multiplies_nested_loops_by_their_trip_counts():
    # XLA:TPU prints no known_trip_count: `counter < 5` in the condition says it.
    assert sorted(hlo.while_loops(HLO), key=str) == [("inner_body", 3), ("outer_body", None), ("tpu_body", 5)]
    tpu = hlo.loop_cost(HLO, "tpu_body")  # one collective (channel 9) split over two ops counts once
    assert tpu.collective_bytes == {"all-gather": 4 * 8 * 4 * 3 / 4}
    assert tpu.flops == 2 * (4 * 16 * 16) * 8  # the window covers one real input element of 16
    cost = hlo.decode_loop_cost(HLO)
    assert cost.collective_ops == {"all-gather": 3, "all-reduce": 2}
    assert cost.collective_bytes["all-gather"] == pytest.approx(3 * 8 * 8 * 4 * 7 / 8)
    assert cost.collective_bytes["all-reduce"] == pytest.approx(2 * 4 * 8 * 4 * (1 / 2 + 3 / 4))
    assert cost.flops == 3 * 2 * 4 * 8 * 8
