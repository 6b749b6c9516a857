"""The per-token advantage report: A_t of each context on a set of rollouts, as JSON, HTML and plots.

For every rollout and every context kind (reference solution, step-aligned critique) the self-teacher
scores the rollout's own tokens with the context and the student scores them without it (docs/methods.md
section 1). Tokens are split by where they stand relative to the rollout's first wrong step, as the
critic locates it; the same split is used for every context so their aggregates compare like for like.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from mentor.analysis.token_advantage import (
    StepAggregate,
    aggregate_by_error,
    completion_logprobs,
    prefix_texts,
    token_advantages,
    token_steps,
)
from mentor.contexts import CONTEXT_LABELS, build_context_prompt
from mentor.models import render_prompt
from mentor.records import Feedback, Problem, Rollout

REPORT_CONTEXTS = ("reference", "critique")
Critic = Callable[[Problem, str], Feedback | None]


@dataclass
class TokenAdvantages:
    """A_t of one rollout under one context, token by token.

    ``located`` is False when the first wrong step is unknown (no usable critique of a wrong rollout):
    such a rollout is shown but left out of the aggregates.
    """

    problem_id: str
    sample_index: int
    tokens: list[str]
    advantages: list[float]
    steps: list[int]
    first_error_step: int | None
    case: str | None
    context: str
    correct: bool
    located: bool = True


@dataclass
class PositionMean:
    """Mean A_t of the tokens at one position (a step index, or a step offset from the first error), the
    rollouts they come from and its standard error over those rollouts (NaN with one rollout; reports
    written before these were recorded load as 0 and NaN)."""

    position: int
    mean: float
    tokens: int
    rollouts: int = 0
    sem: float = math.nan


@dataclass
class ContextAnalysis:
    """All rollouts of one context kind with their aggregates and the rollouts left out, by reason."""

    kind: str
    rollouts: list[TokenAdvantages]
    aggregate: StepAggregate
    by_error_offset: list[PositionMean]  # step - first wrong step, over rollouts with an error
    by_step: list[PositionMean]  # absolute step index, over every located rollout
    skipped: dict[str, int]
    unlocated: int = 0


@dataclass
class AnalysisResult:
    """The report's data: one :class:`ContextAnalysis` per context kind, and the question of each problem."""

    contexts: dict[str, ContextAnalysis]
    questions: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(_nan_to_none(asdict(self)), ensure_ascii=False)

    def write_json(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_json(cls, text: str) -> AnalysisResult:
        data, contexts = json.loads(text), {}
        for kind, row in data["contexts"].items():
            agg = row["aggregate"]
            means = [math.nan if agg[k] is None else agg[k] for k in ("prefix", "first_error", "after")]
            contexts[kind] = ContextAnalysis(
                kind=row["kind"],
                rollouts=[TokenAdvantages(**r) for r in row["rollouts"]],
                aggregate=StepAggregate(*means, tuple(agg["tokens"])),
                by_error_offset=[_position_mean(p) for p in row["by_error_offset"]],
                by_step=[_position_mean(p) for p in row["by_step"]],
                skipped=dict(row["skipped"]),
                unlocated=row.get("unlocated", 0),
            )
        return cls(contexts, dict(data.get("questions", {})))


def _position_mean(row: dict) -> PositionMean:
    return PositionMean(**{**row, "sem": math.nan if row.get("sem") is None else row["sem"]})


def _nan_to_none(value: Any) -> Any:
    """NaN (an empty group's mean) is not JSON; it is written as null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return value


def token_pieces(tokenizer, ids: Sequence[int], texts: Sequence[str] | None = None) -> list[str]:
    """The text each token adds to the decoded completion (pieces join to the full text where decoding
    is incremental; otherwise a token's own decoding). ``texts``: :func:`prefix_texts`, when decoded."""
    pieces, before = [], ""
    for i, text in enumerate(texts if texts is not None else prefix_texts(tokenizer, ids)):
        incremental = text.startswith(before)
        pieces.append(text[len(before) :] if incremental else tokenizer.decode([ids[i]], skip_special_tokens=False))
        before = text
    return pieces


def pooled_mean_sem(groups: Sequence[Sequence[float]]) -> tuple[float, float]:
    """Mean of all values pooled, and its standard error with each group (a rollout) as one cluster: the
    tokens of one rollout are not independent, so treating them as such would understate the error.
    For m = sum S_r / sum n_r over R groups, se^2 = R / (R - 1) * sum_r (S_r - m n_r)^2 / (sum n_r)^2,
    which is the usual s / sqrt(R) when every group holds one value; NaN below two groups."""
    totals = [(sum(g), len(g)) for g in groups if g]
    n = sum(k for _, k in totals)
    if not n:
        return math.nan, math.nan
    mean, r = sum(s for s, _ in totals) / n, len(totals)
    if r < 2:
        return mean, math.nan
    return mean, math.sqrt(r / (r - 1) * sum((s - mean * k) ** 2 for s, k in totals)) / n


def _position_means(rows: Iterable[tuple[int, int, float]]) -> list[PositionMean]:
    """Per position, from (rollout index, position, A_t) rows: the pooled mean, counts and standard error."""
    groups: dict[int, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for rollout, position, a in rows:
        groups[position][rollout].append(a)
    means = []
    for position, by_rollout in sorted(groups.items()):
        mean, sem = pooled_mean_sem(list(by_rollout.values()))
        means.append(PositionMean(position, mean, sum(map(len, by_rollout.values())), len(by_rollout), sem))
    return means


def summarize_context(kind: str, rollouts: list[TokenAdvantages], skipped: dict[str, int]) -> ContextAnalysis:
    """Aggregates of one context's rollouts: prefix / first wrong step / after, and means by position."""
    located = [r for r in rollouts if r.located]
    aggregate = aggregate_by_error([torch.tensor(r.advantages) for r in located], [r.steps for r in located],
                                   [r.first_error_step for r in located])
    offsets = ((i, s - r.first_error_step, a) for i, r in enumerate(located) if r.first_error_step is not None
               for s, a in zip(r.steps, r.advantages))
    by_step = ((i, s, a) for i, r in enumerate(located) for s, a in zip(r.steps, r.advantages))
    return ContextAnalysis(kind, rollouts, aggregate, _position_means(offsets), _position_means(by_step),
                           dict(skipped), len(rollouts) - len(located))


def analyze_rollouts(model, tokenizer, task, problems_by_id: Mapping[str, Problem], rollouts: Sequence[Rollout],
                     contexts: Sequence[str] = REPORT_CONTEXTS, critic: Critic | None = None, *,
                     progress: Callable[[int, int], None] | None = None) -> AnalysisResult:
    """A_t of every rollout under every context kind (``reference`` and/or ``critique``).

    Student and teacher both see ``render_prompt(tokenizer, task.prompt(problem))``, the teacher with the
    context added, so the context is the only difference. ``critic(problem, completion)`` (default
    ``task.critique``) gives the critique and locates the first wrong step for every context; a rollout
    without a usable critique is skipped for ``critique`` and counted, never given a placeholder.
    """
    unknown = [k for k in contexts if k not in REPORT_CONTEXTS]
    if unknown:
        raise ValueError(f"unknown context kind {unknown[0]!r}; choose from {', '.join(REPORT_CONTEXTS)}")
    critic = critic or task.critique
    entries: dict[str, list[TokenAdvantages]] = {k: [] for k in contexts}
    skipped: dict[str, dict[str, int]] = {k: defaultdict(int) for k in contexts}
    questions: dict[str, str] = {}
    for done, rollout in enumerate(rollouts, start=1):
        problem = problems_by_id.get(rollout.problem_id)
        ids = list(rollout.token_ids) or tokenizer(rollout.completion, add_special_tokens=False)["input_ids"]
        reason = "unknown_problem" if problem is None else ("empty" if not ids else None)
        if reason:
            for kind in contexts:
                skipped[kind][reason] += 1
            if progress:
                progress(done, len(rollouts))
            continue
        questions[problem.id] = problem.question
        feedback = critic(problem, rollout.completion)
        usable = feedback is not None and feedback.case != "unusable"
        correct = rollout.verdict.correct if rollout.verdict else task.verify(problem, rollout.completion).correct
        if usable:
            first_error = None if feedback.case == "correct" else feedback.first_error_step
            located = feedback.case == "correct" or first_error is not None
        else:
            first_error, located = None, correct  # a verified-correct rollout has no wrong step
        student = render_prompt(tokenizer, task.prompt(problem))
        texts = prefix_texts(tokenizer, ids)  # decoded once for both the steps and the pieces
        steps, pieces = token_steps(tokenizer, ids, texts), token_pieces(tokenizer, ids, texts)
        student_logp = None  # one student pass serves every context
        for kind in contexts:
            if kind == "critique" and not usable:
                skipped[kind]["no_critique" if feedback is None else "unusable"] += 1
                continue
            if kind == "reference" and not problem.solution:
                skipped[kind]["no_reference"] += 1
                continue
            user = build_context_prompt(kind, task.prompt(problem), problem=problem,
                                        critique=feedback.critique if usable else None)
            context = problem.solution if kind == "reference" else feedback.critique
            if student_logp is None:
                student_logp = completion_logprobs(model, tokenizer, student, ids)
            adv_T = token_advantages(model, tokenizer, student, render_prompt(tokenizer, user), ids, student_logp)
            entries[kind].append(TokenAdvantages(
                rollout.problem_id, rollout.sample_index, pieces, adv_T.tolist(), steps, first_error,
                feedback.case if feedback else None, context, bool(correct), located))
        if progress:
            progress(done, len(rollouts))
    return AnalysisResult({k: summarize_context(k, entries[k], skipped[k]) for k in contexts}, questions)


def _fmt(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:+.3f}"


def _counts(counts: Mapping[str, int]) -> str:
    """``reason: count, ...`` in name order, or 0 when there are none (a report never shows a raw dict)."""
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "0"


def aggregate_table(result: AnalysisResult) -> str:
    """Markdown table of mean A_t on the correct prefix, the first wrong step and after it, per context."""
    lines = ["| context | prefix | first error | after | tokens (prefix / error / after) | rollouts | skipped |",
             "|---|---|---|---|---|---|---|"]
    for kind, ctx in result.contexts.items():
        agg = ctx.aggregate
        skipped = dict(ctx.skipped, **({"unlocated (not aggregated)": ctx.unlocated} if ctx.unlocated else {}))
        lines.append(f"| {kind} | {_fmt(agg.prefix)} | {_fmt(agg.first_error)} | {_fmt(agg.after)} | "
                     f"{' / '.join(map(str, agg.tokens))} | {len(ctx.rollouts)} | {_counts(skipped)} |")
    return "\n".join(lines)


def trace_verdict(r: TokenAdvantages) -> str:
    """The rollout's answer and first wrong step in words, with a note where the two disagree (the
    verifier checks only the answer; the critic reads the steps)."""
    answer = "answer right" if r.correct else "answer wrong"
    if r.first_error_step is not None:
        if r.correct:
            return (f"{answer}, but step {r.first_error_step} is wrong: the right answer was reached through a "
                    "wrong trace, so the split below follows the critic's first wrong step")
        return f"{answer} · first wrong step: {r.first_error_step}"
    if not r.located:
        return f"{answer} · wrong step not located (no usable critique), so left out of the aggregates"
    if not r.correct:
        return f"{answer}, yet the critic found no wrong step"
    return f"{answer} · no wrong step"


def _colour(a: float, clip: float) -> str:
    """Diverging scale: white at 0, red for negative, blue for positive, saturated at |a| >= clip."""
    t = min(abs(a) / clip, 1.0) if math.isfinite(a) else 1.0
    if a < 0:
        return f"#ff{round(255 - 200 * t):02x}{round(255 - 200 * t):02x}"
    return f"#{round(255 - 200 * t):02x}{round(255 - 120 * t):02x}ff"


def _percentile_clip(values: list[float], q: float = 0.98) -> float:
    finite = sorted(abs(v) for v in values if math.isfinite(v))
    return max(finite[min(len(finite) - 1, int(q * len(finite)))], 1e-6) if finite else 1.0


STYLE = """body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}
td,th{border:1px solid #bbb;padding:2px 8px;text-align:right}.row{display:flex;gap:1em;margin:.3em 0 1.5em}
.col{flex:1;min-width:0}.lbl{font-size:85%;color:#444;margin-bottom:.2em}
.toks{font-family:monospace;white-space:pre-wrap;line-height:1.7}.t{padding:1px 0}
.st{border-left:2px solid #333;margin-left:1px}.e{border-bottom:3px solid #b00000}
pre{background:#f6f6f6;padding:.5em;margin:0;white-space:pre-wrap}.meta{color:#444;font-size:90%}
.q{margin:.3em 0}.figs{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0}figcaption{font-size:85%;max-width:540px}"""

PLOT_CAPTIONS = {
    "advantage_by_error_offset.png": "Mean A_t by step offset from the first wrong step, per context; bars: ±1 "
                                     "standard error over rollouts; n: rollouts with tokens at that offset.",
    "advantage_by_region.png": "Mean A_t on the correct prefix, on the first wrong step and after it, per context.",
}


def _context_label(kind: str) -> str:
    return CONTEXT_LABELS.get(kind, kind)


def _rollout_html(r: TokenAdvantages, kind: str, clip: float, question: str | None) -> str:
    spans = []
    for i, (piece, a, step) in enumerate(zip(r.tokens, r.advantages, r.steps)):
        classes = "t" + (" st" if i == 0 or step != r.steps[i - 1] else "")
        classes += " e" if r.first_error_step is not None and step == r.first_error_step else ""
        spans.append(f'<span class="{classes}" style="background:{_colour(a, clip)}" '
                     f'title="A_t={_fmt(a)} step {step}">{html.escape(piece)}</span>')
    mean = sum(r.advantages) / len(r.advantages) if r.advantages else math.nan
    case = r.case.replace("_", " ") if r.case else "no usable critique"
    meta = html.escape(f"{r.problem_id} #{r.sample_index} · {trace_verdict(r)} · critic's case: {case} · "
                       f"mean A_t {_fmt(mean)}")
    question_html = html.escape(question) if question else "<i>not recorded</i>"
    label = html.escape(f"teacher's context: {_context_label(kind)}")
    return (f'<div class="meta">{meta}</div><div class="q"><b>question:</b> {question_html}</div>'
            '<div class="row"><div class="col"><div class="lbl">rollout, each token coloured by A<sub>t</sub>'
            f'</div><div class="toks">{"".join(spans)}</div></div><div class="col"><div class="lbl">'
            f"{label}</div>"
            f"<pre>{html.escape(r.context)}</pre></div></div>")


def _figures_html(plots: Sequence[str | os.PathLike], page_dir: Path) -> str:
    """The PNG plots inlined (base64), so the page stays self-contained, each linking to its file."""
    figures = []
    for plot in map(Path, plots):
        href = html.escape(Path(os.path.relpath(plot, page_dir)).as_posix())
        data = base64.b64encode(plot.read_bytes()).decode("ascii")
        caption = html.escape(PLOT_CAPTIONS.get(plot.name, plot.name))
        figures.append(f'<figure><a href="{href}"><img src="data:image/png;base64,{data}" alt="{caption}" '
                       f'width="540"></a><figcaption>{caption} <a href="{href}">{href}</a></figcaption></figure>')
    return f'<h2>Plots</h2><div class="figs">{"".join(figures)}</div>' if figures else ""


def write_html(result: AnalysisResult, path: str | os.PathLike, max_rollouts: int = 50,
               clip: float | None = None, plots: Sequence[str | os.PathLike] = ()) -> Path:
    """One self-contained page: the aggregate table, the ``plots`` (PNG files, inlined), then each
    context's rollouts under their question, every token coloured by A_t (clipped at ``clip``, default the
    98th percentile of |A_t| shown), step starts marked by a bar and the first wrong step underlined, beside
    the context the teacher saw. All text is escaped: model output and critiques are untrusted."""
    path = Path(path)
    shown = {k: c.rollouts[:max_rollouts] for k, c in result.contexts.items()}
    clip = clip or _percentile_clip([a for rows in shown.values() for r in rows for a in r.advantages])
    rows = "".join(
        f"<tr><th>{html.escape(_context_label(k))}</th><td>{_fmt(c.aggregate.prefix)}</td>"
        f"<td>{_fmt(c.aggregate.first_error)}</td><td>{_fmt(c.aggregate.after)}</td>"
        f"<td>{' / '.join(map(str, c.aggregate.tokens))}</td><td>{len(c.rollouts)}</td>"
        f"<td>{html.escape(_counts(c.skipped))}</td><td>{c.unlocated}</td></tr>"
        for k, c in result.contexts.items())
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>Per-token advantage</title><style>{STYLE}"
        "</style></head><body><h1>Per-token advantage A<sub>t</sub> = log p(y<sub>t</sub> | x, c) - "
        "log p(y<sub>t</sub> | x)</h1>",
        "<table><tr><th>context</th><th>prefix</th><th>first error</th><th>after</th><th>tokens</th>"
        f"<th>rollouts</th><th>skipped</th><th>unlocated</th></tr>{rows}</table>",
        f"<p>Colour: <span style='background:{_colour(-clip, clip)}'>A<sub>t</sub> = -{clip:.3g}</span> "
        f"· <span style='background:#ffffff'>0</span> · <span style='background:{_colour(clip, clip)}'>"
        f"+{clip:.3g}</span> (clipped); a bar starts each step; the first wrong step is underlined; "
        "hover a token for its A<sub>t</sub> and step.</p>",
        _figures_html(plots, path.parent),
    ]
    for kind, rollouts in shown.items():
        parts.append(f"<h2>context: {html.escape(_context_label(kind))}</h2><p class='meta'>showing "
                     f"{len(rollouts)} of {len(result.contexts[kind].rollouts)} rollouts</p>")
        parts.extend(_rollout_html(r, kind, clip, result.questions.get(r.problem_id)) for r in rollouts)
    parts.append("</body></html>\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(parts), encoding="utf-8")
    return path


def write_plots(result: AnalysisResult, out_dir: str | os.PathLike, window: int = 3) -> list[Path]:
    """PNG plots: mean A_t by step offset from the first wrong step (within +-``window``), one line per
    context with +-1 standard error bars and the number of rollouts at each point; and mean A_t on the
    prefix, the first wrong step and after it, bars per context."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (kind, ctx) in enumerate(result.contexts.items()):
        points = [p for p in ctx.by_error_offset if abs(p.position) <= window]
        if not points:
            continue
        line = ax.errorbar([p.position for p in points], [p.mean for p in points], yerr=[p.sem for p in points],
                           marker="o", capsize=3, label=_context_label(kind))
        for p in points:  # contexts' labels on alternate sides of their points, so they do not overlap
            ax.annotate(f"n={p.rollouts}", (p.position, p.mean), textcoords="offset points",
                        xytext=(5, 6 if i % 2 == 0 else -12), fontsize=7, color=line[0].get_color())
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(0, color="#b00000", lw=0.8, ls="--")
    ax.set(xlabel="step - first wrong step", ylabel="mean A_t (±1 s.e. over rollouts)",
           title="Per-token advantage around the error (n = rollouts)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    offset_png = out_dir / "advantage_by_error_offset.png"
    fig.savefig(offset_png, dpi=100, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    regions = ("prefix", "first_error", "after")
    width = 0.8 / max(len(result.contexts), 1)
    for i, (kind, ctx) in enumerate(result.contexts.items()):
        ax.bar([j + i * width for j in range(3)], [getattr(ctx.aggregate, r) for r in regions], width,
               label=_context_label(kind))
    ax.set_xticks([j + width * (len(result.contexts) - 1) / 2 for j in range(3)],
                  ["correct prefix", "first wrong step", "after it"])
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(ylabel="mean A_t", title="Per-token advantage by region")
    if result.contexts:
        ax.legend()
    region_png = out_dir / "advantage_by_region.png"
    fig.savefig(region_png, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return [offset_png, region_png]


def sample_rollouts(model, tokenizer, task, problems, *, seed: int = 0, temperature: float = 1.0,
                    max_new_tokens: int = 160, progress: Callable[[int, int], None] | None = None) -> list[Rollout]:
    """The model's own attempts to analyse: one context-free rollout per problem, sampled as mentor eval
    samples them; ``progress(done, total)``."""
    from mentor.evaluate import EvalConfig, evaluate

    _, rollouts = evaluate(model, tokenizer, task, problems, EvalConfig(
        n_problems=len(problems), k=1, seed=seed, temperature=temperature, max_new_tokens=max_new_tokens),
        (lambda kind, done, total: progress(done, total)) if progress else None)
    return rollouts["none"]


def run_analysis(model, tokenizer, task, problems: Iterable[Problem], rollouts: Sequence[Rollout],
                 out_dir: str | os.PathLike, contexts: Sequence[str] = REPORT_CONTEXTS,
                 critic: Critic | None = None, max_html: int = 50, *,
                 progress: Callable[[int, int], None] | None = None) -> AnalysisResult:
    """Analyse ``rollouts`` and write ``analysis.json``, ``analysis.html`` and the PNG plots to ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = analyze_rollouts(model, tokenizer, task, {p.id: p for p in problems}, rollouts, contexts, critic,
                              progress=progress)
    result.write_json(out_dir / "analysis.json")
    plots = write_plots(result, out_dir)
    write_html(result, out_dir / "analysis.html", max_rollouts=max_html, plots=plots)
    return result
