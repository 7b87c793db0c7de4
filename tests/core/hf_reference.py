"""Torch/HF reference models for parity tests (imported only by tests marked `torch`)."""
import numpy as np
import torch
import transformers

from grpo_core.models import Model
from grpo_core.models.hf_names import params_from_hf_state


def hf_model(cfg, seed=0):
    """Random float32 HF model for `cfg`; every tensor (biases, norms too) is randomized."""
    torch.manual_seed(seed)
    d = cfg.to_hf()
    conf = transformers.AutoConfig.for_model(d.pop("model_type"), **d)
    conf._attn_implementation = "eager"
    model = transformers.AutoModelForCausalLM.from_config(conf, dtype=torch.float32).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.1 if name.endswith("norm.weight") else 0.15
            p.copy_((1.0 if name.endswith("norm.weight") else 0.0) + scale * torch.randn_like(p))
    return model


def model_from_hf(cfg, hf):
    """Our Model with the HF model's weights, converted via the shared name mapping."""
    state = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    return Model(cfg, params_from_hf_state(cfg, state.__getitem__))


def hf_logits(hf, tokens, mask):
    """HF logits [B, T, V] with left-padding positions (cumsum of the mask)."""
    t, m = torch.tensor(np.asarray(tokens)), torch.tensor(np.asarray(mask, dtype=np.int64))
    pos = (m.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        return hf(input_ids=t, attention_mask=m, position_ids=pos).logits.numpy()


def left_pad(prompts, pad_id):
    """list of id lists -> (tokens [B, T] int, mask [B, T] bool), left-padded."""
    T = max(len(p) for p in prompts)
    tokens = np.full((len(prompts), T), pad_id, np.int64)
    mask = np.zeros((len(prompts), T), bool)
    for i, p in enumerate(prompts):
        tokens[i, T - len(p):] = p
        mask[i, T - len(p):] = True
    return tokens, mask
