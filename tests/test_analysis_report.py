"""The token-advantage report on the shipped world model: hand-built correct and corrupted rollouts."""

from __future__ import annotations

import base64
import html
import math
import random
import re
import statistics

import pytest
import torch

from mentor.analysis.report import (
    AnalysisResult,
    TokenAdvantages,
    aggregate_table,
    analyze_rollouts,
    run_analysis,
    trace_verdict,
    write_html,
    write_plots,
)
from mentor.analysis.token_advantage import (
    aggregate_by_error,
    pooled_mean_sem,
    region_groups,
    token_advantages,
    token_steps,
)
from mentor.contexts import build_context_prompt
from mentor.models import render_prompt
from mentor.records import Feedback, Rollout
from mentor.tasks import load_task
from mentor.world.problems import WorldProblem, canonical_solution, corrupt_trace
from mentor.world.solver import load_world_model

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TOKEN_SPAN = re.compile(r'<span class="t[ "][^>]*>(.*?)</span>', re.S)


@pytest.fixture(scope="module")
def world():
    model, tokenizer = load_world_model()
    task = load_task("world")
    return model, tokenizer, task, task.problems("test", n=2)


def _rollout(tokenizer, task, problem, completion, with_ids=True, index=0):
    ids = tokenizer(completion, add_special_tokens=False)["input_ids"] if with_ids else []
    return Rollout(problem.id, render_prompt(tokenizer, task.prompt(problem)), completion, ids, sample_index=index)


@pytest.fixture(scope="module")
def rollouts(world):
    _, tokenizer, task, problems = world
    out = []
    for i, problem in enumerate(problems):
        wp = WorldProblem.from_meta(problem.meta)
        out.append(_rollout(tokenizer, task, problem, canonical_solution(wp), with_ids=i == 0))
        out.append(_rollout(tokenizer, task, problem, corrupt_trace(wp, random.Random(i), "result", 2), index=1))
    return out


@pytest.fixture(scope="module")
def report(world, rollouts, tmp_path_factory):
    model, tokenizer, task, problems = world
    out_dir = tmp_path_factory.mktemp("analysis") / "run"
    return run_analysis(model, tokenizer, task, problems, rollouts, out_dir), out_dir


def _ids(tokenizer, rollout):
    return rollout.token_ids or tokenizer(rollout.completion, add_special_tokens=False)["input_ids"]


def test_advantages_equal_token_advantages_one_per_token(world, rollouts, report):
    model, tokenizer, task, problems = world
    result, _ = report
    by_id = {p.id: p for p in problems}
    assert set(result.contexts) == {"reference", "critique"}
    for kind, ctx in result.contexts.items():
        assert len(ctx.rollouts) == len(rollouts) and ctx.skipped == {}
        for rollout, entry in zip(rollouts, ctx.rollouts):
            problem, ids = by_id[rollout.problem_id], _ids(tokenizer, rollout)
            assert len(entry.advantages) == len(entry.tokens) == len(entry.steps) == len(ids) > 0
            critique = task.critique(problem, rollout.completion).critique
            teacher = build_context_prompt(kind, task.prompt(problem), problem=problem, critique=critique)
            expected = token_advantages(model, tokenizer, render_prompt(tokenizer, task.prompt(problem)),
                                        render_prompt(tokenizer, teacher), ids)
            torch.testing.assert_close(torch.tensor(entry.advantages), expected)
            assert entry.context == (problem.solution if kind == "reference" else critique)


