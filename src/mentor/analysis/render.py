"""The token-advantage report as people read it: the aggregate table, an HTML page with every token
coloured by its advantage, and the PNG plots (the numbers come from ``mentor.analysis.report``)."""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from mentor.contexts import CONTEXT_LABELS

if TYPE_CHECKING:
    from mentor.analysis.report import AnalysisResult, TokenAdvantages


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
        if r.error_at_answer:
            missing = r.case == "incomplete"
            return f"{answer} · every step right, the answer line {'missing' if missing else 'wrong'}"
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
    return f'<h2 id="plots">Plots</h2><div class="figs">{"".join(figures)}</div>' if figures else ""


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
        "<nav>Contents: <a href='#aggregates'>aggregates</a>" + (" · <a href='#plots'>plots</a>" if plots else "")
        + "".join(f" · <a href='#context-{html.escape(k)}'>{html.escape(_context_label(k))} rollouts</a>"
                  for k in shown) + "</nav>",
        "<table id='aggregates'><tr><th>context</th><th>prefix</th><th>first error</th><th>after</th><th>tokens</th>"
        f"<th>rollouts</th><th>skipped</th><th>unlocated</th></tr>{rows}</table>",
        f"<p>Colour: <span style='background:{_colour(-clip, clip)}'>A<sub>t</sub> = -{clip:.3g}</span> "
        f"· <span style='background:#ffffff'>0</span> · <span style='background:{_colour(clip, clip)}'>"
        f"+{clip:.3g}</span> (clipped); a bar starts each step; the first wrong step is underlined; "
        "hover a token for its A<sub>t</sub> and step.</p>",
        _figures_html(plots, path.parent),
    ]
    for kind, rollouts in shown.items():
        parts.append(f"<h2 id='context-{html.escape(kind)}'>context: {html.escape(_context_label(kind))}</h2>"
                     "<p class='meta'>showing "
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

    from mentor.analysis.token_advantage import pooled_mean_sem, region_groups

    fig, ax = plt.subplots(figsize=(6, 4))
    width = 0.8 / max(len(result.contexts), 1)
    for i, (kind, ctx) in enumerate(result.contexts.items()):
        located = [r for r in ctx.rollouts if r.located]
        regions = region_groups([torch.tensor(r.advantages) for r in located], [r.steps for r in located],
                                [r.first_error_step for r in located])
        stats = [pooled_mean_sem(region) for region in regions]
        xs = [j + i * width for j in range(3)]
        bars = ax.bar(xs, [m for m, _ in stats], width, yerr=[0 if math.isnan(s) else s for _, s in stats],
                      capsize=3, label=_context_label(kind))
        for x, (m, _), region in zip(xs, stats, regions):
            if not math.isnan(m):
                ax.annotate(f"n={len(region)}", (x, 0), textcoords="offset points", xytext=(0, 3 if m < 0 else -10),
                            ha="center", fontsize=7, color=bars.patches[0].get_facecolor())
    ax.set_xticks([j + width * (len(result.contexts) - 1) / 2 for j in range(3)],
                  ["correct prefix", "first wrong step", "after it"])
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(ylabel="mean A_t (±1 s.e., rollouts as clusters)",
           title="Per-token advantage by region (n = rollouts with tokens there)")
    if result.contexts:
        ax.legend()
    region_png = out_dir / "advantage_by_region.png"
    fig.savefig(region_png, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return [offset_png, region_png]
