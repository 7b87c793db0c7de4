"""Zero-advantage groups left out of the update: the same gradient as the full update
(float32 rounding) on 1 and 8 devices with micro-batches, the full batch's normaliser,
one compiled program whatever the number of informative groups, and no skipping where it
would not be exact."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from grpo_core.models.decoder import param_logical_axes
from grpo_core.row_skip import arrange_batch, informative_groups, slot_last_micro_batch
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


def zeroed_groups(n: int, dead: list[int], seed: int = 0, rows: int = 16) -> dict:
    """make_group_batch(n) (twice over for 32 rows) with every advantage of the groups in
    `dead` set to 0."""
    parts = [make_group_batch(n, seed + i) for i in range(rows // 16)]
    batch = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    for g in dead:
        batch["advantages_b"][g * n:(g + 1) * n] = 0.0
    return batch


def make_trainer(*, n, n_devices, micro, skip, **loss):
    cfg = type("C", (LossCfg,), dict(loss, skip_zero_advantage=skip, max_completion_length=COMPLETION))
    return Trainer(CFG, gradient_recorder(), cfg, mesh=mesh_of(n_devices), micro_batches=micro,
                   score_last=COMPLETION, group_size=n)


def gradient(batch, trainer=None, **kw):
    trainer = trainer or make_trainer(**kw)
    params = shard_params(initial_params(0), param_logical_axes(CFG), trainer.mesh)
    _, grads, metrics = trainer.step(params, trainer.init_opt_state(params), trainer.shard_batch(batch))
    return jax.tree.map(np.asarray, grads), {k: float(v) for k, v in metrics.items()}


def relative_error(a, b) -> float:
    diff = sum(float(np.sum((x - y) ** 2)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    norm = sum(float(np.sum(y ** 2)) for y in jax.tree.leaves(b))
    return (diff / norm) ** 0.5


@pytest.mark.parametrize("n_devices, micro, n, dead, agg, rows, rows_run", [
    (1, 4, 2, [0, 2, 3, 5, 6], "token_mean", 16, 8),          # 3 groups run in 2 of 4 micro-batches
    (1, 4, 4, [1, 2, 3], "seq_mean_token_mean", 16, 4),        # 1 group: 1 micro-batch of 4
    (1, 2, 4, [0, 3], "seq_mean_token_sum_norm", 16, 8),       # groups 1 and 2 moved into micro-batch 0
    # 8 devices, 2 rows per device per micro-batch: 3 groups of 2 fill micro-batch 0 of 2 (16 rows)
    (8, 2, 2, [0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14], "token_mean", 32, 16),
    (8, 2, 2, list(range(1, 16)), "seq_mean_token_sum_norm", 32, 16),
    # 1 row per device per micro-batch: each group of 2 spans both micro-batches, all run
    (8, 2, 2, [1, 2, 4, 5, 6, 7], "token_mean", 16, 16),
])
def test_skipping_zero_advantage_groups_gives_the_full_gradient(n_devices, micro, n, dead, agg, rows, rows_run):
    batch = zeroed_groups(n, dead, rows=rows)
    kw = dict(n=n, n_devices=n_devices, micro=micro, agg=agg)
    full, m_full = gradient(batch, skip=False, **kw)
    skipped, m_skip = gradient(batch, skip=True, **kw)
    assert m_full["rows_run"] == m_full["rows_total"] == rows
    assert m_skip["rows_total"] == rows and m_skip["rows_run"] == rows_run
    assert relative_error(skipped, full) <= 1e-6
    assert m_skip["loss"] == pytest.approx(m_full["loss"], rel=1e-6)
    assert m_skip["grad_norm"] == pytest.approx(m_full["grad_norm"], rel=1e-6)


def test_one_compiled_program_whatever_the_number_of_informative_groups():
    trainer = make_trainer(n=2, n_devices=1, micro=4, skip=True)
    rows = []
    for dead in ([], [0, 1, 2, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6], [0, 5], [2, 3, 4, 5, 6, 7]):
        batch = zeroed_groups(2, dead)
        grads, metrics = gradient(batch, trainer)
        full, _ = gradient(batch, skip=False, n=2, n_devices=1, micro=4)
        rows.append(metrics["rows_run"])
        if len(dead) == 8:  # nothing informative: nothing runs, the gradient is exactly 0
            assert all(not np.any(g) for g in jax.tree.leaves(grads)) and not any(np.any(g) for g in jax.tree.leaves(full))
        else:
            assert relative_error(grads, full) <= 1e-6
    assert rows == [16, 0, 4, 12, 4]
    assert trainer._compiled._cache_size() == 1  # one update program for every step


def test_the_compiled_program_is_the_one_preflight_lowers():
    trainer = make_trainer(n=2, n_devices=1, micro=4, skip=True)
    params = shard_params(initial_params(0), param_logical_axes(CFG), trainer.mesh)
    batch = trainer.shard_batch(zeroed_groups(2, [1, 2]))
    abstract = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=v.sharding) for k, v in batch.items()
                if k != "micro_batches_run"}
    lowered = trainer.lower(params, trainer.init_opt_state(params), abstract)
    trainer.step(params, trainer.init_opt_state(params), batch)
    assert lowered.as_text() == trainer._compiled.lower(params, trainer.init_opt_state(params), batch, None).as_text()
    assert "while" in lowered.as_text()


@pytest.mark.parametrize("loss", [dict(beta=0.04), dict(top_entropy_quantile=0.5)])
def test_no_skipping_where_it_would_not_be_exact(loss):
    trainer = Trainer(CFG, optax.sgd(1.0), type("C", (LossCfg,), loss), mesh=mesh_of(1), group_size=2)
    assert not trainer.skip_zero_advantage
    batch = zeroed_groups(2, [0, 1, 2, 3, 4, 5])
    sharded = trainer.shard_batch(batch)
    assert "micro_batches_run" not in sharded
    assert np.array_equal(np.asarray(sharded["advantages_b"]), batch["advantages_b"])


def test_informative_groups_go_to_the_first_micro_batches():
    # bs128 on v6e-8 (8 shards, 4 micro-batches of 4 rows per device, groups of 8 split in
    # chunks of 4 rows): each group spans 2 micro-batches, half of them end in micro-batch 1
    last = slot_last_micro_batch(128, 8, 4, 4)
    assert sorted(set(last.tolist())) == [1, 3] and (last == 1).sum() == 8
    # the quickstart with micro_batch_size 8 (1 device, 2 micro-batches, groups of 4)
    assert slot_last_micro_batch(16, 4, 2, 4).tolist() == [0, 1, 0, 1]
    for informative in range(0, 9):
        batch = zeroed_groups(2, list(range(informative, 8)), seed=informative)
        out, run = arrange_batch(batch, 2, 4, 2)
        assert run == -(-informative // 2)  # 2 groups per micro-batch of 4 rows
        assert sorted(map(tuple, out["tokens_bt"].tolist())) == sorted(map(tuple, batch["tokens_bt"].tolist()))
        micro_of_group = (np.arange(8) // 1) % 4  # chunk of 2 rows = 1 group
        assert (micro_of_group[informative_groups(out, 2)] < run).all()
        _, at_least = arrange_batch(batch, 2, 4, 2, min_groups=7)
        assert at_least == 4
