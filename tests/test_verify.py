from __future__ import annotations

import math
import multiprocessing
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mentor.verify as verify_mod
from mentor.records import Verdict
from mentor.verify import (
    RewardWeights,
    answer_key,
    extract_answer,
    is_equivalent,
    normalize_number,
    verify,
)

# (completion, gold, extracted, kind, reason): real answer shapes, each checked for extraction and verdict.
CORPUS = [
    # fractions and decimals
    ("Half of 3/2 is 3/4", "0.75", "3/4", "last_number", "ok"),
    ("The answer is 2.50", "2.5", "2.50", "answer_line", "ok"),
    ("Each slice is 0.125 of the pie.", "1/8", "0.125", "last_number", "ok"),
    # LaTeX
    ("So $x = \\boxed{\\frac{1}{2}}$.", "0.5", "\\frac{1}{2}", "boxed", "ok"),
    ("$\\boxed{\\dfrac{3}{4}}$", "\\frac{3}{4}", "\\dfrac{3}{4}", "boxed", "ok"),
    ("$\\boxed{\\tfrac{3}{4}}$", "\\frac34", "\\tfrac{3}{4}", "boxed", "ok"),
    ("The length is \\boxed{\\sqrt{2}}.", "2^{1/2}", "\\sqrt{2}", "boxed", "ok"),
    ("\\boxed{2\\sqrt{2}}", "\\sqrt{8}", "2\\sqrt{2}", "boxed", "ok"),
    ("\\boxed{\\sqrt{2}}", "\\sqrt{3}", "\\sqrt{2}", "boxed", "wrong"),
    ("nested: \\boxed{\\frac{a}{b}}", "\\frac{a}{b}", "\\frac{a}{b}", "boxed", "ok"),
    ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\sqrt{3}/2", "\\frac{\\sqrt{3}}{2}", "boxed", "ok"),
    ("first \\boxed{3}, no wait: \\boxed{4}", "4", "4", "boxed", "ok"),
    ("\\fbox{12}", "12", "12", "boxed", "ok"),
    ("so the answer is \\boxed 7.", "7", "7", "boxed", "ok"),
    ("\\boxed{(1, 2)}", "(1,2)", "(1, 2)", "boxed", "ok"),
    (
        "Final Answer: The final answer is $\\frac{\\pi}{2}$. I hope it is correct.",
        "\\pi/2",
        "\\frac{\\pi}{2}",
        "answer_line",
        "ok",
    ),
    # thousands separators and negatives
    ("She earns 1,234 dollars.\n#### 1,234", "1234", "1,234", "gsm8k", "ok"),
    ("Total: 1,000,000 grains", "1000000", "1,000,000", "last_number", "ok"),
    ("Answer: -7", "-7", "-7", "answer_line", "ok"),
    ("Answer: \u22127", "-7", "\u22127", "answer_line", "ok"),
    ("The temperature drops to -3.5 degrees", "-7/2", "-3.5", "last_number", "ok"),
    ("\\boxed{-\\frac{3}{4}}", "-0.75", "-\\frac{3}{4}", "boxed", "ok"),
    # units and money
    ("**Answer:** 5 dollars.", "5", "5 dollars", "answer_line", "ok"),
    ("#### $5", "5", "$5", "gsm8k", "ok"),
    ("#### \\$18.90", "18.9", "\\$18.90", "gsm8k", "ok"),
    ("\\boxed{5 \\text{ cm}}", "5", "5 \\text{ cm}", "boxed", "ok"),
    ("\\boxed{12\\text{ cm}^2}", "12", "12\\text{ cm}^2", "boxed", "ok"),
    ("Answer: 5cm", "5", "5cm", "answer_line", "ok"),
    ("\\boxed{90^\\circ}", "90", "90^\\circ", "boxed", "ok"),
    # percent
    ("\\boxed{25\\%}", "25", "25\\%", "boxed", "ok"),
    ("The discount is 50%.", "0.5", "50%", "last_number", "ok"),
    # GSM8K
    ("Natalia sold 48/2 = 24 clips in May.\n48 + 24 = 72\n#### 72", "72", "72", "gsm8k", "ok"),
    ("#### 71", "72", "71", "gsm8k", "wrong"),
    # the final answer is the last one the response commits to, whatever its marker
    ("\\boxed{18} was my first guess, but 18 + 1 = 19. The answer is 19.", "19", "19", "answer_line", "ok"),
    ("\\boxed{18} was my first guess, but 18 + 1 = 19. The answer is 19.", "18", "19", "answer_line", "wrong"),
    ("#### 5\nOn second thought the answer is 6", "6", "6", "answer_line", "ok"),
    ("The answer is 5. Checking again: \\boxed{6}", "6", "6", "boxed", "ok"),
    ("Answer: 4, no: <answer> 7", "7", "7", "answer_tag", "ok"),
    ("Answer: \\boxed{5}", "5", "5", "boxed", "ok"),
    ("<answer>The answer is \\boxed{14}.</answer>", "14", "14", "boxed", "ok"),
    ("The answer is 3.\n\nWe double the 6 apples, 2 * 6 = 12.\n#### 12", "12", "12", "gsm8k", "ok"),
    # mentor's world format
    ("<step_1> 3+4=7 <step_2> 7*2=14 <answer> 14", "14", "14", "answer_tag", "ok"),
    ("<step_1> 3+4=7 <answer> 13 <eos>", "14", "13", "answer_tag", "wrong"),
    ("<answer>14</answer>", "14", "14", "answer_tag", "ok"),
    ("<answer>The answer is 14.</answer>", "14", "14", "answer_tag", "ok"),
    ("x = 5 <answer>\n5\n", "5", "5", "answer_tag", "ok"),
    # answer lines
    ("The answer is: x = 5.", "5", "x = 5", "answer_line", "ok"),
    ("Final answer: 42", "42", "42", "answer_line", "ok"),
    # multiple choice (gold is a letter)
    ("The options are (A) 4 and (B) 5; I pick (B)", "B", "B", "choice", "ok"),
    ("Answer: C) 42", "C", "C", "answer_line", "ok"),
    ("the answer is D", "A", "D", "answer_line", "wrong"),
    ("So the correct option is B) since 5 > 4", "(B)", "B", "choice", "ok"),
    ("\\boxed{\\text{(E)}}", "E", "E", "boxed", "ok"),
    ("Answer: the second one", "B", "the second one", "answer_line", "unparseable"),
    # nothing usable
    ("I am not sure.", "3", None, "none", "no_answer"),
    ("Answer: \\frac{", "5", "\\frac{", "answer_line", "unparseable"),
]


