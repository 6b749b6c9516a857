"""records: exact round trips (JSON lines and Hugging Face datasets) and clear errors for every bad row."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mentor.records import (
    FEEDBACK_CASES,
    VERDICT_REASONS,
    Feedback,
    Problem,
    RecordError,
    Review,
    Rollout,
    Verdict,
    append_jsonl,
    from_dict,
    from_hf_dataset,
    iter_jsonl,
    read_jsonl,
    to_dict,
    to_hf_dataset,
    write_jsonl,
)

# ----- examples and strategies ------------------------------------------------------------------------

VERDICT = Verdict(reward=0.5, correct=False, extracted="41", format_ok=True, reason="wrong",
                  components={"format": 1.0, "answer": 0.0})
EXAMPLES = {
    Problem: [
        Problem(id="p1", question="What is 2+2?", answer="4"),
        Problem(id="p2", question="ünïcødé ∑ \u2028 line\nbreak \"quoted\"", answer="\\frac{1}{2}",
                solution="Step 1: half.", source="math", meta={"level": 3, "tags": ["a", "b"], "x": None}),
    ],
    Verdict: [VERDICT, Verdict(reward=1, correct=True, extracted=None, format_ok=False, reason="ok")],
    Rollout: [
        Rollout(problem_id="p1", prompt="Q: 2+2?", completion="4", token_ids=[5, 6, 7],
                logprobs=[-0.1, -2.5, 0.0], finish_reason="length", sample_index=3,
                sampling={"temperature": 0.7, "top_p": 1.0}, verdict=VERDICT),
        Rollout(problem_id="p2", prompt="", completion="", verdict=None),
    ],
    Feedback: [
        Feedback(problem_id="p1", critique="Step 2 is wrong.", case="incorrect", author="critic",
                 first_error_step=2, step_verdicts=["ok", "wrong"], sample_index=1),
        Feedback(problem_id="p2", critique="", case="correct"),
    ],
    Review: [
        Review(reviewer="r1", author="a1", problem_id="p1", score=7.5, text="good"),
        Review(reviewer="r2", author="a2", problem_id="p2", score=None),
    ],
}
ALL_TYPES = list(EXAMPLES)

text = st.text(max_size=20)
nonempty = st.text(min_size=1, max_size=20)
answer = st.text(max_size=20).filter(lambda s: s.strip() != "")
number = st.floats(allow_nan=False, width=64)
json_leaf = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | number | text
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)

problems = st.builds(Problem, id=nonempty, question=nonempty, answer=answer, solution=st.none() | text,
                     source=text, meta=st.dictionaries(text, json_value, max_size=3))
verdicts = st.builds(Verdict, reward=number, correct=st.booleans(), extracted=st.none() | text,
                     format_ok=st.booleans(), reason=st.sampled_from(VERDICT_REASONS),
                     components=st.dictionaries(text, number, max_size=3))


@st.composite
def rollouts(draw):
    ids = draw(st.lists(st.integers(0, 2**31 - 1), max_size=6))
    logprobs = draw(st.just([]) | st.lists(st.floats(max_value=0.0, allow_nan=False),
                                           min_size=len(ids), max_size=len(ids)))
    return Rollout(problem_id=draw(text), prompt=draw(text), completion=draw(text), token_ids=ids,
                   logprobs=logprobs, finish_reason=draw(st.sampled_from(["stop", "length"])),
                   sample_index=draw(st.integers(0, 1000)),
                   sampling=draw(st.dictionaries(text, json_value, max_size=3)),
                   verdict=draw(st.none() | verdicts))


feedbacks = st.builds(Feedback, problem_id=text, critique=text, case=st.sampled_from(FEEDBACK_CASES),
                      author=text, first_error_step=st.none() | st.integers(0, 50),
                      step_verdicts=st.lists(text, max_size=4), sample_index=st.integers(0, 100))
reviews = st.builds(Review, reviewer=text, author=text, problem_id=text, score=st.none() | number, text=text)
STRATEGIES = {Problem: problems, Verdict: verdicts, Rollout: rollouts(), Feedback: feedbacks, Review: reviews}

# A hypothesis test that writes files gets a fresh directory per example through this counter.
_fresh = iter(range(10**9))


def _fresh_path(tmp_path: Path) -> Path:
    return tmp_path / f"r{next(_fresh)}" / "rows.jsonl"


# ----- round trips ------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda c: c.__name__)
def test_examples_round_trip_through_jsonl_exactly(tmp_path, cls):
    path = write_jsonl(tmp_path / "out" / "rows.jsonl", EXAMPLES[cls])
    back = read_jsonl(path, cls)
    assert back == EXAMPLES[cls]
    assert all(type(r) is cls for r in back)
    assert path.read_text(encoding="utf-8").count("\n") == len(EXAMPLES[cls])


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda c: c.__name__)
def test_examples_round_trip_through_hf_dataset_exactly(cls):
    dataset = to_hf_dataset(EXAMPLES[cls])
    assert len(dataset) == len(EXAMPLES[cls])
    assert set(dataset.column_names) == {f.name for f in dataclasses.fields(cls)}
    assert from_hf_dataset(dataset, cls) == EXAMPLES[cls]


def test_rollout_nested_verdict_is_rebuilt_as_a_verdict(tmp_path):
    (rollout,) = read_jsonl(write_jsonl(tmp_path / "r.jsonl", EXAMPLES[Rollout][:1]), Rollout)
    assert isinstance(rollout.verdict, Verdict)
    assert rollout.verdict == VERDICT
    (rollout,) = from_hf_dataset(to_hf_dataset(EXAMPLES[Rollout][:1]), Rollout)
    assert isinstance(rollout.verdict, Verdict)
    assert rollout.verdict.components == {"format": 1.0, "answer": 0.0}


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda c: c.__name__)
def test_random_records_round_trip_exactly(tmp_path, cls):
    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(STRATEGIES[cls], max_size=5))
    def check(records):
        path = write_jsonl(_fresh_path(tmp_path), records)
        assert read_jsonl(path, cls) == records
        assert [from_dict(cls, json.loads(json.dumps(to_dict(r)))) for r in records] == records
        if records:
            assert from_hf_dataset(to_hf_dataset(records), cls) == records

    check()


def test_write_jsonl_accepts_plain_dicts_and_iter_jsonl_is_lazy(tmp_path):
    rows = [to_dict(p) for p in EXAMPLES[Problem]]
    path = write_jsonl(tmp_path / "d.jsonl", iter(rows))
    iterator = iter_jsonl(path, Problem)
    assert next(iterator) == EXAMPLES[Problem][0]
    assert list(iterator) == EXAMPLES[Problem][1:]


def test_empty_file_and_empty_dataset_give_no_records(tmp_path):
    path = write_jsonl(tmp_path / "empty.jsonl", [])
    assert path.read_text() == ""
    assert read_jsonl(path, Problem) == []
    assert from_hf_dataset(to_hf_dataset([]), Problem) == []


# ----- bad rows ---------------------------------------------------------------------------------------

GOOD = {Problem: to_dict(EXAMPLES[Problem][0]), Verdict: to_dict(VERDICT),
        Rollout: to_dict(EXAMPLES[Rollout][0]), Feedback: to_dict(EXAMPLES[Feedback][0]),
        Review: to_dict(EXAMPLES[Review][0])}


def _with(cls, **changes):
    return {**GOOD[cls], **changes}


def _without(cls, name):
    row = dict(GOOD[cls])
    del row[name]
    return row


BAD_ROWS = [
    # (id, record type, bad row, field the message must name)
    ("missing-question", Problem, _without(Problem, "question"), "question"),
    ("missing-answer", Problem, _without(Problem, "answer"), "answer"),
    ("missing-reward", Verdict, _without(Verdict, "reward"), "reward"),
    ("missing-completion", Rollout, _without(Rollout, "completion"), "completion"),
    ("missing-case", Feedback, _without(Feedback, "case"), "case"),
    ("missing-score", Review, _without(Review, "score"), "score"),
    ("unknown-field", Problem, _with(Problem, difficulty=3), "difficulty"),
    ("unknown-field-verdict", Verdict, _with(Verdict, confidence=0.9), "confidence"),
    ("str-for-int", Rollout, _with(Rollout, sample_index="3"), "sample_index"),
    ("float-for-int", Feedback, _with(Feedback, first_error_step=2.0), "first_error_step"),
    ("bool-for-int", Rollout, _with(Rollout, sample_index=True), "sample_index"),
    ("bool-for-float", Verdict, _with(Verdict, reward=True), "reward"),
    ("bool-for-optional-float", Review, _with(Review, score=False), "score"),
    ("str-for-float", Review, _with(Review, score="7"), "score"),
    ("str-for-bool", Verdict, _with(Verdict, correct="true"), "correct"),
    ("int-for-bool", Verdict, _with(Verdict, format_ok=1), "format_ok"),
    ("list-for-dict", Problem, _with(Problem, meta=[1, 2]), "meta"),
    ("list-for-dict-sampling", Rollout, _with(Rollout, sampling=["t", 0.7]), "sampling"),
    ("dict-for-list", Rollout, _with(Rollout, token_ids={"0": 1}), "token_ids"),
    ("int-for-str", Problem, _with(Problem, question=7), "question"),
    ("null-for-str", Problem, _with(Problem, id=None), "id"),
    ("list-for-verdict", Rollout, _with(Rollout, verdict=[1]), "verdict"),
    ("empty-question", Problem, _with(Problem, question=""), "question"),
    ("empty-id", Problem, _with(Problem, id=""), "id"),
    ("empty-answer", Problem, _with(Problem, answer=""), "answer"),
    ("blank-answer", Problem, _with(Problem, answer="  \t "), "answer"),
    ("bad-reason", Verdict, _with(Verdict, reason="close_enough"), "reason"),
    ("bad-nested-reason", Rollout, _with(Rollout, verdict={**GOOD[Verdict], "reason": "meh"}), "verdict.reason"),
    ("bad-nested-type", Rollout, _with(Rollout, verdict={**GOOD[Verdict], "reward": "1"}), "verdict.reward"),
    ("bad-case", Feedback, _with(Feedback, case="mostly_right"), "case"),
    ("bad-finish-reason", Rollout, _with(Rollout, finish_reason="eos"), "finish_reason"),
    ("logprobs-longer", Rollout, _with(Rollout, token_ids=[1, 2], logprobs=[-1.0, -2.0, -3.0]), "logprobs"),
    ("logprobs-shorter", Rollout, _with(Rollout, token_ids=[1, 2, 3], logprobs=[-1.0]), "logprobs"),
]


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.mark.parametrize("cls, row, field_name", [r[1:] for r in BAD_ROWS], ids=[r[0] for r in BAD_ROWS])
def test_bad_row_error_names_file_line_and_field(tmp_path, cls, row, field_name):
    good = json.dumps(GOOD[cls])
    # two good rows and a blank line before the bad one: the bad row is on line 4
    path = _write_lines(tmp_path / "bad.jsonl", [good, "", good, json.dumps(row), good])
    with pytest.raises(RecordError) as info:
        read_jsonl(path, cls)
    message = str(info.value)
    assert f"{path}:4:" in message
    assert repr(field_name) in message
    # the same row through the dataset path names its index and field (a dataset's columns are shared by
    # all its rows, so a row with other columns than the good one goes alone)
    rows = [GOOD[cls], row] if set(row) == set(GOOD[cls]) else [row]
    with pytest.raises(RecordError, match=rf"row {len(rows) - 1}: .*{field_name}"):
        from_hf_dataset(raw_dataset(rows), cls)


def raw_dataset(rows: list[dict]):
    """Raw rows (possibly invalid) in the column layout that to_hf_dataset writes."""
    import datasets

    return datasets.Dataset.from_list([{k: json.dumps(v) for k, v in row.items()} for row in rows])


def test_dataset_cell_that_is_not_json_names_the_row():
    import datasets

    good = {k: json.dumps(v) for k, v in GOOD[Review].items()}
    dataset = datasets.Dataset.from_list([good, good, {**good, "text": "not json"}])
    with pytest.raises(RecordError, match="row 2: "):
        from_hf_dataset(dataset, Review)


def test_good_rows_in_the_table_are_really_good():
    for cls, row in GOOD.items():
        assert to_dict(from_dict(cls, row)) == row


@pytest.mark.parametrize(
    "line, why",
    [
        ("{not json", "not valid JSON"),
        ('{"id": "p1", "question": "q", "answer": "4"', "not valid JSON"),
        ("[1, 2, 3]", "expected a JSON object, got list"),
        ('"just a string"', "expected a JSON object, got str"),
        ("42", "expected a JSON object, got int"),
        ("null", "expected a JSON object, got NoneType"),
    ],
)
def test_unreadable_or_non_object_line_names_file_and_line(tmp_path, line, why):
    good = json.dumps(GOOD[Problem])
    path = _write_lines(tmp_path / "x.jsonl", ["", "   ", good, line])
    with pytest.raises(RecordError) as info:
        read_jsonl(path, Problem)
    assert f"{path}:4: " in str(info.value)
    assert why in str(info.value)


def test_from_dict_rejects_non_objects_and_constructors_validate():
    with pytest.raises(RecordError, match="expected a JSON object"):
        from_dict(Problem, ["p1", "q", "4"])
    with pytest.raises(RecordError, match="'answer'"):
        Problem(id="p", question="q", answer=" ")
    with pytest.raises(RecordError, match="'question'"):
        Problem(id="p", question="", answer="1")
    with pytest.raises(RecordError, match="'reason'.*not one of ok, no_answer"):
        Verdict(reward=0.0, correct=False, extracted=None, format_ok=True, reason="bad")
    with pytest.raises(RecordError, match="'case'.*not one of correct"):
        Feedback(problem_id="p", critique="", case="fine")
    with pytest.raises(RecordError, match="'logprobs': 1 values for 2 token ids"):
        Rollout(problem_id="p", prompt="", completion="", token_ids=[1, 2], logprobs=[-1.0])
    # logprobs may be absent (not recorded by the sampler) whatever the number of token ids
    assert Rollout(problem_id="p", prompt="", completion="", token_ids=[1, 2]).logprobs == []


def test_blank_lines_are_skipped_but_counted(tmp_path):
    good = json.dumps(GOOD[Problem])
    lines = ["", good, "   ", "\t", good, "", "", '{"id": "p9"}']
    path = _write_lines(tmp_path / "blank.jsonl", lines)
    with pytest.raises(RecordError, match=rf"{path}:8: field 'question': missing"):
        read_jsonl(path, Problem)
    path = _write_lines(tmp_path / "blank_ok.jsonl", lines[:-1] + [""])
    assert len(read_jsonl(path, Problem)) == 2


def test_crlf_lines_are_read(tmp_path):
    good = json.dumps(GOOD[Problem])
    path = tmp_path / "crlf.jsonl"
    path.write_bytes((good + "\r\n" + good + "\r\n").encode())
    assert len(read_jsonl(path, Problem)) == 2


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n_rows=st.integers(0, 12), blanks=st.lists(st.integers(0, 3), min_size=13, max_size=13))
def test_no_row_is_ever_dropped(tmp_path, n_rows, blanks):
    records = [Problem(id=f"p{i}", question=f"q{i}", answer=str(i)) for i in range(n_rows)]
    lines: list[str] = []
    for i, record in enumerate(records):
        lines += [""] * blanks[i] + [json.dumps(to_dict(record))]
    lines += [""] * blanks[-1]
    path = _fresh_path(tmp_path)
    path.parent.mkdir(parents=True)
    _write_lines(path, lines)
    back = read_jsonl(path, Problem)
    assert len(back) == n_rows
    assert back == records


# ----- atomic writes and appends ----------------------------------------------------------------------


class Crash(RuntimeError):
    pass


def _crashing(records, after: int):
    for i, record in enumerate(records):
        if i == after:
            raise Crash("killed mid-write")
        yield record


def test_write_jsonl_is_atomic_when_the_writer_crashes(tmp_path):
    path = tmp_path / "rows.jsonl"
    old = [Problem(id=f"old{i}", question="q", answer="a") for i in range(3)]
    write_jsonl(path, old)
    before = path.read_bytes()
    new = [Problem(id=f"new{i}", question="q", answer="a") for i in range(5)]
    with pytest.raises(Crash):
        write_jsonl(path, _crashing(new, after=2))
    assert path.read_bytes() == before
    assert read_jsonl(path, Problem) == old
    # no half-written temporary file is left around, and only the real file is read as data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.jsonl"]
    assert [p.id for p in read_jsonl(path, Problem)] == ["old0", "old1", "old2"]


def test_write_jsonl_crash_with_no_previous_file_leaves_no_file(tmp_path):
    path = tmp_path / "sub" / "rows.jsonl"
    with pytest.raises(Crash):
        write_jsonl(path, _crashing([GOOD[Problem]] * 4, after=2))
    assert not path.exists()
    with pytest.raises(RecordError, match="no such file"):
        read_jsonl(path, Problem)


def test_write_jsonl_crash_on_an_unserialisable_record_keeps_old_file(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", EXAMPLES[Review])
    bad = {"reviewer": "r", "author": "a", "problem_id": "p", "score": object()}
    with pytest.raises(TypeError):
        write_jsonl(path, [to_dict(EXAMPLES[Review][0]), bad])
    assert read_jsonl(path, Review) == EXAMPLES[Review]


def test_stale_tmp_from_a_killed_writer_is_never_read_and_is_overwritten(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", EXAMPLES[Problem])
    stale = tmp_path / "rows.jsonl.tmp"
    stale.write_text('{"id": "garbage", "question": "half a row', encoding="utf-8")
    assert read_jsonl(path, Problem) == EXAMPLES[Problem]
    write_jsonl(path, EXAMPLES[Problem][:1])
    assert read_jsonl(path, Problem) == EXAMPLES[Problem][:1]
    assert not stale.exists()


def test_write_jsonl_replaces_previous_content(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", EXAMPLES[Feedback])
    write_jsonl(path, EXAMPLES[Feedback][:1])
    assert read_jsonl(path, Feedback) == EXAMPLES[Feedback][:1]


def test_append_jsonl_appends_exactly_one_line_per_call(tmp_path):
    path = tmp_path / "deep" / "log.jsonl"
    records = EXAMPLES[Rollout] * 3
    for n, record in enumerate(records, start=1):
        append_jsonl(path, record)
        content = path.read_text(encoding="utf-8")
        assert content.endswith("\n")
        assert content.count("\n") == n
        assert read_jsonl(path, Rollout) == records[:n]
    append_jsonl(path, to_dict(EXAMPLES[Rollout][0]))  # a plain dict is one line too
    assert len(path.read_text(encoding="utf-8").splitlines()) == len(records) + 1


def test_append_after_write_keeps_both(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", EXAMPLES[Problem])
    append_jsonl(path, EXAMPLES[Problem][0])
    assert read_jsonl(path, Problem) == EXAMPLES[Problem] + EXAMPLES[Problem][:1]


def test_missing_file_is_a_clear_record_error(tmp_path):
    path = tmp_path / "nope.jsonl"
    with pytest.raises(RecordError, match=rf"{path}: no such file"):
        read_jsonl(path, Problem)
    with pytest.raises(RecordError, match="no such file"):
        list(iter_jsonl(str(path), Verdict))
    with pytest.raises(RecordError, match="no such file"):
        read_jsonl(tmp_path, Problem)  # a directory is not a file


def test_record_error_is_a_value_error():
    assert issubclass(RecordError, ValueError)
