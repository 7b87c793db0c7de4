"""Tiny run configs shared by the pipeline tests (a random tiny-llama and the byte tokenizer)."""
from schemas import build_run_config

TINY = {
    "model": {"name_or_path": "tiny-llama", "init": "random", "tokenizer": "byte"},
    "data": {"num_train": 32, "num_eval": 4, "system_prompt": None},
    "rollout": {"batch_size": 4, "n": 2, "max_new_tokens": 6, "max_prompt_tokens": 64, "temperature": 1.0},
    "train": {"steps": 2, "optimizer": {"name": "adamw", "lr_schedule": {"type": "constant", "peak_value": 1e-2,
                                                                          "warmup_ratio": 0.0}}},
    # states_number varies on a random model's byte soup, so advantages and updates are not all 0.
    "rewards": [{"name": "gsm8k_correct", "weight": 1.0}, {"name": "states_number", "weight": 1.0}],
    "checkpoint": {"every_steps": 1},
    "logging": {"progress_bar": False},
}


def tiny_config(*overrides: str):
    import copy

    return build_run_config(copy.deepcopy(TINY), list(overrides))


def write_tiny_config(path, comment: str, **sections):
    """TINY with each given section's fields updated (a new section for one TINY lacks),
    written as a YAML run config at `path` under a `# comment` line; returns the path."""
    import copy

    import yaml

    body = copy.deepcopy(TINY)
    for name, fields in sections.items():
        body.setdefault(name, {}).update(fields)
    path.write_text(f"# {comment}\n" + yaml.safe_dump(body))
    return path


def read_wandb_history(path) -> list[dict]:
    """History rows of an offline W&B run file (.wandb): a leveldb-style log of protobuf Records.

    After a 7-byte file header, records sit in 32 KiB blocks as (crc32 u32, length u16,
    type u8, payload); type 1 is a whole record, 2/3/4 its first/middle/last fragments.
    """
    import json
    import struct

    from wandb.proto import wandb_internal_pb2

    data, pos, block, payloads, partial = open(path, "rb").read(), 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            break
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 1:
            payloads.append(chunk)
        elif kind in (2, 3):
            partial = (b"" if kind == 2 else partial) + chunk
        elif kind == 4:
            payloads.append(partial + chunk)
    rows = []
    for payload in payloads:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        if record.WhichOneof("record_type") == "history":
            rows.append({item.nested_key[0] if item.nested_key else item.key: json.loads(item.value_json)
                         for item in record.history.item})
    return rows
