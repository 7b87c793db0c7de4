"""Prompts for GRPO: GSM8K loading, a synthetic GSM8K-format generator, a resumable stream.

No model hub is reachable on our machines, so the offline default is `synthetic_problems`:
seeded arithmetic word problems in GSM8K's exact format (a worked answer with
`<<a+b=c>>` calculator annotations, ending in `#### N`). `difficulty` is the number of
arithmetic operations; at difficulty 1 the numbers are single digits, so a 135M chat model
gets some right and GRPO has a reward signal to climb. Problem i depends only on
(seed, difficulty, i): growing `num_train` never changes the held-out eval problems.

`PromptStream` serves training prompts in a seeded order that is reshuffled every epoch.
Its position is a tiny dict (`state()`) saved with every checkpoint, so a resumed run
draws exactly the prompts an uninterrupted run would have drawn.
"""
from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from grpo_core.errors import UserError
from grpo_core.rewards import ground_truth

__all__ = ["PromptStream", "ground_truth", "load_problems", "make_prompt_stream", "synthetic_problems"]

_GSM8K_HINT = "use data.source=synthetic or a local .parquet/.jsonl path with question and answer columns"
_COLUMNS = ("question", "answer")
_MAX_VALUE = 200  # keeps every intermediate result small enough for a tiny model

# ---- synthetic GSM8K-format problems ---------------------------------------------------

_PEOPLE = (
    ("Tom", "he", "him", "his"), ("Anna", "she", "her", "her"), ("Liam", "he", "him", "his"),
    ("Maria", "she", "her", "her"), ("Sam", "he", "him", "his"), ("Emma", "she", "her", "her"),
    ("Noah", "he", "him", "his"), ("Lucy", "she", "her", "her"), ("Omar", "he", "him", "his"),
    ("Priya", "she", "her", "her"), ("Jack", "he", "him", "his"), ("Mia", "she", "her", "her"),
    ("Leo", "he", "him", "his"), ("Zoe", "she", "her", "her"), ("Ben", "he", "him", "his"),
    ("Sara", "she", "her", "her"),
)
_RELATIONS = ("brother", "sister", "friend", "neighbor", "cousin", "classmate")
_OBJECTS = (
    "apples", "marbles", "stickers", "pencils", "cookies", "books", "stamps", "shells",
    "cards", "balloons", "coins", "oranges", "crayons", "toy cars", "beads", "cupcakes",
)
# Each template: (question sentence, answer phrase). {p}/{P}: pronoun, {o}: object pronoun,
# {f}/{F}: a relative ("his sister"), {b}: the operand, {things}: the objects.
_TEMPLATES = {
    "+": (
        ("{P} buys {b} more.", "After buying {b} more"),
        ("{P} finds {b} more.", "After finding {b} more"),
        ("{F} gives {o} {b} more.", "After getting {b} more"),
        ("Then {p} wins {b} more at a fair.", "After winning {b} more"),
    ),
    "-": (
        ("{P} gives {b} to {f}.", "After giving away {b}"),
        ("{P} loses {b} of them.", "After losing {b}"),
        ("{P} sells {b} of them.", "After selling {b}"),
    ),
    "*": (
        ("Then the number of {things} {p} has becomes {b} times as large.", "Multiplying by {b}"),
        ("After a trade, {p} has {b} times as many {things} as before.", "With {b} times as many"),
    ),
    "/": (
        ("{P} splits them into {b} equal groups and keeps one group.", "Keeping one of {b} equal groups"),
        ("{P} divides them equally into {b} bags and keeps one bag.", "Keeping one of {b} equal bags"),
    ),
}