def test_steps_and_first_error_follow_the_critic(world, rollouts, report):
    _, tokenizer, task, problems = world
    result, _ = report
    by_id = {p.id: p for p in problems}
    for rollout, ref, crit in zip(rollouts, result.contexts["reference"].rollouts,
                                  result.contexts["critique"].rollouts):
        feedback = task.critique(by_id[rollout.problem_id], rollout.completion)
        expected_error = None if feedback.case == "correct" else feedback.first_error_step
        for entry in (ref, crit):
            assert entry.steps == token_steps(tokenizer, _ids(tokenizer, rollout))
            assert (entry.first_error_step, entry.case, entry.located) == (expected_error, feedback.case, True)
            assert entry.correct == task.verify(by_id[rollout.problem_id], rollout.completion).correct
            assert "".join(entry.tokens) == rollout.completion
    cases = [e.case for e in result.contexts["critique"].rollouts]
    assert cases == ["correct", "incorrect", "correct", "incorrect"]
    assert [e.first_error_step for e in result.contexts["critique"].rollouts] == [None, 2, None, 2]


def test_aggregates_equal_aggregate_by_error(report):
    result, _ = report
    for ctx in result.contexts.values():
        rows = ctx.rollouts
        direct = aggregate_by_error([torch.tensor(r.advantages) for r in rows], [r.steps for r in rows],
                                    [r.first_error_step for r in rows])
        assert ctx.aggregate.tokens == direct.tokens and sum(direct.tokens) == sum(len(r.tokens) for r in rows)
        assert [ctx.aggregate.prefix, ctx.aggregate.first_error, ctx.aggregate.after] == pytest.approx(
            [direct.prefix, direct.first_error, direct.after])
        at_error = next(p for p in ctx.by_error_offset if p.position == 0)
        assert at_error.mean == pytest.approx(direct.first_error) and at_error.tokens == direct.tokens[1]
        assert sum(p.tokens for p in ctx.by_error_offset if p.position > 0) == direct.tokens[2]
        assert sum(p.tokens for p in ctx.by_step) == sum(direct.tokens)
    table = aggregate_table(result).splitlines()
    assert len(table) == 2 + len(result.contexts) and table[0].startswith("| context | prefix | first error |")
    assert f"{result.contexts['critique'].aggregate.first_error:+.3f}" in table[3]


def test_json_round_trips_and_files_are_written(report):
    result, out_dir = report
    text = (out_dir / "analysis.json").read_text(encoding="utf-8")
    assert AnalysisResult.from_json(text).to_json() == result.to_json() == text.strip()
    again = AnalysisResult.from_json(text)
    assert again.contexts["critique"].aggregate == result.contexts["critique"].aggregate
    assert {p.name for p in out_dir.iterdir()} == {
        "analysis.json", "analysis.html", "advantage_by_error_offset.png", "advantage_by_region.png"}


def test_plots_are_png_files(report, tmp_path):
    result, _ = report
    paths = write_plots(result, tmp_path / "plots")
    assert len(paths) == 2
    for path in paths:
        assert path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


def test_html_escapes_model_text_and_has_one_span_per_token(world, report, tmp_path):
    model, tokenizer, task, problems = world
    completion = "<step_1> <script>alert(1)</script>\n<answer> 99"

    def quoting_critic(problem, text):  # a bad critic that echoes the model's text into the context
        return Feedback(problem.id, f"Step 1 is wrong: {text}", "incorrect", first_error_step=1)

    rollout = _rollout(tokenizer, task, problems[0], completion)
    result = analyze_rollouts(model, tokenizer, task, {problems[0].id: problems[0]}, [rollout],
                              critic=quoting_critic)
    page = write_html(result, tmp_path / "page.html").read_text(encoding="utf-8")
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    spans = TOKEN_SPAN.findall(page)
    assert len(spans) == 2 * len(rollout.token_ids)
    assert "".join(html.unescape(s) for s in spans[: len(rollout.token_ids)]) == completion

    shown = report[0]
    page = write_html(shown, tmp_path / "limited.html", max_rollouts=1).read_text(encoding="utf-8")
    expected = sum(len(ctx.rollouts[0].tokens) for ctx in shown.contexts.values())
    assert len(TOKEN_SPAN.findall(page)) == expected and "showing 1 of 4 rollouts" in page
    first = shown.contexts["reference"].rollouts[0]
    assert f'title="A_t={first.advantages[0]:+.3f} step {first.steps[0]}"' in page


