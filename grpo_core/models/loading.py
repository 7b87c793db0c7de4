"""HF-format checkpoint directories <-> `Model`.

`load_pretrained` reads config.json + *.safetensors (one file or a sharded
`model.safetensors.index.json`) straight into our stacked params pytree. With a mesh,
every leaf is built by `jax.make_array_from_callback`: each device's shard is assembled
from only the rows/columns of the per-layer safetensors tensors it owns (memory-mapped
slices), so the full model never sits on one device or, stacked, in host memory.

`save_pretrained` writes the same format (HF tensor names, `{"format": "pt"}` metadata so
transformers reads it), for exports and for the tiny checkpoints the tests build.
Tokenizers load through `PreTrainedTokenizerFast` (tokenizer.json), which imports no
torch -- `AutoTokenizer` does, so it is not used here.
"""
from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from grpo_core.errors import UserError
from grpo_core.models.config import ModelConfig
from grpo_core.models.decoder import param_logical_axes, param_shapes
from grpo_core.models.hf_names import LAYER_NAMES, TOP_NAMES, hf_state_from_params, params_from_hf_state
from grpo_core.models.model import Model

_INDEX = "model.safetensors.index.json"
_LAYER = "model.layers.{i}."


class SafetensorsDir:
    """Tensor name -> memory-mapped safetensors handle for one checkpoint directory."""

    def __init__(self, path: Path):
        from safetensors import safe_open

        index = path / _INDEX
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            files = sorted(set(weight_map.values()))
        else:
            files = sorted(p.name for p in path.glob("*.safetensors"))
            weight_map = None
        if not files:
            raise UserError(f"{str(path)!r} has no *.safetensors files; point model.path at an HF-format checkpoint.")
        handles = {name: safe_open(path / name, framework="numpy") for name in files}
        if weight_map is None:
            weight_map = {key: name for name, handle in handles.items() for key in handle.keys()}
        self._path, self._handles, self._map = path, handles, weight_map

    def _handle(self, name: str):
        if name not in self._map:
            raise UserError(f"checkpoint {str(self._path)!r} has no tensor {name!r}; is config.json for this checkpoint?")
        return self._handles[self._map[name]]

    def get_tensor(self, name: str) -> np.ndarray:
        """The whole tensor `name` (torch layout)."""
        return self._handle(name).get_tensor(name)

    def get_slice(self, name: str, index: tuple) -> np.ndarray:
        """Only `tensor[index]` of `name` (index: tuple of slices), read from the mmap."""
        return self._handle(name).get_slice(name)[index]


