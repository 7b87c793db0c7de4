"""LoRA against PEFT + torch on the same tiny model: a step's loss and adapter gradients,
and the merged weights after several steps (PEFT's scale alpha / r)."""
import jax
import numpy as np
import optax
import pytest

from grpo_core import lora
from grpo_core.models.config import PRESETS
from grpo_core.models.hf_names import params_from_hf_state
from grpo_core.train_step import Trainer
from test_lora import mesh_of, random_adapters, sharded
from test_train_step import make_batch

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
from hf_reference import hf_model, model_from_hf  # noqa: E402  (imports torch)

CFG = PRESETS["tiny-llama"]
SPEC = lora.LoraSpec(rank=4, alpha=12.0)


def peft_model(adapters, spec=SPEC):
    """PEFT LoRA on the HF tiny model, with our adapters loaded under their PEFT names."""
    config = lora.peft_config(spec, "tiny-llama")
    hf = hf_model(CFG)
    model = peft.get_peft_model(hf, peft.LoraConfig(
        r=config["r"], lora_alpha=config["lora_alpha"], lora_dropout=0.0, use_rslora=False,
        target_modules=config["target_modules"]))
    state = {k: torch.tensor(v) for k, v in lora.peft_tensors(adapters).items()}
    loaded = peft.set_peft_model_state_dict(model, state)
    assert not loaded.unexpected_keys  # every name we write is one PEFT knows
    return model


def torch_loss(model, batch):
    """token_mean GRPO loss at ratio 1 (old log-probs = the detached current ones)."""
    tokens = torch.tensor(batch["tokens_bt"], dtype=torch.long)
    mask = torch.tensor(batch["attn_mask_bt"].astype(np.int64))
    logits = model(input_ids=tokens, attention_mask=mask, position_ids=torch.tensor(batch["positions_bt"],
                                                                                     dtype=torch.long)).logits
    logps = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, tokens[:, 1:, None])[..., 0]
    completion = torch.tensor(batch["completion_mask_bt"][:, 1:])
    ratio = torch.exp(logps - logps.detach())
    adv = torch.tensor(batch["advantages_b"])[:, None]
    return torch.sum(-adv * ratio * completion) / completion.sum()


def base_params():
    return model_from_hf(CFG, hf_model(CFG)).params


def test_lora_step_loss_and_adapter_gradients_match_peft():
    adapters, batch = random_adapters(), make_batch()
    trainer = Trainer(CFG, optax.sgd(1.0), None, mesh=mesh_of(1), lora=SPEC)
    base, start = sharded(base_params(), adapters, mesh_of(1))
    new, _, metrics = trainer.step(start, trainer.init_opt_state(start), trainer.shard_batch(batch), base)
    grads = jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b), adapters, new)  # sgd(1): params - grad

    model = peft_model(adapters)
    loss = torch_loss(model, batch)
    loss.backward()
    np.testing.assert_allclose(float(metrics["loss"]), loss.item(), rtol=1e-4)
    theirs = {name.replace(".default", ""): p.grad.numpy() for name, p in model.named_parameters() if p.grad is not None}
    ours = lora.peft_tensors(grads)
    assert set(ours) == set(theirs) and len(ours) == 2 * 7 * CFG.num_hidden_layers
    for name, grad in ours.items():
        scale = np.abs(theirs[name]).max()
        assert scale > 0, name
        assert np.abs(grad - theirs[name]).max() <= 1e-4 * scale, name


def test_merged_weights_after_steps_equal_peft_merge_with_scale_alpha_over_rank():
    mesh = mesh_of(2)
    trainer = Trainer(CFG, optax.adamw(1e-2), None, mesh=mesh, lora=SPEC)
    host_base = base_params()
    base, adapters = sharded(host_base, lora.init_adapters(CFG, SPEC, jax.random.PRNGKey(3)), mesh)
    opt_state = trainer.init_opt_state(adapters)
    for step in range(3):
        adapters, opt_state, _ = trainer.step(adapters, opt_state, trainer.shard_batch(make_batch(step)), base)
    adapters = jax.tree.map(np.asarray, adapters)
    assert np.abs(adapters["layers"]["wq"]["b"]).max() > 0  # B left zero: trained
    ours = jax.tree.map(np.asarray, lora.merge_program(SPEC, base)(base, adapters))

    model = peft_model(adapters)
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    assert layer.scaling["default"] == SPEC.alpha / SPEC.rank
    merged = model.merge_and_unload()
    state = {k: v.detach().numpy() for k, v in merged.state_dict().items()}
    theirs = params_from_hf_state(CFG, state.__getitem__)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(ours), jax.tree.leaves(theirs)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6, err_msg=jax.tree_util.keystr(path))
    # And by the formula itself, layer by layer: W + (alpha / r) * A @ B in our layout.
    a, b = adapters["layers"]["w_down"]["a"], adapters["layers"]["w_down"]["b"]
    expected = host_base["layers"]["w_down"] + SPEC.alpha / SPEC.rank * np.einsum("lfr,lrd->lfd", a, b)
    np.testing.assert_allclose(ours["layers"]["w_down"], expected, rtol=1e-6, atol=1e-7)
