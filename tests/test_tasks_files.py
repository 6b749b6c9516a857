"""FileTask / load_problems on small files in the real GSM8K, MATH, messages and prompt/completion formats."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest

from mentor.records import RecordError
from mentor.tasks.files import FileTask, detect_format, load_problems

# Rows copied from GSM8K (openai/gsm8k, "main" config), calculator annotations included.
GSM8K_ROWS = [
    {
        "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in "
        "May. How many clips did Natalia sell altogether in April and May?",
        "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips "
        "altogether in April and May.\n#### 72",
    },
    {
        "question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
        "How much did she earn?",
        "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = "
        "$<<0.2*50=10>>10.\n#### 10",
    },
    {
        "question": "Betty is saving money for a new wallet which costs $100. Betty has only half of the money "
        "she needs. Her parents decided to give her $15 for that purpose, and her grandparents twice as much "
        "as her parents. How much more money does Betty need to buy the wallet?",
        "answer": "In the beginning, Betty has only 100 / 2 = $<<100/2=50>>50.\nBetty's grandparents gave her "
        "15 * 2 = $<<15*2=30>>30.\nThis means, Betty needs 100 - 50 - 30 - 15 = $<<100-50-30-15=5>>5 more.\n"
        "#### 5",
    },
    {
        "question": "Janet\u2019s ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes "
        "muffins for her friends every day with four. She sells the remainder at the farmers' market daily "
        "for $2 per fresh duck egg. How much in dollars does she make every day at the farmers' market?",
        "answer": "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18 "
        "every day at the farmer\u2019s market.\n#### 18",
    },
]
GSM8K_GOLD = ["72", "10", "5", "18"]

MATH_ROW = {
    "problem": "If $2x = 1$, what is $x$? Express your answer as a common fraction.",
    "solution": "First, $\\boxed{2x} = 1$ is the equation. Dividing both sides by 2, "
    "$x = \\boxed{\\frac{1}{2}}$.",
    "level": "Level 1",
    "type": "Algebra",
}

MESSAGES_ROW = {
    "messages": [
        {"role": "system", "content": "You are a careful math tutor."},
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And what is 3 * 4?"},
        {"role": "assistant", "content": "3 * 4 = 12, so the answer is \\boxed{12}."},
    ]
}

PC_ROWS = [
    {"prompt": "What is 7 * 6?", "completion": "7 * 6 = 42.\nAnswer: 42"},
    {"prompt": "What is 10 - 3?", "completion": "Ten minus three is seven.", "answer": "7"},
    {
        "prompt": [{"role": "user", "content": "What is 9 + 1?"}],
        "completion": [{"role": "assistant", "content": "9 + 1 = \\boxed{10}"}],
    },
]


def write_jsonl(path: Path, rows: list, blank_after_first: bool = False) -> Path:
    lines = [json.dumps(row) for row in rows]
    if blank_after_first:
        lines.insert(1, "")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("answer, gold", [("2", "2"), (" 3/4 ", "3/4"), ("x = 5", "x = 5"), ("72 clips", "72 clips"),
                                          ("1,234", "1,234")])
def test_a_bare_answer_column_is_the_gold_answer(tmp_path, answer, gold):
    task = FileTask(write_jsonl(tmp_path / "qa.jsonl", [{"question": "How many?", "answer": answer}]))
    problem = task.problems()[0]
    assert problem.answer == gold and problem.solution is None
    assert task.verify(problem, f"\\boxed{{{gold}}}").correct and not task.verify(problem, "\\boxed{99}").correct


def test_gsm8k_jsonl(tmp_path):
    task = FileTask(write_jsonl(tmp_path / "gsm8k_test.jsonl", GSM8K_ROWS))
    problems = task.problems()
    assert [p.answer for p in problems] == GSM8K_GOLD
    assert [p.id for p in problems] == [f"gsm8k_test-{i}" for i in range(4)]
    first = problems[0]
    assert first.question == GSM8K_ROWS[0]["question"]
    assert first.source == "gsm8k_test" and first.meta == {}
    assert first.solution == (
        "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May.\n#### 72"
    )
    for problem in problems:
        assert "<<" not in problem.solution
        assert task.verify(problem, problem.solution).correct
        assert task.verify(problem, "#### 3").reason == "wrong"
    assert task.prompt(first) == first.question + "\n\n" + task.instruction
    assert "\\boxed{}" in task.instruction


def test_math_nested_boxed_and_meta(tmp_path):
    (problem,) = load_problems(write_jsonl(tmp_path / "math.jsonl", [MATH_ROW]))
    assert problem.answer == "\\frac{1}{2}"  # the last \boxed{}, nested braces kept
    assert problem.solution == MATH_ROW["solution"]
    assert problem.meta == {"level": "Level 1", "type": "Algebra"}
    task = FileTask(tmp_path / "math.jsonl")
    assert task.verify(problem, problem.solution).correct
    assert task.verify(problem, "so $x = \\boxed{0.5}$").correct
    assert not task.verify(problem, "\\boxed{2}").correct


def test_math_answer_column_and_id_column(tmp_path):
    row = {**MATH_ROW, "answer": "\\dfrac{1}{2}", "unique_id": "test/algebra/1.json"}
    (problem,) = load_problems(write_jsonl(tmp_path / "math500.jsonl", [row]))
    assert problem.answer == "\\dfrac{1}{2}" and problem.id == "test/algebra/1.json"


def test_messages(tmp_path):
    (problem,) = load_problems(write_jsonl(tmp_path / "chat.jsonl", [MESSAGES_ROW]))
    assert problem.question == "And what is 3 * 4?"
    assert problem.solution == "3 * 4 = 12, so the answer is \\boxed{12}."
    assert problem.answer == "12"
    assert FileTask(tmp_path / "chat.jsonl").verify(problem, problem.solution).correct


def test_prompt_completion(tmp_path):
    problems = load_problems(write_jsonl(tmp_path / "pc.jsonl", PC_ROWS))
    assert [p.answer for p in problems] == ["42", "7", "10"]
    assert problems[2].question == "What is 9 + 1?" and problems[2].solution == "9 + 1 = \\boxed{10}"
    task = FileTask(tmp_path / "pc.jsonl")
    assert all(task.verify(p, f"\\boxed{{{p.answer}}}").correct for p in problems)


@pytest.mark.parametrize(
    "columns, expected",
    [
        (["question", "answer"], "gsm8k"),
        (["problem", "solution", "level", "type"], "math"),
        (["prompt", "completion"], "prompt_completion"),
        (["messages"], "messages"),
    ],
)
def test_detect_format(columns, expected):
    assert detect_format(columns) == expected


def test_format_and_column_overrides(tmp_path):
    rows = [{"q": "What is 1 + 1?", "final": 2, "level": 1}]
    path = write_jsonl(tmp_path / "qa.jsonl", rows)
    with pytest.raises(RecordError, match=r"cannot tell the format.*'final'"):
        load_problems(path)
    (problem,) = load_problems(path, format="qa", question_column="q", answer_column="final")
    assert (problem.question, problem.answer, problem.solution, problem.meta) == (
        "What is 1 + 1?",
        "2",
        None,
        {"level": 1},
    )
    with pytest.raises(ValueError, match="unknown format 'gsm9k'"):
        FileTask(path, format="gsm9k")
    with pytest.raises(TypeError, match="question_col"):
        FileTask(path, question_col="q")


def test_other_file_types_round_trip(tmp_path):
    import datasets

    expected = load_problems(write_jsonl(tmp_path / "gsm8k.jsonl", GSM8K_ROWS))
    datasets.Dataset.from_list(GSM8K_ROWS).to_parquet(str(tmp_path / "gsm8k.parquet"))
    (tmp_path / "gsm8k.json").write_text(json.dumps(GSM8K_ROWS), encoding="utf-8")
    with (tmp_path / "gsm8k.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["question", "answer"])
        writer.writeheader()
        writer.writerows(GSM8K_ROWS)
    datasets.Dataset.from_list(GSM8K_ROWS).save_to_disk(str(tmp_path / "gsm8k"))
    for source in ["gsm8k.parquet", "gsm8k.json", "gsm8k.csv", "gsm8k"]:
        problems = load_problems(tmp_path / source, name="gsm8k")
        assert problems == expected, source


def test_save_to_disk_dataset_dict_splits(tmp_path):
    import datasets

    splits = datasets.DatasetDict(
        train=datasets.Dataset.from_list(GSM8K_ROWS[:3]), test=datasets.Dataset.from_list(GSM8K_ROWS[3:])
    )
    splits.save_to_disk(str(tmp_path / "saved"))
    task = FileTask(tmp_path / "saved")
    assert [p.answer for p in task.problems("train")] == GSM8K_GOLD[:3]
    assert [p.id for p in task.problems("test")] == ["saved-test-0"]
    assert [p.answer for p in FileTask(tmp_path / "saved", split="train").problems("test")] == GSM8K_GOLD[:3]
    with pytest.raises(RecordError, match=r"no split 'validation'; it has train, test"):
        task.problems("validation")
    assert [p.answer for p in load_problems(splits, split="train")] == GSM8K_GOLD[:3]


def test_first_n_or_seeded_shuffle(tmp_path):
    path = write_jsonl(tmp_path / "gsm8k.jsonl", GSM8K_ROWS)
    assert [p.answer for p in FileTask(path).problems(n=2, seed=5)] == GSM8K_GOLD[:2]
    shuffled = FileTask(path, shuffle=True)
    assert [p.id for p in shuffled.problems(n=4, seed=1)] == [p.id for p in shuffled.problems(n=4, seed=1)]
    assert {p.answer for p in shuffled.problems(seed=3)} == set(GSM8K_GOLD)
    with pytest.raises(ValueError, match="n must be"):
        FileTask(path).problems(n=-1)


GOOD = GSM8K_ROWS[0]


@pytest.mark.parametrize(
    "bad_row, field, message",
    [
        ({"answer": GOOD["answer"]}, "question", "missing"),
        ({"question": 123, "answer": GOOD["answer"]}, "question", "expected a non-empty string"),
        ({"question": GOOD["question"], "answer": "She sold 72.\n####   "}, "answer", "empty gold answer"),
        ({"question": GOOD["question"], "answer": "She sold 72 clips."}, "answer", "neither a worked solution"),
        ({"question": GOOD["question"], "answer": "She sold\n72"}, "answer", "neither a worked solution"),
        ({"question": GOOD["question"]}, "answer", "missing"),
        ({"question": "", "answer": GOOD["answer"]}, "question", "non-empty"),
        (["not", "an", "object"], None, "expected an object"),
    ],
)
def test_bad_jsonl_row_names_file_line_and_field(tmp_path, bad_row, field, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [GOOD, bad_row], blank_after_first=True)
    with pytest.raises(RecordError) as caught:
        FileTask(path).problems()
    text = str(caught.value)
    assert text.startswith(f"{path}:3: ")  # line 3: the blank line 2 is counted, not a row
    assert message in text
    if field:
        assert f"field {field!r}" in text


@pytest.mark.parametrize(
    "fmt, row, field",
    [
        ("math", {"problem": "What is 1/2 + 1/2?", "solution": "It is 1."}, "solution"),
        ("messages", {"messages": [{"role": "assistant", "content": "\\boxed{1}"}]}, "messages"),
        ("messages", {"messages": [{"role": "user", "content": "Hi?"}]}, "messages"),
        ("messages", {"messages": [{"role": "user", "text": "Hi?"}]}, "messages"),
        ("prompt_completion", {"prompt": "Say hi.", "completion": "Hi there!"}, "completion"),
        ("prompt_completion", {"prompt": "What is 2 + 2?", "completion": "4", "answer": " "}, "answer"),
        ("gsm8k", {"question": "Q?", "answer": "#### 1", "id": None}, "id"),
    ],
)
def test_bad_rows_of_other_formats(tmp_path, fmt, row, field):
    path = write_jsonl(tmp_path / "bad.jsonl", [row])
    with pytest.raises(RecordError, match=rf"^{path}:1: field '{field}'"):
        load_problems(path, format=fmt)


def test_invalid_json_and_duplicate_ids(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(GOOD) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(RecordError, match=rf"^{path}:2: not valid JSON"):
        load_problems(path)
    rows = [{**GOOD, "id": "q1"}, {**GSM8K_ROWS[1], "id": "q1"}]
    path = write_jsonl(tmp_path / "dup.jsonl", rows)
    with pytest.raises(RecordError, match=rf"^{path}:2: field 'id': duplicate id 'q1' \(first at {path}:1\)"):
        load_problems(path)


def test_bad_rows_in_parquet_and_csv_name_the_row(tmp_path):
    import datasets

    rows = [GOOD, {"question": GOOD["question"], "answer": "She sold 48.\nThen 24 more, no marker."}]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "bad.parquet"))
    with pytest.raises(RecordError, match=rf"^{tmp_path / 'bad.parquet'}: row 2: field 'answer'"):
        load_problems(tmp_path / "bad.parquet")
    (tmp_path / "bad.csv").write_text(
        'question,answer\n"Q one?","x\n#### 1"\n"Q two?",""\n', encoding="utf-8"
    )
    with pytest.raises(RecordError, match=rf"^{tmp_path / 'bad.csv'}: row 2: field 'answer'"):
        load_problems(tmp_path / "bad.csv")


def test_missing_and_unreadable_sources(tmp_path):
    with pytest.raises(RecordError, match=rf"^{tmp_path / 'nope.jsonl'}: no such file or folder"):
        FileTask(tmp_path / "nope.jsonl").problems()
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(RecordError, match="unsupported file type '.txt'"):
        load_problems(tmp_path / "x.txt")
    (tmp_path / "latin1.jsonl").write_bytes(
        '{"question": "caf\u00e9?", "answer": "#### 1"}\n'.encode("latin-1")
    )
    with pytest.raises(RecordError, match="latin1.jsonl: not UTF-8 text"):
        load_problems(tmp_path / "latin1.jsonl")
    with pytest.raises(RecordError, match="not one written by datasets' save_to_disk"):
        load_problems(tmp_path)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(RecordError, match="no rows"):
        load_problems(tmp_path / "empty.jsonl")


def test_hub_name_offline_is_a_clear_error(tmp_path, monkeypatch):
    import datasets
    import huggingface_hub.constants

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    start = time.monotonic()
    with pytest.raises(
        RecordError, match=r"^openai/gsm8k\[main, test\]: could not load the Hugging Face dataset"
    ):
        FileTask("openai/gsm8k", config="main").problems("test")
    assert time.monotonic() - start < 20
