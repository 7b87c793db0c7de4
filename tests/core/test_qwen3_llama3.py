"""Qwen3 and Llama 3.x against transformers (torch): tiny random models built and saved by
transformers, loaded from disk here, compared on logits (float32, left-padded odd shapes,
grouped-query heads, tied and untied embeddings, a Llama 3 context past its original
length), gradients of a token log-likelihood (what the update differentiates), greedy
continuations, and our export read back by transformers."""
import dataclasses

import numpy as np
import pytest

from grpo_core.models import PRESETS, Model
from grpo_core.models.decoder import forward, positions_from_mask
from grpo_core.models.hf_names import hf_state_from_params
from grpo_core.models.loading import load_pretrained, save_pretrained
from grpo_core.sampling import generate
from grpo_core.sharding import make_mesh

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CASES = {
    "qwen3-tied": PRESETS["tiny-qwen3"],
    "qwen3-untied": dataclasses.replace(PRESETS["tiny-qwen3"], tie_word_embeddings=False),
    "llama3-untied": PRESETS["tiny-llama3"],
    "llama3-tied": dataclasses.replace(PRESETS["tiny-llama3"], tie_word_embeddings=True),
}
# Left-padded rows of odd lengths; the longest (150 + 12 new tokens) runs well past the
# tiny Llama 3's original context of 64 positions.
LENGTHS = (150, 3, 97, 1, 66)
NEW_TOKENS = 12
MAX_ERROR = 1e-4


def _prompts(cfg, seed=0):
    rng = np.random.default_rng(seed)
    return [[int(t) for t in rng.integers(3, cfg.vocab_size, n)] for n in LENGTHS]


@pytest.fixture(scope="module", params=sorted(CASES))
def saved(request, tmp_path_factory):
    """(cfg, HF model, directory transformers saved it to: sharded safetensors with an index)."""
    from hf_reference import hf_model

    cfg = CASES[request.param]
    hf = hf_model(cfg)
    path = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(path, max_shard_size="100KB")
    assert (path / "model.safetensors.index.json").is_file()
    return cfg, hf, path


def _logits(model_or_hf, tokens, mask):
    if isinstance(model_or_hf, Model):
        return np.asarray(model_or_hf.logits(tokens, mask))
    from hf_reference import hf_logits

    return hf_logits(model_or_hf, tokens, mask)


def test_config_json_written_by_transformers_reads_as_ours(saved):
    cfg, _, path = saved
    model = load_pretrained(path)
    assert dataclasses.replace(model.config, eos_token_ids=cfg.eos_token_ids) == cfg


def test_logits_match_transformers(saved):
    from hf_reference import left_pad

    cfg, hf, path = saved
    tokens, mask = left_pad(_prompts(cfg), cfg.pad_token_id)
    ours, ref = _logits(load_pretrained(path), tokens, mask), _logits(hf, tokens, mask)
    error = np.abs(ours - ref)[mask].max()
    print(f"max logit error {error:.2e} over {int(mask.sum())} tokens (|logit| up to {np.abs(ref).max():.1f})")
    assert ours.dtype == np.float32 and error <= MAX_ERROR
    assert np.abs(ref).max() > 1.0


def test_the_llama3_scaling_matters_past_the_original_context(saved):
    """For the Llama 3 cases the scaling moves the logits; Qwen3 has none to check."""
    from hf_reference import left_pad

    cfg, _, path = saved
    assert (cfg.rope_scaling is None) == (cfg.architecture == "qwen3")
    if cfg.rope_scaling is None:
        return
    model = load_pretrained(path)
    unscaled = Model(dataclasses.replace(cfg, rope_scaling=None), model.params)
    tokens, mask = left_pad(_prompts(cfg), cfg.pad_token_id)
    gap = np.abs(_logits(model, tokens, mask) - _logits(unscaled, tokens, mask))[mask].max()
    assert gap > 100 * MAX_ERROR


def test_mesh_loading_gives_the_same_logits(saved):
    from hf_reference import left_pad

    cfg, _, path = saved
    tokens, mask = left_pad(_prompts(cfg)[1:4], cfg.pad_token_id)
    single = _logits(load_pretrained(path), tokens, mask)
    sharded = _logits(load_pretrained(path, mesh=make_mesh({"dp": 2, "fsdp": 2, "tp": 2})), tokens, mask)
    np.testing.assert_allclose(sharded, single, atol=1e-5)


def test_gradients_match_transformers(saved):
    """d/dparams of the mean next-token log-prob over the real tokens of a left-padded batch."""
    import jax
    import jax.numpy as jnp
    from hf_reference import left_pad

    cfg, hf, path = saved
    tokens, mask = left_pad(_prompts(cfg)[1:], cfg.pad_token_id)
    target, keep = tokens[:, 1:], mask[:, 1:] & mask[:, :-1]

    def loss(params):
        logits, _ = forward(params, jnp.asarray(tokens), cfg, positions_bt=positions_from_mask(jnp.asarray(mask)),
                            attn_mask_bt=jnp.asarray(mask))
        logps = jnp.take_along_axis(jax.nn.log_softmax(logits[:, :-1]), jnp.asarray(target)[..., None], -1)[..., 0]
        return jnp.sum(jnp.where(keep, logps, 0.0)) / keep.sum()

    ours = hf_state_from_params(cfg, jax.device_get(jax.grad(loss)(load_pretrained(path).params)))
    hf.zero_grad()
    t, m = torch.tensor(tokens), torch.tensor(mask.astype(np.int64))
    logits = hf(input_ids=t, attention_mask=m, position_ids=(m.cumsum(-1) - 1).clamp(min=0)).logits
    logps = torch.log_softmax(logits[:, :-1], -1).gather(-1, torch.tensor(target)[..., None])[..., 0]
    (torch.where(torch.tensor(keep), logps, 0.0).sum() / keep.sum()).backward()
    grads = {name: p.grad.numpy() for name, p in hf.named_parameters()}
    assert set(ours) == set(grads)
    for name, grad in grads.items():
        scale = np.abs(grad).max()
        assert scale > 0 and np.abs(ours[name] - grad).max() <= 1e-4 * max(scale, 1.0), name


def test_greedy_continuations_match_hf_generate(saved):
    from hf_reference import left_pad

    cfg, hf, path = saved
    prompts = _prompts(cfg, seed=1)
    tokens, mask = left_pad(prompts, cfg.pad_token_id)
    with torch.no_grad():
        out = hf.generate(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask.astype(np.int64)),
                          max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=list(cfg.eos_token_ids),
                          pad_token_id=cfg.pad_token_id)
    res = generate(load_pretrained(path), prompts, NEW_TOKENS, temperature=0.0)
    for row, got in zip(out[:, tokens.shape[1]:].tolist(), res.tokens):
        ends = [i for i, t in enumerate(row) if t in cfg.eos_token_ids]
        assert got == row[: ends[0] + 1 if ends else len(row)]


def test_export_reloads_in_transformers_with_identical_logits(saved, tmp_path):
    from hf_reference import left_pad

    cfg, hf, path = saved
    dest = save_pretrained(load_pretrained(path), None, tmp_path / "export", max_shard_bytes=60_000)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(dest, dtype=torch.float32,
                                                             attn_implementation="eager").eval()
    assert type(reloaded) is type(hf) and reloaded.config.rope_parameters == hf.config.rope_parameters
    tokens, mask = left_pad(_prompts(cfg), cfg.pad_token_id)
    np.testing.assert_array_equal(_logits(reloaded, tokens, mask), _logits(hf, tokens, mask))