@pytest.mark.parametrize(("completion", "gold", "extracted", "kind", "reason"), CORPUS)
def test_corpus_extraction_and_verdict(completion, gold, extracted, kind, reason):
    letter_gold = len(gold.strip("()")) == 1 and gold.strip("()").isupper()
    assert extract_answer(completion, choices="ABCDEFGHIJ" if letter_gold else None) == (extracted, kind)
    verdict = verify(completion, gold)
    assert verdict.extracted == extracted
    assert verdict.reason == reason
    assert verdict.correct is (reason == "ok")
    assert verdict.format_ok is (kind in verify_mod.FORMAT_KINDS)
    assert verdict.components == {"correctness": float(reason == "ok"), "format": float(verdict.format_ok)}


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("1,000", "1000", True),
        ("0.5", "1/2", True),
        ("-3", "\u22123", True),
        ("\\frac{1}{2}", "0.5", True),
        ("\\dfrac{1}{2}", "\\frac12", True),
        ("$5", "5 dollars", True),
        ("5.0", "5", True),
        ("50\\%", "0.5", True),
        ("x = 3", "3", True),
        ("5", "6", False),
        ("0.333", "1/3", False),
        ("1,2", "12", False),
        ("2x", "2", False),
        ("\\sqrt{2}", "\\sqrt{3}", False),
        ("x^2+2x+1", "(x+1)^2", True),
        ("\\{2, 1\\}", "\\{1,2\\}", True),
        ("\\text{even}", "even", True),
    ],
)
def test_is_equivalent(pred, gold, expected):
    assert is_equivalent(pred, gold) is expected


