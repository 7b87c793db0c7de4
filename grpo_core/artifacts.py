"""Phase artifacts: Arrow schemas, atomic Parquet writes, checksums.

Each phase of a training step writes one Parquet file that plain pyarrow/pandas can
read. Rows are sequences in group-contiguous order (prompt g, sample j at row g*n + j);
every table starts with the same id columns so tables of one step line up row by row.

Columns (SCHEMA_VERSION 1):
- ids (all tables): step, prompt_id (stable id of the prompt in its data source),
  group_id (prompt index within the step), sample_id (index within the group).
- rollout: question, ground_truth, prompt_ids (list<int32>), completion_ids (list<int32>),
  completion_text, old_logps (list<float32>, per completion token, the sampler's own
  log-probs at the rollout temperature), finish_reason ("eos" | "length"),
  prompt_length, completion_length.
- reward: reward_<name> per reward function (unweighted), reward_total (weighted sum).
- advantage: reward_total, advantage.
"""
import hashlib
import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA_VERSION = 1

ID_FIELDS = [
    pa.field("step", pa.int32()),
    pa.field("prompt_id", pa.int64()),
    pa.field("group_id", pa.int32()),
    pa.field("sample_id", pa.int32()),
]

ROLLOUT_SCHEMA = pa.schema(
    ID_FIELDS
    + [
        pa.field("question", pa.string()),
        pa.field("ground_truth", pa.string()),
        pa.field("prompt_ids", pa.list_(pa.int32())),
        pa.field("completion_ids", pa.list_(pa.int32())),
        pa.field("completion_text", pa.string()),
        pa.field("old_logps", pa.list_(pa.float32())),
        pa.field("finish_reason", pa.string()),
        pa.field("prompt_length", pa.int32()),
        pa.field("completion_length", pa.int32()),
    ]
)


def reward_schema(reward_names: list[str]) -> pa.Schema:
    fields = [pa.field(f"reward_{name}", pa.float32()) for name in reward_names]
    return pa.schema(ID_FIELDS + fields + [pa.field("reward_total", pa.float32())])


ADVANTAGE_SCHEMA = pa.schema(
    ID_FIELDS + [pa.field("reward_total", pa.float32()), pa.field("advantage", pa.float32())]
)


def id_columns(table: pa.Table) -> dict[str, pa.Array]:
    """The id columns of a phase table, to start the next phase's table with."""
    return {f.name: table.column(f.name) for f in ID_FIELDS}


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temp file in the same directory, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_table(table: pa.Table, path: str | Path) -> str:
    """Atomically write `table` as Parquet (temp file + rename); returns its sha256."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    atomic_write_bytes(path, sink.getvalue().to_pybytes())
    return sha256_file(path)


def read_table(path: str | Path) -> pa.Table:
    return pq.read_table(path)


def file_is_intact(path: str | Path, sha256: str) -> bool:
    """True when `path` exists and its content still has the recorded checksum."""
    path = Path(path)
    return path.is_file() and sha256_file(path) == sha256