def test_unusable_or_missing_critique_is_counted_not_used(world, rollouts):
    model, tokenizer, task, problems = world
    wrong, correct = rollouts[1], rollouts[2]

    def flaky_critic(problem, text):
        if text == wrong.completion:
            return Feedback(problem.id, "garbled", "unusable")
        return None if text == correct.completion else task.critique(problem, text)

    result = analyze_rollouts(model, tokenizer, task, {p.id: p for p in problems}, rollouts[:3],
                              critic=flaky_critic)
    critique, reference = result.contexts["critique"], result.contexts["reference"]
    assert critique.skipped == {"unusable": 1, "no_critique": 1} and len(critique.rollouts) == 1
    assert "garbled" not in result.to_json()
    # the reference still scores both, but a wrong rollout with no located error is left out of the split
    assert [r.located for r in reference.rollouts] == [True, False, True] and reference.unlocated == 1
    assert sum(reference.aggregate.tokens) == len(reference.rollouts[0].tokens) + len(reference.rollouts[2].tokens)
    assert "unusable: 1" in aggregate_table(result)


def test_unknown_problems_are_counted_and_contexts_checked(world, rollouts):
    model, tokenizer, task, _ = world
    calls = []
    result = analyze_rollouts(model, tokenizer, task, {}, rollouts[:2], contexts=("critique",),
                              progress=lambda done, total: calls.append((done, total)))
    assert result.contexts["critique"].skipped == {"unknown_problem": 2} and calls == [(1, 2), (2, 2)]
    assert result.contexts["critique"].rollouts == []
    with pytest.raises(ValueError, match="unknown context kind 'none'"):
        analyze_rollouts(model, tokenizer, task, {}, rollouts, contexts=("none",))


TITLE = re.compile(r'title="([^"]*)"')


def _visible(page):
    """The page without its style sheet, where braces are CSS, not a leaked dict."""
    return re.sub(r"<style>.*?</style>", "", page, flags=re.S)


def test_html_shows_question_labelled_context_rounded_values_and_no_reprs(world, rollouts, report):
    _, _, _, problems = world
    result, out_dir = report
    page = (out_dir / "analysis.html").read_text(encoding="utf-8")
    for problem in problems:  # every example, in both contexts, under its question
        shown = sum(r.problem_id == problem.id for ctx in result.contexts.values() for r in ctx.rollouts)
        assert page.count(f"<b>question:</b> {html.escape(problem.question)}</div>") == shown == 4
    assert result.questions == {p.id: p.question for p in problems}
    assert page.count(html.escape("teacher's context: reference solution")) == len(rollouts)
    assert page.count(html.escape("teacher's context: step-aligned critique")) == len(rollouts)
    # correct rollouts say so in words; wrong ones name their step; no Python value leaks into the page
    assert page.count("answer right · no wrong step") == 2 * 2
    assert page.count("answer wrong · first wrong step: 2") == 2 * 2
    visible = _visible(page)
    for leak in ("None", "{}", "{'", "nan", "True", "False", "[]"):
        assert leak not in visible, leak
    assert "<td>0</td><td>0</td></tr>" in page  # no skipped rollout, no unlocated one: counts, not {}
    titles = TITLE.findall(page)
    assert len(titles) == len(TOKEN_SPAN.findall(page)) > 0
    assert all(re.fullmatch(r"A_t=[+-]\d+\.\d{3} step \d+", t) for t in titles)


IMAGE = re.compile(r'<a href="([^"]+)"><img src="data:image/png;base64,([^"]+)"')