def test_plain_numbers_never_reach_the_helper(monkeypatch):
    def refuse(*args):
        raise AssertionError("the numeric fast path called the helper process")

    monkeypatch.setattr(verify_mod._HELPER, "run", refuse)
    for pred, gold in [("1,234", "1234"), ("\\frac{3}{4}", "0.75"), ("$5", "5"), ("7 apples", "8")]:
        assert is_equivalent(pred, gold) is (pred != "7 apples")
    assert verify("#### 1,234", "1234").correct


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1,000", "1000"),
        ("0.5", "1/2"),
        ("-\\frac{3}{4}", "-3/4"),
        ("\\frac34", "3/4"),
        ("\\$5.00", "5"),
        ("5 cm", "5"),
        ("3 sq ft", "3"),
        ("42.", "42"),
        ("1{,}000", "1000"),
        ("2x", None),
        ("5 x", None),
        ("\\sqrt{2}", None),
        ("1/0", None),
        ("", None),
    ],
)
def test_normalize_number(text, expected):
    assert normalize_number(text) == expected


def test_answer_key_groups_forms():
    assert answer_key("0.5") == answer_key("\\frac{1}{2}") == answer_key("1/2")
    assert answer_key("\\left( 1, 2 \\right)") == answer_key("(1,2)")
    assert answer_key("3") != answer_key("4")


@settings(max_examples=100, deadline=None)
@given(st.integers(-(10**9), 10**9), st.integers(1, 1000))
def test_numbers_in_any_dress_are_equal(numerator, denominator):
    value = Fraction(numerator, denominator)
    gold = f"{value.numerator}/{value.denominator}" if value.denominator != 1 else str(value.numerator)
    forms = [f"\\frac{{{value.numerator}}}{{{value.denominator}}}"]
    if value.denominator == 1:
        n = value.numerator
        forms += [f"{n:,}", f"${n}", f"{n} dollars", f"{n}.0", f"\\text{{{n}}}"]
    for form in forms:
        assert is_equivalent(form, gold), form
        assert verify(f"\\boxed{{{form}}}", gold).reason == "ok", form
    assert is_equivalent(f"{numerator + 1:,}", str(numerator)) is False


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_extract_never_crashes(text):
    answer, kind = extract_answer(text)
    assert kind in {"boxed", "gsm8k", "answer_tag", "answer_line", "last_number", "none"}
    assert (answer is None) is (kind == "none")
    answer, kind = extract_answer(text, choices="ABCD")
    assert kind in verify_mod.FORMAT_KINDS | {"none"}
    assert (answer is None) is (kind == "none")
    assert kind != "choice" or answer in "ABCD"


def test_choices_mapping_reads_option_text():
    options = {"A": "4", "B": "5", "C": "\\frac{1}{2}"}
    assert extract_answer("Answer: 5", choices=options) == ("B", "answer_line")
    assert verify("\\boxed{0.5}", "C", choices=options).reason == "ok"
    assert verify("Answer: (A)", "5", choices=options).reason == "wrong"
    with pytest.raises(ValueError):
        verify("Answer: A", "7", choices=options)
    with pytest.raises(ValueError):
        extract_answer("x", choices=["AB"])