def _pick_operation(rng: random.Random, value: int) -> tuple[str, int, int]:
    """(symbol, operand, result) for one step from `value`; results stay in 2.._MAX_VALUE (plurals)."""
    options = ["+"]
    if value > 2:
        options.append("-")
    if value * 2 <= _MAX_VALUE:
        options.append("*")
    divisors = [d for d in range(2, 6) if value % d == 0 and value >= 2 * d]
    if divisors:
        options.append("/")
    symbol = rng.choice(options)
    if symbol == "+":
        b = rng.randint(1, 9)
        return symbol, b, value + b
    if symbol == "-":
        b = rng.randint(1, min(9, value - 2))
        return symbol, b, value - b
    if symbol == "*":
        b = rng.randint(2, min(4, _MAX_VALUE // value))
        return symbol, b, value * b
    b = rng.choice(divisors)
    return symbol, b, value // b


def _one_problem(rng: random.Random, difficulty: int) -> dict:
    """One GSM8K-format problem with `difficulty` operations."""
    name, pronoun, obj, possessive = rng.choice(_PEOPLE)
    things, friend = rng.choice(_OBJECTS), f"{possessive} {rng.choice(_RELATIONS)}"
    value = rng.randint(2, 9)
    question = [f"{name} has {value} {things}."]
    answer = [f"{name} starts with {value} {things}."]
    for _ in range(difficulty):
        symbol, b, result = _pick_operation(rng, value)
        asks, tells = rng.choice(_TEMPLATES[symbol])
        fields = dict(p=pronoun, P=pronoun.capitalize(), o=obj, f=friend, F=friend.capitalize(), b=b, things=things)
        question.append(asks.format(**fields))
        expression = f"{value}{symbol}{b}"
        worked = f"{expression}=<<{expression}={result}>>{result}"  # GSM8K's calculator annotation
        answer.append(f"{tells.format(**fields)}, {pronoun} has {worked} {things}.")
        value = result
    question.append(f"How many {things} does {name} have now?")
    answer.append(f"#### {value}")
    return {"question": " ".join(question), "answer": "\n".join(answer), "difficulty": difficulty}


def synthetic_problems(n: int, difficulty: int = 1, seed: int = 0) -> list[dict]:
    """`n` seeded GSM8K-format word problems: dicts with question, answer, difficulty.

    Problem i is drawn from its own generator seeded by (seed, difficulty, i), so the result
    is identical for a seed on every machine and the first k problems never depend on n.
    """
    if not 1 <= difficulty <= 5:
        raise UserError(f"data.difficulty={difficulty} is out of range; use 1 to 5.")
    return [_one_problem(random.Random(f"{seed}:{difficulty}:{i}"), difficulty) for i in range(n)]


# ---- loading ---------------------------------------------------------------------------


def _load_hub_gsm8k(split: str) -> list[dict]:
    """openai/gsm8k (config main) through `datasets`; UserError when the hub is unreachable."""
    try:
        from datasets import load_dataset

        rows = load_dataset("openai/gsm8k", "main", split=split)
    except Exception as err:  # offline, missing split, auth: all have the same remedy
        raise UserError(f"could not load openai/gsm8k from the hub (offline?); {_GSM8K_HINT}.") from err
    return [{"question": row["question"], "answer": row["answer"]} for row in rows]


def _read_rows(path: Path) -> list[dict]:
    """Rows of a .parquet (pyarrow) or .jsonl file as dicts."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise UserError(f"{str(path)!r} line {number} is not valid JSON; fix the file.") from err
    return rows


def _load_file(path: Path) -> list[dict]:
    """GSM8K-column rows (question, answer) of a local .parquet or .jsonl file."""
    if not path.is_file():
        raise UserError(f"data.source file {str(path)!r} does not exist; fix data.source.")
    try:
        rows = _read_rows(path)
    except (OSError, ValueError) as err:  # ArrowInvalid and UnicodeDecodeError are ValueErrors
        raise UserError(f"could not read {str(path)!r} ({err}); data.source must be a valid file.") from err
    if not rows:
        raise UserError(f"{str(path)!r} has no rows; data.source needs question and answer rows.")
    for column in _COLUMNS:
        if any(not isinstance(row, dict) or column not in row for row in rows):
            raise UserError(f"{str(path)!r} has no {column!r} column; data.source needs question and answer columns.")
    for number, row in enumerate(rows):
        _checked_ground_truth(row["answer"], f"{str(path)!r} row {number}")
    return [{"question": str(row["question"]), "answer": str(row["answer"])} for row in rows]


def _checked_ground_truth(answer: str, where: str) -> str:
    """`ground_truth(answer)`, or a UserError naming `where` the answer has no '#### N'."""
    try:
        return ground_truth(str(answer))
    except ValueError as err:
        raise UserError(f"{where}: the answer does not end in '#### N'; use GSM8K-format answers.") from err


def load_problems(
    source: str, split: str = "train", *, n: int | None = None, difficulty: int = 1, seed: int = 0
) -> list[dict]:
    """Problems (dicts with question and answer) from `source`.

    source: 'synthetic' (needs n), 'gsm8k' (openai/gsm8k `split` from the hub), or a path
    ending in .parquet/.jsonl. For hub and file sources, n (if given) keeps the first n rows.
    """
    if source == "synthetic":
        if n is None:
            raise ValueError("synthetic problems need n")
        return synthetic_problems(n, difficulty, seed)
    if source == "gsm8k":
        problems = _load_hub_gsm8k(split)
    elif source.endswith((".parquet", ".jsonl")):
        problems = _load_file(Path(source))
    else:
        raise UserError(f"data.source={source!r} is unknown; use synthetic, gsm8k or a .parquet/.jsonl path.")
    return problems if n is None else problems[:n]


# ---- the resumable stream ----------------------------------------------------------------


class PromptStream:
    """Held-out eval prompts plus an endless, seeded, per-epoch shuffled train stream.

    The first `num_eval` problems are the eval set; the rest are trained on. Items are dicts
    {"prompt_id", "question", "answer", "ground_truth"}; prompt_id is the problem's index in
    `problems`, stable across epochs and restarts.
    """

    def __init__(self, problems: Sequence[dict], num_eval: int = 0, seed: int = 0, shuffle: bool = True):
        if len(problems) <= num_eval:
            raise UserError(
                f"data.num_eval={num_eval} leaves no training prompts out of {len(problems)}; "
                "lower data.num_eval or add problems."
            )
        items = [
            {
                "prompt_id": i,
                "question": p["question"],
                "answer": p["answer"],
                "ground_truth": _checked_ground_truth(p["answer"], f"problem {i}"),
            }
            for i, p in enumerate(problems)
        ]
        self.eval_items, self.train_items = items[:num_eval], items[num_eval:]
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.position = 0, 0
        self._order = self._epoch_order(0)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        """Permutation of train indices for `epoch` ([N_train] int); a pure function of (seed, epoch)."""
        if not self.shuffle:
            return np.arange(len(self.train_items))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.train_items))

    def next_batch(self, k: int) -> list[dict]:
        """The next `k` train items, continuing into the next epoch (reshuffled) as needed."""
        batch = []
        while len(batch) < k:
            if self.position == len(self._order):
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._epoch_order(self.epoch)
            take = min(k - len(batch), len(self._order) - self.position)
            chosen = self._order[self.position : self.position + take]
            batch.extend(dict(self.train_items[i]) for i in chosen)
            self.position += take
        return batch

    def state(self) -> dict:
        """JSON-able position for a checkpoint: epoch, position, seed, num_train."""
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "num_train": len(self.train_items)}

    def restore(self, state: dict) -> None:
        """Continue from a `state()`; UserError when the training set changed since then."""
        if int(state["num_train"]) != len(self.train_items):
            raise UserError(
                f"the checkpoint's data stream had {state['num_train']} training prompts, this config has "
                f"{len(self.train_items)}; resume with the same data settings or start a new run directory."
            )
        self.seed, self.epoch, self.position = int(state["seed"]), int(state["epoch"]), int(state["position"])
        self._order = self._epoch_order(self.epoch)


def make_prompt_stream(data) -> PromptStream:
    """The `PromptStream` a `data:` config section (schemas.data.DataSection) describes."""
    problems = load_problems(
        data.source, data.split, n=data.num_eval + data.num_train if data.source == "synthetic" else None,
        difficulty=data.difficulty, seed=data.seed,
    )
    return PromptStream(problems, num_eval=data.num_eval, seed=data.seed, shuffle=data.shuffle)