def test_html_embeds_the_plots_and_links_their_files(report, tmp_path):
    result, out_dir = report
    page = (out_dir / "analysis.html").read_text(encoding="utf-8")
    images = IMAGE.findall(page)
    assert [href for href, _ in images] == ["advantage_by_error_offset.png", "advantage_by_region.png"]
    for href, data in images:  # the inlined image is the file itself, and the link reaches it
        assert base64.b64decode(data) == (out_dir / href).read_bytes()
    assert "bars: ±1 standard error over rollouts; n: rollouts" in page
    plots = write_plots(result, tmp_path / "figs")
    elsewhere = write_html(result, tmp_path / "page.html", plots=plots).read_text(encoding="utf-8")
    assert IMAGE.findall(elsewhere)[0][0] == "figs/advantage_by_error_offset.png"
    assert "<img" not in write_html(result, tmp_path / "bare.html").read_text(encoding="utf-8")
    # a table of contents whose every link reaches its section
    import re

    links = re.findall(r"<a href='#([^']+)'>", page)
    assert links[:2] == ["aggregates", "plots"] and len(links) == 2 + len(result.contexts)
    assert all(f"id='{a}'" in page or f'id="{a}"' in page for a in links)


def test_right_answer_from_a_wrong_trace_is_explained(world, tmp_path):
    model, tokenizer, task, problems = world
    problem = problems[0]
    completion = corrupt_trace(WorldProblem.from_meta(problem.meta), random.Random(0), "skip", 2)
    feedback = task.critique(problem, completion)
    assert task.verify(problem, completion).correct and feedback.first_error_step == 2  # the premise
    result = analyze_rollouts(model, tokenizer, task, {problem.id: problem},
                              [_rollout(tokenizer, task, problem, completion)], contexts=("critique",))
    entry = result.contexts["critique"].rollouts[0]
    assert entry.correct and entry.first_error_step == 2
    page = write_html(result, tmp_path / "p.html").read_text(encoding="utf-8")
    assert "answer right, but step 2 is wrong: the right answer was reached through a wrong trace" in page
    assert "critic&#x27;s case: missing step" in page


def test_trace_verdict_words_every_case():
    def entry(correct, error, located=True):
        return TokenAdvantages("p", 0, [], [], [], error, None, "", correct, located)

    assert trace_verdict(entry(True, None)) == "answer right · no wrong step"
    assert trace_verdict(entry(False, 3)) == "answer wrong · first wrong step: 3"
    assert trace_verdict(entry(True, 1)).startswith("answer right, but step 1 is wrong")
    assert trace_verdict(entry(False, None, located=False)).startswith("answer wrong · wrong step not located")
    assert trace_verdict(entry(False, None)) == "answer wrong, yet the critic found no wrong step"
    # a trace whose steps are all right and whose answer line is missing: no "first wrong step: 5"
    missing = TokenAdvantages("p", 0, [], [], [], 5, "incomplete", "", False, True, error_at_answer=True)
    assert trace_verdict(missing) == "answer wrong · every step right, the answer line missing"
    wrong = TokenAdvantages("p", 0, [], [], [], 5, "incorrect", "", False, True, error_at_answer=True)
    assert trace_verdict(wrong) == "answer wrong · every step right, the answer line wrong"


def test_an_error_on_the_answer_line_is_recognised_from_the_critique(world, tmp_path):
    """A four-step trace cut just before its answer line: the critic's first error is step 5, the answer."""
    model, tokenizer, task, problems = world
    problem = problems[0]
    right = canonical_solution(WorldProblem.from_meta(problem.meta))
    cut = right[: right.index("<answer>")].rstrip("\n")
    rollout = _rollout(tokenizer, task, problem, cut)
    result = analyze_rollouts(model, tokenizer, task, {problem.id: problem}, [rollout], contexts=("critique",))
    (entry,) = result.contexts["critique"].rollouts
    assert entry.case == "incomplete" and entry.error_at_answer
    assert entry.first_error_step == right.count("<step_") + 1


