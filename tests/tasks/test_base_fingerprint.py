"""The LoRA base fingerprint recognises one base in float32 and bfloat16, and nothing else."""
import jax.numpy as jnp
import numpy as np

from tasks.session import base_fingerprint


def _base(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"embed": jnp.asarray(rng.normal(size=(8, 4)), jnp.float32),
            "layers": {"wq": jnp.asarray(rng.normal(size=(2, 4, 2, 2)), jnp.float32)}}


def test_a_base_moved_to_bfloat16_keeps_its_fingerprint():
    base = _base(0)
    as_bf16 = {"embed": base["embed"].astype(jnp.bfloat16),
               "layers": {"wq": base["layers"]["wq"].astype(jnp.bfloat16)}}
    assert base_fingerprint(base) == base_fingerprint(as_bf16)


def test_other_weights_have_another_fingerprint():
    base, other = _base(0), _base(0)
    other["layers"]["wq"] = other["layers"]["wq"].at[1, 0, 0, 0].add(1.0)
    assert base_fingerprint(base) != base_fingerprint(other)
    assert base_fingerprint(base) != base_fingerprint(_base(1))
