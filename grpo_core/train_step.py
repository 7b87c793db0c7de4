"""The GRPO update: one jitted, mesh-sharded function per training step.

`Trainer.step(params, opt_state, batch)` runs `ppo_epochs` optimizer updates over the
step's batch. Each update accumulates gradients over `micro_batches` slices with a
`lax.scan` inside the same jit, so there is one dispatch and no host round-trip.

Invariance by construction: every micro-batch loss is divided by the aggregation's
denominator of the WHOLE step batch (computed inside the jit on the global, sharded
mask, hence over all devices and processes), so the summed gradients equal the gradient
of the unsplit loss. Micro-batch m takes rows m, m+M, m+2M, ... (with `group_size` n > 1:
groups m, m+M, ... of n consecutive rows): with the batch sharded in contiguous blocks
over ("dp", "fsdp"), every micro-batch then spans all devices and slicing moves no data
between them.

Shared prompts (group_size > 1, the pipeline's default with rollout.n): the n rows of a
GRPO group have the same prompt, so the prompt columns are run once per group and the
completions attend to its keys/values (`sequence_logps`); same gradients, prompt FLOPs / n
(or / gcd(n, rows per device per micro-batch) when a device holds part of a group).

Log-prob convention (shared with the sampler): logps_bt[b, t] = log p(tokens[b, t] |
tokens[b, :t]) from log_softmax(logits / temperature), 0 at t = 0. completion_mask_bt
marks the sampled tokens at their own positions.

old_logps: taken from the batch when it holds "old_logps_bt"; otherwise they are the
stop-gradient of the first epoch's own log-probs (no extra forward), and kept for later
epochs. Reference log-probs (beta > 0): from "ref_logps_bt" in the batch, else one
forward of `ref_params` per micro-batch in the first epoch, kept likewise.
"sampler_logps_bt" (the rollout's own log-probs) feed truncated importance sampling
(loss.tis_cap).

LoRA (`lora` set): the params the step trains, donates and returns are the adapters
(grpo_core.lora); the frozen base goes in the `ref_params` slot, and is also the
reference policy (adapters switched off), so no second copy of the weights exists.
Adapter dropout draws its masks from `dropout_seed`, the epoch and the micro-batch's
tokens, so a resumed step draws what the uninterrupted one drew.

Zero-advantage rows: when exact (beta = 0, no entropy-based token selection),
`shard_batch` moves the groups whose advantages are all 0 behind the others
(grpo_core/row_skip.py) and adds "micro_batches_run" (a replicated int32 scalar): the
update's micro-batch loop then runs that many micro-batches instead of all of them. The
batch keeps its shape, so one compiled program serves every step; the normaliser is the
whole step's as always. Token-mean metrics (entropy, clip fractions, ratio) are then over
the micro-batches that ran.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from grpo_core import lora as lora_lib
from grpo_core import row_skip
from grpo_core.loss import loss_denominator, policy_loss
from grpo_core.models.config import ModelConfig
from grpo_core.models.decoder import KVCache, forward, logits_from_hidden
from grpo_core.sharding import batch_sharding, batch_shards, constrain, replicated

REQUIRED_KEYS = ("tokens_bt", "positions_bt", "attn_mask_bt", "completion_mask_bt", "advantages_b")
OPTIONAL_KEYS = ("old_logps_bt", "ref_logps_bt", "sampler_logps_bt")
RUN_KEY = "micro_batches_run"  # the zero-advantage skip's trip count (module doc)
# policy_loss metrics that are token means; combined over micro-batches weighted by tokens.
_TOKEN_MEAN_METRICS = ("clip_frac_low", "clip_frac_high", "clip_frac_dual", "ratio_mean",
                       "pg_loss", "kl", "entropy", "entropy_selected_frac", "tis_weight_mean")


def token_logps(logits_btv, targets_bt, temperature: float, with_entropy: bool = False):
    """log p(target) under log_softmax(logits / temperature), and optionally the entropy.

    logits_btv: float32 [B, T, V]; targets_bt: int [B, T]. Returns (logps [B, T],
    entropy [B, T] or None). temperature <= 0 (greedy sampling) scores at temperature 1.
    """
    z = logits_btv / (temperature if temperature > 0 else 1.0)
    lse = jax.nn.logsumexp(z, axis=-1)
    logps = jnp.take_along_axis(z, targets_bt[..., None], axis=-1)[..., 0] - lse
    if not with_entropy:
        return logps, None
    z = jax.lax.stop_gradient(z)
    entropy = jax.lax.stop_gradient(lse) - jnp.sum(jax.nn.softmax(z, axis=-1) * z, axis=-1)
    return logps, entropy


def sequence_logps(params, batch, cfg: ModelConfig, temperature: float, *,
                   remat: bool = False, with_entropy: bool = False, mesh=None, score_last: int | None = None,
                   group_size: int = 1):
    """Per-token log-probs [B, T] (0 at t=0) of batch["tokens_bt"] from one forward pass,
    and the per-token entropy [B, T] (or None). mesh: pins activations (see forward).

    score_last: when the completions sit in the last `score_last` columns (the pipeline's
    layout), only those positions go through the LM head; the others get log-prob 0. The
    head is ~20% of a small model's FLOPs per position and its float32 logits dominate
    activation memory, so this matters when prompts are longer than completions.

    group_size > 1 (with score_last): rows come in groups of `group_size` consecutive rows
    that share the same prompt columns (a GRPO group). The prompt is then run once per
    group and its keys/values are shared by the group's completions (`_group_hidden`):
    the same log-probs and gradients, with the prompt's FLOPs divided by the group size.
    """
    tokens = batch["tokens_bt"]
    scored = tokens.shape[1] - 1 if score_last is None else min(score_last, tokens.shape[1] - 1)
    if group_size > 1 and scored < tokens.shape[1] - 1:
        hidden = _group_hidden(params, batch, cfg, tokens.shape[1] - scored, group_size, remat, mesh)
    else:
        hidden, _ = forward(params, tokens[:, :-1], cfg, positions_bt=batch["positions_bt"][:, :-1],
                            attn_mask_bt=batch["attn_mask_bt"][:, :-1], remat=remat, mesh=mesh, return_hidden=True)
        hidden = hidden[:, -scored:]
    logits = constrain(logits_from_hidden(params, hidden, cfg), ("batch", "seq", "vocab"), mesh)
    logps, entropy = token_logps(logits, tokens[:, -scored:], temperature, with_entropy)
    pad = jnp.zeros((tokens.shape[0], tokens.shape[1] - scored), logps.dtype)
    logps = jnp.concatenate([pad, logps], axis=1)
    if entropy is not None:
        entropy = jnp.concatenate([pad, entropy], axis=1)
    return logps, entropy


def _group_hidden(params, batch, cfg: ModelConfig, prompt_width: int, n: int, remat: bool, mesh):
    """Final hidden states [B, T - prompt_width, D] that predict the completion columns.

    The prompt columns [0, prompt_width) of each group's first row go through the decoder
    once ([B / n, prompt_width]); the completion inputs of all rows then attend to those
    keys/values, repeated n times, as a read-only cache. The first completion token is
    predicted from the prompt's last position, shared by the group.
    """
    tokens, pos, mask = batch["tokens_bt"], batch["positions_bt"], batch["attn_mask_bt"].astype(bool)
    B, Tp = tokens.shape[0], prompt_width

    def leaders(x):  # [B, ...] -> [B / n, ...]: row 0 of each group, a local slice per device
        return x.reshape(B // n, n, *x.shape[1:])[:, 0]

    def repeat(x, axis):  # each group's entry n times along `axis` (the batch axis)
        return jnp.repeat(x, n, axis=axis, total_repeat_length=x.shape[axis] * n)

    prompt_mask = leaders(mask[:, :Tp])
    prompt_h, (k, v) = forward(params, leaders(tokens[:, :Tp]), cfg, positions_bt=leaders(pos[:, :Tp]),
                               attn_mask_bt=prompt_mask, remat=remat, mesh=mesh, return_hidden=True, return_kv=True)
    shared = KVCache(repeat(k, 1), repeat(v, 1), repeat(prompt_mask, 0))
    completion_h, _ = forward(params, tokens[:, Tp:-1], cfg, positions_bt=pos[:, Tp:-1], attn_mask_bt=mask[:, Tp:-1],
                              kv_cache=shared, cache_pos=Tp, write_cache=False, remat=remat, mesh=mesh,
                              return_hidden=True)
    return jnp.concatenate([repeat(prompt_h[:, -1:], 0), completion_h], axis=1)


def check_groups_share_prompts(batch: dict, group_size: int, prompt_width: int) -> None:
    """Raise ValueError unless every group of `group_size` consecutive rows has identical
    prompt columns (tokens, positions, attention mask) in [0, prompt_width)."""
    rows = batch["tokens_bt"].shape[0]
    if rows % group_size:
        raise ValueError(f"{rows} rows do not split into groups of {group_size}")
    for key in ("tokens_bt", "positions_bt", "attn_mask_bt"):
        x = np.asarray(batch[key])[:, :prompt_width].reshape(rows // group_size, group_size, prompt_width)
        if not (x == x[:, :1]).all():
            raise ValueError(f"train batch {key}: the rows of a group (of {group_size} consecutive rows) "
                             "differ in their prompt columns; groups must be contiguous and share one prompt")


def _split_micro_batches(batch: dict, micro_batches: int, group_size: int = 1) -> dict:
    """[B, ...] -> [M, B // M, ...]: micro-batch m holds groups m, m + M, ... of
    `group_size` consecutive rows (rows m, m + M, ... when group_size is 1; module doc)."""
    def split(x):
        x = x.reshape(x.shape[0] // (micro_batches * group_size), micro_batches, group_size, *x.shape[1:])
        return jnp.swapaxes(x, 0, 1).reshape(micro_batches, -1, *x.shape[3:])
    return {k: split(v) for k, v in batch.items()}


def _loss_settings(loss_cfg) -> dict:
    """policy_loss keyword arguments from any object with the LossSection attributes."""
    defaults = dict(agg="token_mean", clip_eps_low=0.2, clip_eps_high=0.2, beta=0.0,
                    clip_ratio_c=None, max_completion_length=None, importance_sampling_level="token",
                    tis_cap=None, top_entropy_quantile=1.0)
    if loss_cfg is None:
        return defaults
    return {k: getattr(loss_cfg, k, v) for k, v in defaults.items()}


class Trainer:
    """Holds the update's static settings and its compiled step.

    model_cfg: ModelConfig; optimizer: optax GradientTransformation; loss_cfg: object with
    the LossSection fields (agg, clip_eps_low, clip_eps_high, beta, clip_ratio_c,
    max_completion_length) or None for defaults; mesh: jax Mesh with ("dp","fsdp","tp").
    """

    def __init__(self, model_cfg: ModelConfig, optimizer: optax.GradientTransformation,
                 loss_cfg=None, *, mesh, micro_batches: int = 1, ppo_epochs: int = 1,
                 temperature: float = 1.0, remat: bool = False, with_entropy: bool = True,
                 score_last: int | None = None, group_size: int = 1, lora: lora_lib.LoraSpec | None = None,
                 dropout_seed: int = 0):
        self.cfg, self.optimizer, self.mesh = model_cfg, optimizer, mesh
        self.lora, self.dropout_seed = lora, int(dropout_seed)
        self.loss_kwargs = _loss_settings(loss_cfg)
        if self.loss_kwargs["agg"] == "seq_mean_token_sum_norm" and \
                self.loss_kwargs["max_completion_length"] is None:
            raise ValueError("seq_mean_token_sum_norm needs loss.max_completion_length "
                             "(resolve null to rollout.max_new_tokens before building the Trainer)")
        self.micro_batches, self.ppo_epochs = int(micro_batches), int(ppo_epochs)
        self.temperature, self.remat = temperature, remat
        self.with_entropy = with_entropy or self.loss_kwargs["top_entropy_quantile"] < 1.0
        self.score_last, self.group_size = score_last, int(group_size)
        # Exact only without a KL term and with every token in the loss (row_skip.py).
        self.skip_zero_advantage = (getattr(loss_cfg, "skip_zero_advantage", True) and self.loss_kwargs["beta"] == 0
                                    and self.loss_kwargs["top_entropy_quantile"] == 1.0)
        self._compiled = None
        self._jitted: dict = {}  # `_compile`'s jitted step per input sharding layout

    # ---- host-side entry points ------------------------------------------------------

    def init_opt_state(self, params):
        """Optimizer state; leaves that mirror params are sharded like them, the rest
        (counters, scalars) replicated. jit alone would leave the moments unsharded."""
        return jax.jit(self.optimizer.init, out_shardings=self._opt_shardings(params))(params)

    def abstract_opt_state(self, params):
        """ShapeDtypeStructs of `init_opt_state(params)`, with its shardings (params may be abstract)."""
        abstract = jax.eval_shape(self.optimizer.init, params)
        return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                            abstract, self._opt_shardings(params, abstract))

    def _opt_shardings(self, params, abstract=None):
        abstract = jax.eval_shape(self.optimizer.init, params) if abstract is None else abstract
        return optax.tree_utils.tree_map_params(
            self.optimizer, lambda _, p: p.sharding, abstract, params,
            transform_non_params=lambda _: replicated(self.mesh))

    def lower(self, params, opt_state, batch: dict, ref_params=None):
        """The step's program lowered for these (possibly abstract) inputs, e.g. to compile it
        for a device that is not here (grpo_core.aot); `step` runs the same program (with the
        skip's trip count added as `shard_batch` adds it)."""
        if self._skips(batch["tokens_bt"].shape[0] // jax.process_count()) and RUN_KEY not in batch:
            batch = dict(batch, **{RUN_KEY: jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated(self.mesh))})
        self._check_batch(batch, ref_params)
        return self._compile(params, opt_state).lower(params, opt_state, batch, ref_params)

    def informative_groups(self, local_batch: dict) -> int:
        """Groups of this process's rows that the update must run (all when not skipping)."""
        if not self.skip_zero_advantage:
            return local_batch["tokens_bt"].shape[0] // self.group_size
        return int(row_skip.informative_groups(local_batch, self.group_size).sum())

    def _skips(self, local_rows: int) -> bool:
        """Whether this process's batch of `local_rows` gets the zero-advantage skip."""
        local_shards = batch_shards(self.mesh) // jax.process_count()
        return (self.skip_zero_advantage and local_rows % (local_shards * self.micro_batches) == 0
                and local_rows % self.group_size == 0)

    def shard_batch(self, local_batch: dict, min_groups: int = 0) -> dict:
        """Global arrays sharded over the batch axes from this process's rows [B_local, ...].

        When the zero-advantage skip is exact (module doc) the groups are reordered so that
        the informative ones come first in micro-batch order, and RUN_KEY says how many
        micro-batches to run; min_groups: run at least as many as that many informative
        groups need (with several processes: the largest `informative_groups` of any
        process, so all run the same count). With group_size > 1 and score_last, checks that
        each group's rows share their prompt columns (the shared-prompt forward relies on it)."""
        rows = local_batch["tokens_bt"].shape[0]
        run = None
        if self._skips(rows):
            chunk = self._shared_group(rows * jax.process_count())
            local_batch, run = row_skip.arrange_batch(local_batch, self.group_size, self.micro_batches, chunk,
                                                      min_groups)
        if self.group_size > 1 and self.score_last is not None:
            width = local_batch["tokens_bt"].shape[1]
            check_groups_share_prompts(local_batch, self.group_size, width - min(self.score_last, width - 1))
        out = {k: jax.make_array_from_process_local_data(batch_sharding(self.mesh, v.ndim), v)
               for k, v in local_batch.items() if k in REQUIRED_KEYS + OPTIONAL_KEYS}
        if run is not None:
            out[RUN_KEY] = jax.make_array_from_process_local_data(replicated(self.mesh), np.asarray(run, np.int32))
        return out

    def step(self, params, opt_state, batch: dict, ref_params=None):
        """One training step. params and opt_state are donated: use the returned ones.

        batch: tokens_bt, positions_bt, attn_mask_bt, completion_mask_bt [B, T] and
        advantages_b [B] (optionally old_logps_bt, ref_logps_bt [B, T], and RUN_KEY), global
        arrays (see `shard_batch`). ref_params: frozen reference, needed when beta > 0 and the
        batch has no ref_logps_bt; with LoRA the frozen base (always needed) and params the
        adapters. Returns (params, opt_state, metrics of device scalars).
        """
        self._check_batch(batch, ref_params)
        if self._compiled is None:
            self._compiled = self._compile(params, opt_state)
        return self._compiled(params, opt_state, batch, ref_params)

    def _check_batch(self, batch: dict, ref_params) -> None:
        missing = [k for k in REQUIRED_KEYS if k not in batch]
        if missing:
            raise ValueError(f"train batch lacks {missing}")
        rows, shards = batch["tokens_bt"].shape[0], self.micro_batches * batch_shards(self.mesh)
        if rows % shards:
            raise ValueError(f"{rows} sequences do not split into {self.micro_batches} micro-batches "
                             f"x {batch_shards(self.mesh)} batch shards; use a multiple of {shards}")
        if self.lora is not None and ref_params is None:
            raise ValueError("a LoRA step needs the frozen base weights as ref_params")
        if self.loss_kwargs["beta"] > 0 and "ref_logps_bt" not in batch and ref_params is None:
            raise ValueError("loss.beta > 0 needs ref_params or batch['ref_logps_bt']")
        if self.loss_kwargs["tis_cap"] is not None and "sampler_logps_bt" not in batch:
            raise ValueError("loss.tis_cap needs the sampler's log-probs: batch['sampler_logps_bt']")

    def _compile(self, params, opt_state):
        """The jitted step for inputs sharded like these: outputs sharded exactly like the
        donated inputs, so buffers are reused. One jitted function per sharding layout, so
        that a program `lower(...).compile()` built (the warm start) is the one `step` runs,
        from jax's in-memory cache rather than compiled or loaded again."""
        shardings = lambda tree: jax.tree.map(lambda x: x.sharding, tree)
        param_shardings, opt_shardings = shardings(params), shardings(opt_state)
        key = tuple(jax.tree.leaves((param_shardings, opt_shardings))) + (jax.tree.structure((params, opt_state)),)
        if key not in self._jitted:
            def train_step(p, s, b, r):  # the name jax reports its compiles under (grpo_core.compiles)
                return self._update(p, s, b, r, param_shardings)
            self._jitted[key] = jax.jit(train_step, donate_argnums=(0, 1),
                                        out_shardings=(param_shardings, opt_shardings, None))
        return self._jitted[key]

    # ---- traced ----------------------------------------------------------------------

    def _update(self, params, opt_state, batch, ref_params, param_shardings):
        """All epochs of one step; returns (params, opt_state, metrics)."""
        mask = batch["completion_mask_bt"].astype(jnp.float32).at[:, 0].set(0.0)
        batch = dict(batch, completion_mask_bt=mask)
        run = batch.pop(RUN_KEY, None)  # the zero-advantage skip's trip count (module doc)
        den = loss_denominator(self.loss_kwargs["agg"], mask, self.loss_kwargs["max_completion_length"])
        group = self._shared_group(mask.shape[0])
        mbs = _split_micro_batches(batch, self.micro_batches, group)
        per_epoch = []
        for epoch in range(self.ppo_epochs):
            keep = epoch == 0 and self.ppo_epochs > 1
            grads, metrics, kept = self._accumulate(params, mbs, den, ref_params, param_shardings, keep, group, run,
                                                    epoch)
            mbs.update(kept)
            grad_norm = optax.tree.norm(grads)
            # Accumulated in float32; handed to the optimizer in the params' dtype so its
            # state keeps that dtype (no recompile on step 2, the memory the preflight expects).
            grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params)
            updates, opt_state = self.optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            per_epoch.append(dict(metrics, grad_norm=grad_norm))
        metrics = {k: sum(m[k] for m in per_epoch) / self.ppo_epochs for k in per_epoch[0]}
        metrics["tokens"] = jnp.sum(mask)
        rows = mask.shape[0]
        metrics["rows_run"] = jnp.float32(rows) if run is None else (run * (rows // self.micro_batches)).astype(jnp.float32)
        metrics["rows_total"] = jnp.float32(rows)
        return params, opt_state, metrics

    def _shared_group(self, rows: int) -> int:
        """How many consecutive rows share one prompt forward: gcd(group_size, rows per device
        per micro-batch). Such a run of rows lies inside one GRPO group and on one device, so
        each device runs one prompt per run of its own rows; a whole group when the device
        holds it, else part of one (e.g. 4 rows of a group of 8 on v6e-8 with 4 rows per
        device: prompt FLOPs / 4). 1 = no sharing."""
        n, m, shards = self.group_size, self.micro_batches, batch_shards(self.mesh)
        if n <= 1 or self.score_last is None or rows % (m * shards):
            return 1
        return math.gcd(n, rows // (m * shards))

    def _accumulate(self, params, mbs, den, ref_params, param_shardings, keep, group: int = 1, run=None,
                    epoch: int = 0):
        """Gradient (float32) and token-weighted metrics summed over the micro-batches: all of
        them, or the first `run` (a traced trip count: the zero-advantage skip)."""
        def micro_step(grads, sums, mb):
            (loss, (metrics, kept)), g = jax.value_and_grad(self._loss, has_aux=True)(
                params, mb, den, ref_params, group, epoch)
            grads = jax.tree.map(lambda a, b: a + b.astype(jnp.float32), grads, g)
            return grads, _add_metrics(sums, loss, metrics), (kept if keep else {})

        zeros = jax.tree.map(lambda p, s: jax.lax.with_sharding_constraint(
            jnp.zeros(p.shape, jnp.float32), s), params, param_shardings)
        if run is None:
            def body(carry, mb):
                grads, sums, kept = micro_step(*carry, mb)
                return (grads, sums), kept
            (grads, sums), kept = jax.lax.scan(body, (zeros, self._zero_sums()), mbs)
        else:
            # Buffers for the log-probs kept across epochs (traced for their shapes only when kept).
            first = jax.tree.map(lambda x: x[0], mbs)
            shapes = jax.eval_shape(lambda: micro_step(zeros, self._zero_sums(), first)[2]) if keep else {}
            kept = jax.tree.map(lambda s: jnp.zeros((self.micro_batches, *s.shape), s.dtype), shapes)

            def body(i, carry):
                grads, sums, kept = carry
                grads, sums, new = micro_step(grads, sums, jax.tree.map(lambda x: x[i], mbs))
                return grads, sums, jax.tree.map(lambda buf, x: buf.at[i].set(x), kept, new)
            grads, sums, kept = jax.lax.fori_loop(0, run, body, (zeros, self._zero_sums(), kept))
        tokens = jnp.maximum(sums.pop("tokens"), 1.0)
        metrics = {k: (v if k == "loss" else v / tokens) for k, v in sums.items()}
        return grads, metrics, kept

    def _policy_params(self, params, ref_params, mb, epoch: int):
        """The params the policy runs with: `params`, or with LoRA the base with the adapters attached."""
        if self.lora is None:
            return params
        key = lora_lib.dropout_key(self.dropout_seed, epoch, mb["tokens_bt"]) if self.lora.dropout > 0 else None
        return lora_lib.attach(ref_params, params, self.lora, key)

    def _loss(self, params, mb, den, ref_params, group: int = 1, epoch: int = 0):
        """Micro-batch loss (divided by the whole-batch `den`), metrics, and logps to keep."""
        logps, entropy = sequence_logps(self._policy_params(params, ref_params, mb, epoch), mb, self.cfg, self.temperature, remat=self.remat,
                                        with_entropy=self.with_entropy, mesh=self.mesh, score_last=self.score_last,
                                        group_size=group)
        old = mb.get("old_logps_bt")
        old = jax.lax.stop_gradient(logps) if old is None else old
        ref = mb.get("ref_logps_bt")
        if ref is None and self.loss_kwargs["beta"] > 0:
            ref = jax.lax.stop_gradient(sequence_logps(
                ref_params, mb, self.cfg, self.temperature, remat=self.remat, mesh=self.mesh,
                score_last=self.score_last, group_size=group)[0])
        loss, metrics = policy_loss(logps, old, mb["advantages_b"], mb["completion_mask_bt"],
                                    ref_logps=ref, normalizer=den, entropy=entropy,
                                    sampler_logps=mb.get("sampler_logps_bt"), **self.loss_kwargs)
        kept = {"old_logps_bt": old} | ({} if ref is None else {"ref_logps_bt": ref})
        return loss, (metrics, kept)

    def _zero_sums(self) -> dict:
        names = ["loss", "tokens", "clip_frac_low", "clip_frac_high", "ratio_mean", "pg_loss"]
        names += ["clip_frac_dual"] if self.loss_kwargs["clip_ratio_c"] is not None else []
        names += ["entropy"] if self.with_entropy else []
        names += ["kl"] if self.loss_kwargs["beta"] > 0 else []
        names += ["entropy_selected_frac"] if self.loss_kwargs["top_entropy_quantile"] < 1.0 else []
        names += ["tis_weight_mean"] if self.loss_kwargs["tis_cap"] is not None else []
        return {k: jnp.zeros((), jnp.float32) for k in names}


def _add_metrics(sums: dict, loss, metrics: dict) -> dict:
    """Running sums: the loss adds up (whole-batch denominator); token means are weighted."""
    out = dict(sums, loss=sums["loss"] + loss, tokens=sums["tokens"] + metrics["tokens"])
    for k in sums:
        if k in _TOKEN_MEAN_METRICS:
            out[k] = sums[k] + metrics[k] * metrics["tokens"]
    return out

