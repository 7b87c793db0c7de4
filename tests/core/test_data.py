"""grpo_core.data: synthetic problems, loading, ground truth, the resumable PromptStream."""
import json
import re
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from grpo_core import data
from grpo_core.data import PromptStream, ground_truth, load_problems, make_prompt_stream, synthetic_problems
from grpo_core.errors import UserError

_ANNOTATION = re.compile(r"<<(\d+)([-+*/])(\d+)=(\d+)>>")


# ---- synthetic problems -------------------------------------------------------------------


def test_synthetic_is_deterministic_for_a_seed_and_varies_with_it():
    assert synthetic_problems(20, 2, seed=7) == synthetic_problems(20, 2, seed=7)
    assert synthetic_problems(20, 2, seed=7) != synthetic_problems(20, 2, seed=8)


def test_synthetic_prefix_does_not_depend_on_n():
    assert synthetic_problems(50, 3, seed=1)[:10] == synthetic_problems(10, 3, seed=1)


@pytest.mark.parametrize("difficulty", [1, 2, 3, 4, 5])
def test_synthetic_answers_are_gsm8k_format_and_arithmetically_right(difficulty):
    for problem in synthetic_problems(200, difficulty, seed=3):
        steps = _ANNOTATION.findall(problem["answer"])
        assert len(steps) == problem["difficulty"] == difficulty
        for a, op, b, result in steps:
            assert eval(f"{a}{op}{b}") == int(result)  # exact: divisions are chosen divisible
        for (_, _, _, result), (a, _, _, _) in zip(steps, steps[1:]):
            assert result == a  # each step continues from the previous result
        assert problem["answer"].endswith(f"#### {steps[-1][3]}")
        assert ground_truth(problem["answer"]) == steps[-1][3]
        assert problem["question"].endswith("have now?")
        assert 2 <= int(steps[-1][3]) <= data._MAX_VALUE


def test_synthetic_difficulty_one_is_easy_and_varied():
    problems = synthetic_problems(200, 1, seed=0)
    assert all(int(ground_truth(p["answer"])) <= 36 for p in problems)
    assert len({p["question"] for p in problems}) > 150
    names = {p["question"].split()[0] for p in problems}
    objects = {p["question"].split("How many ")[1].split(" does")[0] for p in problems}
    assert len(names) >= 10 and len(objects) >= 10


def test_synthetic_rejects_bad_difficulty():
    with pytest.raises(UserError, match="difficulty"):
        synthetic_problems(3, 6, seed=0)


# ---- ground truth and loading -------------------------------------------------------------


def test_ground_truth_strips_commas_and_takes_the_last_marker():
    assert ground_truth("So 1000+200=<<1000+200=1200>>1200.\n#### 1,200") == "1200"
    assert ground_truth("x #### 3\ny #### 42") == "42"


def _rows():
    return [
        {"question": f"What is {i}+1?", "answer": f"{i}+1=<<{i}+1={i + 1}>>{i + 1}\n#### {i + 1}"} for i in range(5)
    ]


def test_load_jsonl_and_parquet(tmp_path):
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("\n".join(json.dumps({**row, "extra": 1}) for row in _rows()) + "\n\n")
    parquet = tmp_path / "p.parquet"
    pq.write_table(pa.Table.from_pylist(_rows()), parquet)
    assert load_problems(str(jsonl)) == _rows()
    assert load_problems(str(parquet), n=2) == _rows()[:2]


def test_load_file_errors_name_the_file_and_column(tmp_path):
    with pytest.raises(UserError, match="missing.jsonl.*does not exist"):
        load_problems(str(tmp_path / "missing.jsonl"))
    no_answer = tmp_path / "q.parquet"
    pq.write_table(pa.Table.from_pylist([{"question": "q"}]), no_answer)
    with pytest.raises(UserError, match="q.parquet.*'answer' column"):
        load_problems(str(no_answer))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "answer": "no marker"}) + "\n")
    with pytest.raises(UserError, match="bad.jsonl.*row 0.*#### N"):
        load_problems(str(bad))
    garbage = tmp_path / "garbage.parquet"
    garbage.write_text("not parquet")
    with pytest.raises(UserError, match="garbage.parquet"):
        load_problems(str(garbage))


def test_load_gsm8k_offline_is_a_user_error(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    message = r"could not load openai/gsm8k from the hub \(offline\?\); use data.source=synthetic"
    with pytest.raises(UserError, match=message):
        load_problems("gsm8k", "train")


def test_load_gsm8k_passes_name_config_and_split(monkeypatch):
    import datasets

    calls = []

    def fake(*args, **kwargs):
        calls.append((args, kwargs))
        return _rows()

    monkeypatch.setattr(datasets, "load_dataset", fake)
    assert load_problems("gsm8k", "test", n=3) == _rows()[:3]
    assert calls == [(("openai/gsm8k", "main"), {"split": "test"})]


# ---- PromptStream -------------------------------------------------------------------------


def _stream(shuffle=True, seed=5):
    return PromptStream(synthetic_problems(13, 1, seed=0), num_eval=3, seed=seed, shuffle=shuffle)


def test_stream_splits_eval_first_and_items_carry_ids_and_ground_truth():
    stream = _stream()
    assert [item["prompt_id"] for item in stream.eval_items] == [0, 1, 2]
    item = stream.next_batch(1)[0]
    assert set(item) == {"prompt_id", "question", "answer", "ground_truth"}
    assert item["prompt_id"] >= 3 and item["ground_truth"] == ground_truth(item["answer"])


def test_stream_epochs_cover_the_train_set_in_a_new_order_each_epoch():
    stream = _stream()
    first = [item["prompt_id"] for item in stream.next_batch(10)]
    second = [item["prompt_id"] for item in stream.next_batch(10)]
    assert sorted(first) == sorted(second) == list(range(3, 13))
    assert first != second and stream.state()["epoch"] == 1
    assert [i["prompt_id"] for i in _stream(shuffle=False).next_batch(12)] == list(range(3, 13)) + [3, 4]


def test_stream_is_seeded():
    assert _stream(seed=1).next_batch(10) == _stream(seed=1).next_batch(10)
    assert _stream(seed=1).next_batch(10) != _stream(seed=2).next_batch(10)


def test_restored_stream_yields_exactly_the_same_next_prompts():
    stream = _stream()
    stream.next_batch(4)
    stream.next_batch(8)  # crosses into epoch 1
    saved = json.loads(json.dumps(stream.state()))
    expected = [stream.next_batch(3) for _ in range(5)]
    resumed = _stream()
    resumed.restore(saved)
    assert [resumed.next_batch(3) for _ in range(5)] == expected


def test_restore_refuses_a_changed_training_set():
    state = _stream().state()
    other = PromptStream(synthetic_problems(20, 1, seed=0), num_eval=3, seed=5)
    with pytest.raises(UserError, match="training prompts"):
        other.restore(state)


def test_stream_needs_training_prompts():
    with pytest.raises(UserError, match="num_eval"):
        PromptStream(synthetic_problems(3, 1), num_eval=3)


def test_make_prompt_stream_from_a_data_section():
    from schemas.data import DataSection

    section = DataSection(num_train=10, num_eval=4, seed=2, difficulty=2)
    stream = make_prompt_stream(section)
    assert len(stream.eval_items) == 4 and len(stream.train_items) == 10
    assert stream.eval_items[0]["question"] == synthetic_problems(1, 2, seed=2)[0]["question"]
    duck = SimpleNamespace(**section.model_dump())
    assert make_prompt_stream(duck).next_batch(5) == stream.next_batch(5)
