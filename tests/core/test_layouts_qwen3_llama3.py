"""Every generation layout of the weights samples the tiny Qwen3 and Llama 3 models as the
training layout does (8-device CPU mesh): the q/k norm leaves and the scaled RoPE go
through the reshard and the tp split like every other weight."""
import jax
import numpy as np
import pytest

from grpo_core.layouts import generation_mesh, to_generation_layout, tp_size
from grpo_core.models import PRESETS, Model
from grpo_core.models.decoder import init_params, param_logical_axes
from grpo_core.sampling import generate
from grpo_core.sharding import make_mesh, shard_params

# Prompts long enough that the Llama 3 rows decode past its original context (64 positions).
PROMPTS = [list(range(3, 3 + n)) for n in (70, 1, 13, 40)]


@pytest.mark.parametrize("name", ["tiny-qwen3", "tiny-llama3"])
def test_each_generation_layout_gives_the_training_layouts_tokens(name):
    cfg = PRESETS[name]
    assert tp_size(cfg, 8) == 2
    params = jax.tree.map(lambda x: 5 * x, init_params(cfg, jax.random.key(0)))  # peaked, non-trivial outputs
    mesh = make_mesh(None)
    trained = Model(cfg, shard_params(params, param_logical_axes(cfg), mesh))
    ref = generate(trained, PROMPTS, 8, temperature=0.0, n=2, stop_at_eos=False, mesh=mesh)
    assert len({tuple(t) for t in ref.tokens}) > 2
    for layout in ("replicated", "tp"):
        gen_mesh = generation_mesh(mesh, layout, cfg, local_devices=8)
        model = Model(cfg, to_generation_layout(trained.params, cfg, gen_mesh))
        out = generate(model, PROMPTS, 8, temperature=0.0, n=2, stop_at_eos=False, mesh=gen_mesh)
        assert out.tokens == ref.tokens, layout
        np.testing.assert_allclose(out.logps_bt, ref.logps_bt, atol=1e-4)