def read_config(path: str | Path) -> ModelConfig:
    """`ModelConfig` of the HF-format directory `path`; UserError when it is missing."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"model directory {str(path)!r} does not exist; run `grpo models pull` or fix model.path.")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise UserError(f"{str(config_file)!r} is missing; model.path must be an HF-format directory with config.json.")
    return ModelConfig.from_hf(json.loads(config_file.read_text()))


def load_tokenizer(path: str | Path):
    """`PreTrainedTokenizerFast` from `path/tokenizer.json` (+ tokenizer_config.json), or None."""
    path = Path(path)
    if not (path / "tokenizer.json").is_file():
        return None
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(path))


def load_pretrained(path: str | Path, dtype: str = "float32", mesh: jax.sharding.Mesh | None = None) -> Model:
    """Load an HF-format directory into a `Model` with params in `dtype` (e.g. "bfloat16").

    Without a mesh the params are single-device arrays; with one, each leaf is a global
    array sharded by the logical-axis rules of `grpo_core.sharding`.
    """
    cfg = read_config(path)
    try:
        np_dtype = np.dtype(jnp.dtype(dtype))
    except TypeError as err:
        raise UserError(f"model dtype {dtype!r} is not a dtype; use float32 or bfloat16.") from err
    tensors = SafetensorsDir(Path(path))
    if mesh is None:
        params = jax.device_put(params_from_hf_state(cfg, tensors.get_tensor, np_dtype))
    else:
        params = _load_sharded(cfg, tensors, np_dtype, mesh)
    return Model(cfg, params, load_tokenizer(path))


def _leaf_source(name: str) -> tuple[str, str]:
    """(HF name, kind) for a leaf; layer leaves take a `{i}`-formatted prefix."""
    if name in LAYER_NAMES:
        hf_name, kind = LAYER_NAMES[name]
        return _LAYER + hf_name, kind
    return TOP_NAMES[name], "transpose" if name == "lm_head" else "vector"


def _read_shard(tensors: SafetensorsDir, hf_name: str, kind: str, shape: tuple, index: tuple) -> np.ndarray:
    """Our-layout block `index` (slices over `shape`, no L axis) of one torch-layout tensor.

    Kinds follow hf_names: in_heads [N*Hd, D] -> [D, N, Hd]; heads_out [D, N*Hd] -> [N, Hd, D];
    transpose [out, in] -> [in, out]; vector/heads are small and read whole.
    """
    if kind == "vector":
        return tensors.get_slice(hf_name, index)
    if kind == "heads":
        return tensors.get_tensor(hf_name).reshape(shape)[index]
    if kind == "transpose":
        return tensors.get_slice(hf_name, index[::-1]).T
    heads, head_dim = (shape[1], shape[2]) if kind == "in_heads" else (shape[0], shape[1])
    s_n, s_h = (index[1], index[2]) if kind == "in_heads" else (index[0], index[1])
    n0, n1, _ = s_n.indices(heads)
    rows = slice(n0 * head_dim, n1 * head_dim)  # whole heads are contiguous rows/cols
    if kind == "in_heads":
        block = tensors.get_slice(hf_name, (rows, index[0])).T  # [d, n*Hd]
        return block.reshape(block.shape[0], n1 - n0, head_dim)[:, :, s_h]
    block = tensors.get_slice(hf_name, (index[2], rows)).T  # [n*Hd, d]
    return block.reshape(n1 - n0, head_dim, block.shape[1])[:, s_h, :]


def _sharded_leaf(tensors, name, shape, sharding, stacked: bool, np_dtype) -> jax.Array:
    """One global array of `shape` whose shards are read straight from the checkpoint."""
    hf_name, kind = _leaf_source(name)

    def shard(index: tuple) -> np.ndarray:
        if not stacked:
            return np.asarray(_read_shard(tensors, hf_name, kind, shape, index), np_dtype)
        layers = range(*index[0].indices(shape[0]))
        blocks = [_read_shard(tensors, hf_name.format(i=i), kind, shape[1:], index[1:]) for i in layers]
        return np.stack(blocks).astype(np_dtype)

    return jax.make_array_from_callback(shape, sharding, shard)


def _load_sharded(cfg: ModelConfig, tensors: SafetensorsDir, np_dtype, mesh) -> dict:
    """Params pytree of global arrays sharded over `mesh` by the logical-axis rules."""
    from grpo_core.sharding import named_sharding

    shapes, axes = param_shapes(cfg), param_logical_axes(cfg)

    def leaf(name, stacked):
        shape = (shapes["layers"] if stacked else shapes)[name]
        names = (axes["layers"] if stacked else axes)[name]
        sharding = named_sharding(mesh, names, shape)
        return _sharded_leaf(tensors, name, shape, sharding, stacked, np_dtype)

    params = {name: leaf(name, False) for name in shapes if name != "layers"}
    params["layers"] = {name: leaf(name, True) for name in shapes["layers"]}
    return params


def save_hf_state(state: dict[str, np.ndarray], cfg: ModelConfig, dest: str | Path,
                  tokenizer=None, max_shard_bytes: int | None = None) -> Path:
    """Write config.json + safetensors (sharded with an index past `max_shard_bytes`) + tokenizer.

    `state`: HF tensor name -> torch-layout array. Older safetensors files in `dest` are
    removed first so a stale index cannot shadow the new weights.
    """
    from safetensors.numpy import save_file

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for old in [*dest.glob("*.safetensors"), dest / _INDEX]:
        old.unlink(missing_ok=True)
    shards = _split_shards(state, max_shard_bytes)
    names = ["model.safetensors"] if len(shards) == 1 else [
        f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors" for k in range(len(shards))
    ]
    for name, shard in zip(names, shards):
        save_file({k: np.ascontiguousarray(v) for k, v in shard.items()}, dest / name, metadata={"format": "pt"})
    if len(shards) > 1:
        weight_map = {key: name for name, shard in zip(names, shards) for key in shard}
        total = sum(v.nbytes for v in state.values())
        (dest / _INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    hf_config = {**cfg.to_hf(), "torch_dtype": str(next(iter(state.values())).dtype)}
    (dest / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    if tokenizer is not None:
        # One self-contained tokenizer_config.json (chat template inside), readable by older transformers.
        tokenizer.save_pretrained(str(dest), save_jinja_files=False)
    return dest


def _split_shards(state: dict[str, np.ndarray], max_shard_bytes: int | None) -> list[dict]:
    """Greedy split of `state` (in order) into dicts of at most `max_shard_bytes` each."""
    shards, size = [{}], 0
    for key, value in state.items():
        if max_shard_bytes and shards[-1] and size + value.nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = value
        size += value.nbytes
    return shards


def save_pretrained(model_or_params, cfg: ModelConfig | None, dest: str | Path,
                    tokenizer=None, max_shard_bytes: int | None = None) -> Path:
    """Export a `Model` (or a params pytree with its `cfg`) as an HF-format directory."""
    if isinstance(model_or_params, Model):
        cfg = cfg or model_or_params.config
        tokenizer = tokenizer or model_or_params.tokenizer
        params = model_or_params.params
    else:
        params = model_or_params
    if cfg is None:
        raise UserError("save_pretrained needs the ModelConfig (cfg) when given a bare params pytree.")
    state = hf_state_from_params(cfg, jax.device_get(params))
    return save_hf_state(state, cfg, dest, tokenizer=tokenizer, max_shard_bytes=max_shard_bytes)
