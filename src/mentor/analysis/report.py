"""The per-token advantage report: A_t of each context on a set of rollouts, as JSON, HTML and plots.

For every rollout and every context kind (reference solution, step-aligned critique) the self-teacher
scores the rollout's own tokens with the context and the student scores them without it (docs/methods.md
section 1). Tokens are split by where they stand relative to the rollout's first wrong step, as the
critic locates it; the same split is used for every context so their aggregates compare like for like.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
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
from mentor.contexts import build_context_prompt
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
    """Mean A_t of the tokens at one position (a step index, or a step offset from the first error)."""

    position: int
    mean: float
    tokens: int


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
    """The report's data: one :class:`ContextAnalysis` per context kind."""

    contexts: dict[str, ContextAnalysis]

    def to_json(self) -> str:
        return json.dumps(_nan_to_none(asdict(self)), ensure_ascii=False)

    def write_json(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_json(cls, text: str) -> AnalysisResult:
        contexts = {}
        for kind, row in json.loads(text)["contexts"].items():
            agg = row["aggregate"]
            means = [math.nan if agg[k] is None else agg[k] for k in ("prefix", "first_error", "after")]
            contexts[kind] = ContextAnalysis(
                kind=row["kind"],
                rollouts=[TokenAdvantages(**r) for r in row["rollouts"]],
                aggregate=StepAggregate(*means, tuple(agg["tokens"])),
                by_error_offset=[PositionMean(**p) for p in row["by_error_offset"]],
                by_step=[PositionMean(**p) for p in row["by_step"]],
                skipped=dict(row["skipped"]),
                unlocated=row.get("unlocated", 0),
            )
        return cls(contexts)


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


def _position_means(pairs: Iterable[tuple[int, float]]) -> list[PositionMean]:
    groups: dict[int, list[float]] = defaultdict(list)
    for position, a in pairs:
        groups[position].append(a)
    return [PositionMean(p, sum(v) / len(v), len(v)) for p, v in sorted(groups.items())]


def summarize_context(kind: str, rollouts: list[TokenAdvantages], skipped: dict[str, int]) -> ContextAnalysis:
    """Aggregates of one context's rollouts: prefix / first wrong step / after, and means by position."""
    located = [r for r in rollouts if r.located]
    aggregate = aggregate_by_error([torch.tensor(r.advantages) for r in located], [r.steps for r in located],
                                   [r.first_error_step for r in located])
    offsets = ((s - r.first_error_step, a) for r in located if r.first_error_step is not None
               for s, a in zip(r.steps, r.advantages))
    by_step = ((s, a) for r in located for s, a in zip(r.steps, r.advantages))
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
    return AnalysisResult({k: summarize_context(k, entries[k], skipped[k]) for k in contexts})


def _fmt(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:+.3f}"


def aggregate_table(result: AnalysisResult) -> str:
    """Markdown table of mean A_t on the correct prefix, the first wrong step and after it, per context."""
    lines = ["| context | prefix | first error | after | tokens (prefix / error / after) | rollouts | skipped |",
             "|---|---|---|---|---|---|---|"]
    for kind, ctx in result.contexts.items():
        agg = ctx.aggregate
        skipped = dict(ctx.skipped, **({"unlocated (not aggregated)": ctx.unlocated} if ctx.unlocated else {}))
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(skipped.items())) or "0"
        lines.append(f"| {kind} | {_fmt(agg.prefix)} | {_fmt(agg.first_error)} | {_fmt(agg.after)} | "
                     f"{' / '.join(map(str, agg.tokens))} | {len(ctx.rollouts)} | {reasons} |")
    return "\n".join(lines)


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
td,th{border:1px solid #bbb;padding:2px 8px;text-align:right}.row{display:flex;gap:1em;margin:.5em 0 1.5em}
.toks{flex:1;font-family:monospace;white-space:pre-wrap;line-height:1.7}.t{padding:1px 0}
.st{border-left:2px solid #333;margin-left:1px}.e{border-bottom:3px solid #b00000}
pre{flex:1;background:#f6f6f6;padding:.5em;margin:0;white-space:pre-wrap}.meta{color:#444;font-size:90%}"""


def _rollout_html(r: TokenAdvantages, clip: float) -> str:
    spans = []
    for i, (piece, a, step) in enumerate(zip(r.tokens, r.advantages, r.steps)):
        classes = "t" + (" st" if i == 0 or step != r.steps[i - 1] else "")
        classes += " e" if r.first_error_step is not None and step == r.first_error_step else ""
        spans.append(f'<span class="{classes}" style="background:{_colour(a, clip)}" '
                     f'title="A_t={a!r} step {step}">{html.escape(piece)}</span>')
    mean = sum(r.advantages) / len(r.advantages) if r.advantages else math.nan
    meta = (f"{html.escape(r.problem_id)} #{r.sample_index} · case {html.escape(str(r.case))} · first wrong step "
            f"{r.first_error_step} · {'correct' if r.correct else 'wrong'} · mean A_t {_fmt(mean)}")
    return (f'<div class="meta">{meta}</div><div class="row"><div class="toks">{"".join(spans)}</div>'
            f"<pre>{html.escape(r.context)}</pre></div>")


def write_html(result: AnalysisResult, path: str | os.PathLike, max_rollouts: int = 50,
               clip: float | None = None) -> Path:
    """One self-contained page: the aggregate table, then each context's rollouts with every token coloured
    by A_t (clipped at ``clip``, default the 98th percentile of |A_t| shown), step starts marked by a bar
    and the first wrong step underlined, beside the context the teacher saw."""
    shown = {k: c.rollouts[:max_rollouts] for k, c in result.contexts.items()}
    clip = clip or _percentile_clip([a for rows in shown.values() for r in rows for a in r.advantages])
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{_fmt(c.aggregate.prefix)}</td><td>{_fmt(c.aggregate.first_error)}"
        f"</td><td>{_fmt(c.aggregate.after)}</td><td>{' / '.join(map(str, c.aggregate.tokens))}</td>"
        f"<td>{len(c.rollouts)}</td><td>{html.escape(json.dumps(c.skipped))}</td><td>{c.unlocated}</td></tr>"
        for k, c in result.contexts.items())
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>Per-token advantage</title><style>{STYLE}"
        "</style></head><body><h1>Per-token advantage A<sub>t</sub> = log p(y<sub>t</sub> | x, c) - "
        "log p(y<sub>t</sub> | x)</h1>",
        "<table><tr><th>context</th><th>prefix</th><th>first error</th><th>after</th><th>tokens</th>"
        f"<th>rollouts</th><th>skipped</th><th>unlocated</th></tr>{rows}</table>",
        f"<p>Colour: <span style='background:{_colour(-clip, clip)}'>A<sub>t</sub> = -{clip:.3g}</span> "
        f"· <span style='background:#ffffff'>0</span> · <span style='background:{_colour(clip, clip)}'>"
        f"+{clip:.3g}</span> (clipped); a bar starts each step; the first wrong step is underlined.</p>",
    ]
    for kind, rollouts in shown.items():
        parts.append(f"<h2>context: {html.escape(kind)}</h2><p class='meta'>showing {len(rollouts)} of "
                     f"{len(result.contexts[kind].rollouts)} rollouts</p>")
        parts.extend(_rollout_html(r, clip) for r in rollouts)
    parts.append("</body></html>\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(parts), encoding="utf-8")
    return path


def write_plots(result: AnalysisResult, out_dir: str | os.PathLike, window: int = 3) -> list[Path]:
    """PNG plots: mean A_t by step offset from the first wrong step (within +-``window``), one line per
    context; and mean A_t on the prefix, the first wrong step and after it, bars per context."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    for kind, ctx in result.contexts.items():
        points = [p for p in ctx.by_error_offset if abs(p.position) <= window]
        if points:
            ax.plot([p.position for p in points], [p.mean for p in points], marker="o", label=kind)
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(0, color="#b00000", lw=0.8, ls="--")
    ax.set(xlabel="step - first wrong step", ylabel="mean A_t", title="Per-token advantage around the error")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    offset_png = out_dir / "advantage_by_error_offset.png"
    fig.savefig(offset_png, dpi=100, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    regions = ("prefix", "first_error", "after")
    width = 0.8 / max(len(result.contexts), 1)
    for i, (kind, ctx) in enumerate(result.contexts.items()):
        ax.bar([j + i * width for j in range(3)], [getattr(ctx.aggregate, r) for r in regions], width, label=kind)
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
    write_html(result, out_dir / "analysis.html", max_rollouts=max_html)
    write_plots(result, out_dir)
    return result
