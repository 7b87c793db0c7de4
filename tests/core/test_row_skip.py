"""Zero-advantage groups left out of the update: the same gradient as the full update
(float32 rounding) on 1 and 8 devices with micro-batches, the full batch's normaliser,
bucketed row counts, and no skipping where it would not be exact."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from grpo_core.models.decoder import param_logical_axes
from grpo_core.row_skip import bucket_shapes, compact_batch
from grpo_core.sharding import shard_params
from grpo_core.train_step import Trainer
from test_train_step import CFG, COMPLETION, LossCfg, initial_params, make_group_batch, mesh_of


def gradient_recorder() -> optax.GradientTransformation:
    """An 'optimizer' whose state is the last gradient it was given (params unchanged)."""
    def init(params):
        return jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)

    def update(grads, state, params=None):
        return jax.tree.map(jnp.zeros_like, grads), jax.tree.map(lambda g: g.astype(jnp.float32), grads)

    return optax.GradientTransformation(init, update)


def zeroed_groups(n: int, dead: list[int], seed: int = 0) -> dict:
    """make_group_batch(n) with every advantage of the groups in `dead` set to 0."""
    batch = make_group_batch(n, seed)
    for g in dead:
        batch["advantages_b"][g * n:(g + 1) * n] = 0.0
    return batch


def gradient(batch, *, n, n_devices, micro, skip, **loss):
    mesh = mesh_of(n_devices)
    cfg = type("C", (LossCfg,), dict(loss, skip_zero_advantage=skip, max_completion_length=COMPLETION))
    trainer = Trainer(CFG, gradient_recorder(), cfg, mesh=mesh, micro_batches=micro, score_last=COMPLETION,
                      group_size=n)
    params = shard_params(initial_params(0), param_logical_axes(CFG), mesh)
    _, grads, metrics = trainer.step(params, trainer.init_opt_state(params), trainer.shard_batch(batch))
    return jax.tree.map(np.asarray, grads), {k: float(v) for k, v in metrics.items()}


def relative_error(a, b) -> float:
    diff = sum(float(np.sum((x - y) ** 2)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    norm = sum(float(np.sum(y ** 2)) for y in jax.tree.leaves(b))
    return (diff / norm) ** 0.5


@pytest.mark.parametrize("n_devices, micro, n, dead, agg", [
    (1, 4, 2, [0, 2, 3, 5, 6], "token_mean"),           # 3 groups run, padded to 4 (2 micro-batches)
    (1, 1, 4, [1, 2], "seq_mean_token_mean"),             # one micro-batch of half the rows
    (8, 2, 2, [1, 2, 4, 7], "token_mean"),                # 8 devices: 8 rows in 1 micro-batch of 2
    (8, 2, 2, [0, 3, 5, 6, 7], "seq_mean_token_sum_norm"),
])
def test_skipping_zero_advantage_groups_gives_the_full_gradient(n_devices, micro, n, dead, agg):
    batch = zeroed_groups(n, dead)
    kw = dict(n=n, n_devices=n_devices, micro=micro, agg=agg)
    full, m_full = gradient(batch, skip=False, **kw)
    skipped, m_skip = gradient(batch, skip=True, **kw)
    assert m_full["rows_run"] == m_full["rows_total"] == 16
    assert m_skip["rows_total"] == 16 and m_skip["rows_run"] <= 8
    assert relative_error(skipped, full) <= 1e-6
    assert m_skip["loss"] == pytest.approx(m_full["loss"], rel=1e-6)
    assert m_skip["grad_norm"] == pytest.approx(m_full["grad_norm"], rel=1e-6)


@pytest.mark.parametrize("loss", [dict(beta=0.04), dict(top_entropy_quantile=0.5)])
def test_no_skipping_where_it_would_not_be_exact(loss):
    trainer = Trainer(CFG, optax.sgd(1.0), type("C", (LossCfg,), loss), mesh=mesh_of(1), group_size=2)
    assert not trainer.skip_zero_advantage
    batch = zeroed_groups(2, [0, 1, 2, 3, 4, 5])
    assert trainer.shard_batch(batch)["tokens_bt"].shape[0] == 16


def test_row_counts_are_bucketed():
    # bs128 on v6e-8 (8 shards, 4 micro-batches of 4 rows per device, groups of 8): 6 shapes
    assert bucket_shapes(128, 8, 4, 8) == [(8, 1), (16, 1), (32, 1), (64, 2), (96, 3), (128, 4)]
    # the quickstart (1 device, 16 rows in one micro-batch, groups of 4): 16, 8 or 4 rows
    assert bucket_shapes(16, 1, 1, 4) == [(4, 1), (8, 1), (16, 1)]
    shapes = set()
    for informative in range(0, 17):
        batch = zeroed_groups(1, list(range(informative, 16)))
        compact, rows = compact_batch(batch, 1, 1, 1)
        assert rows >= max(informative, 1) and compact["tokens_bt"].shape[0] == rows
        assert compact["row_tokens_b"].shape[0] == 16 if rows < 16 else "row_tokens_b" not in compact
        shapes.add(rows)
    assert shapes == {1, 2, 4, 8, 16}