def test_pooled_mean_sem_treats_rollouts_as_clusters():
    values = [0.5, -1.0, 2.0, 0.25]
    mean, sem = pooled_mean_sem([[v] for v in values])  # one value per rollout: the textbook s / sqrt(n)
    assert mean == pytest.approx(statistics.fmean(values))
    assert sem == pytest.approx(statistics.stdev(values) / math.sqrt(len(values)))
    groups = [[1.0, 3.0], [0.0], [-2.0, 0.0, 1.0]]  # m = 3 / 6; S_r - m n_r = 3, -0.5, -2.5
    mean, sem = pooled_mean_sem(groups)
    assert mean == pytest.approx(0.5)
    assert sem == pytest.approx(math.sqrt(3 / 2 * (9 + 0.25 + 6.25)) / 6)
    assert math.isnan(pooled_mean_sem([[1.0, 2.0]])[1]) and pooled_mean_sem([[1.0, 2.0]])[0] == 1.5
    assert all(math.isnan(x) for x in pooled_mean_sem([]))


def test_offset_means_count_rollouts_and_carry_their_standard_error(report):
    result, _ = report
    for ctx in result.contexts.values():
        wrong = [r for r in ctx.rollouts if r.first_error_step is not None]
        assert len(wrong) == 2
        for point in ctx.by_error_offset:
            groups = [[a for s, a in zip(r.steps, r.advantages) if s - r.first_error_step == point.position]
                      for r in wrong]
            groups = [g for g in groups if g]
            mean, sem = pooled_mean_sem(groups)
            assert (point.rollouts, point.tokens) == (len(groups), sum(map(len, groups)))
            assert point.mean == pytest.approx(mean) and point.sem == pytest.approx(sem, nan_ok=True)
        assert next(p for p in ctx.by_error_offset if p.position == 0).rollouts == 2


def test_offset_plot_draws_error_bars_and_counts(report, tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    result, _ = report
    bars, labels = [], []
    errorbar, annotate = Axes.errorbar, Axes.annotate

    def spy_errorbar(self, x, y, *args, **kwargs):
        bars.append((list(x), list(kwargs["yerr"])))
        return errorbar(self, x, y, *args, **kwargs)

    def spy_annotate(self, text, *args, **kwargs):
        labels.append(text)
        return annotate(self, text, *args, **kwargs)

    monkeypatch.setattr(Axes, "errorbar", spy_errorbar)
    monkeypatch.setattr(Axes, "annotate", spy_annotate)
    write_plots(result, tmp_path, window=3)
    expected = [[p for p in ctx.by_error_offset if abs(p.position) <= 3] for ctx in result.contexts.values()]
    offset_bars, region_bars = bars[: len(expected)], bars[len(expected):]  # the region bars' error bars follow
    assert [x for x, _ in offset_bars] == [[p.position for p in pts] for pts in expected]
    for (_, yerr), pts in zip(offset_bars, expected):
        assert yerr == pytest.approx([p.sem for p in pts], nan_ok=True)
    assert any(math.isfinite(e) and e > 0 for _, yerr in offset_bars for e in yerr)
    offset_labels = [f"n={p.rollouts}" for pts in expected for p in pts]
    assert labels[: len(offset_labels)] == offset_labels
    # the region bars: one s.e. with the rollouts as clusters, and how many rollouts have tokens there
    assert len(region_bars) == len(result.contexts)
    region_labels = []
    for (_, yerr), ctx in zip(region_bars, result.contexts.values()):
        located = [r for r in ctx.rollouts if r.located]
        regions = region_groups([torch.tensor(r.advantages) for r in located], [r.steps for r in located],
                                [r.first_error_step for r in located])
        assert yerr == pytest.approx([0 if math.isnan(s) else s for _, s in map(pooled_mean_sem, regions)])
        region_labels += [f"n={len(r)}" for r in regions if r]
    assert labels[len(offset_labels):] == region_labels and region_labels