def test_reward_weights():
    weights = RewardWeights(correctness=1.0, format=0.5)
    assert verify("\\boxed{3}", "3", weights=weights).reward == 1.5
    assert verify("it is 3", "3", weights=weights).reward == 1.0
    assert verify("\\boxed{4}", "3", weights=weights).reward == 0.5
    assert verify("\\boxed{3}", "3").reward == 1.0
    for bad in ({"format": -1.0}, {"correctness": math.nan}, {"correctness": 0.0}, {"format": True}):
        with pytest.raises(ValueError):
            RewardWeights(**bad)


def test_bad_timeout_is_rejected():
    with pytest.raises(ValueError):
        is_equivalent("\\sqrt{2}", "\\sqrt{3}", timeout=0)


def test_symbolic_checks_work_from_threads():
    """math-verify's signal timeouts would silently give False here; the helper process does not."""
    pairs = [
        ("\\sqrt{2}", "2^{1/2}", True),
        ("\\frac{\\pi}{3}", "\\pi/3", True),
        ("\\sqrt{5}", "\\sqrt{6}", False),
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda p: is_equivalent(p[0], p[1]), pairs * 3))
    assert results == [p[2] for p in pairs] * 3


# --- timeouts: a deliberately slow check, run by the helper process (it imports this module) ---------------


def slow_check(pred: str, gold: str) -> str:
    time.sleep(30)
    return "equal"


def verify_with_slow_check(completion: str, gold: str) -> Verdict:
    """Runs in a worker process, which does not share the parent's monkeypatching."""
    verify_mod.SYMBOLIC_CHECK = slow_check
    return verify(completion, gold, timeout=0.5)


def _assert_timeout(verdict: Verdict) -> None:
    assert verdict.reason == "timeout"
    assert verdict.correct is False
    assert verdict.reward == 0.0
    assert verdict.extracted == "\\sqrt{2}"


def test_timeout_in_main_thread_then_recovers(monkeypatch):
    monkeypatch.setattr(verify_mod, "SYMBOLIC_CHECK", slow_check)
    start = time.monotonic()
    assert is_equivalent("\\sqrt{2}", "\\sqrt{7}", timeout=0.5) is None
    _assert_timeout(verify("\\boxed{\\sqrt{2}}", "\\sqrt{7}", timeout=0.5))
    assert time.monotonic() - start < 15
    monkeypatch.setattr(verify_mod, "SYMBOLIC_CHECK", verify_mod._math_verify_check)
    assert is_equivalent("\\sqrt{2}", "\\sqrt{7}", timeout=5) is False  # a fresh helper took over


def test_timeout_in_thread(monkeypatch):
    monkeypatch.setattr(verify_mod, "SYMBOLIC_CHECK", slow_check)
    results: list[Verdict] = []
    thread = threading.Thread(
        target=lambda: results.append(verify("\\boxed{\\sqrt{2}}", "\\sqrt{11}", timeout=0.5))
    )
    start = time.monotonic()
    thread.start()
    thread.join(timeout=20)
    assert not thread.is_alive()
    assert time.monotonic() - start < 15
    _assert_timeout(results[0])


def test_timeout_in_process_pool_worker():
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        verdict = pool.submit(verify_with_slow_check, "Answer: \\sqrt{2}", "\\sqrt{13}").result(timeout=30)
    _assert_timeout(verdict)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_forked_worker_gets_its_own_helper():
    assert is_equivalent("\\sqrt{2}", "2^{1/2}")  # the parent's helper is running now
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork")) as pool:
        assert pool.submit(is_equivalent, "\\sqrt{3}", "3^{1/2}").result(timeout=30) is True
    assert is_equivalent("\\sqrt{5}", "5^{1/2}")  # and the parent's still answers


def test_a_gold_answer_math_verify_cannot_read_is_bad_gold_not_wrong():
    from mentor.verify import verify

    verdict = verify("The answer is \\boxed{3}", "\\frac{1")
    assert verdict.reason == "bad_gold" and not verdict.correct and verdict.extracted == "3"
    assert verify("The answer is \\boxed{x+1}", "1+x").reason == "ok"
