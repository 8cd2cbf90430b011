"""Plotly figures for the book, and the renderer that makes them work offline.

The book is built by Jupyter Book 1.x (myst-nb) from notebooks executed by papermill.
Plotly's stock notebook renderers do not survive that trip offline: the ``notebook``
renderers load plotly.js or MathJax from a CDN, and the default
``plotly_mimetype`` output is silently dropped by myst-nb. :func:`use_offline_renderer`
registers the renderer ``"ig_ap"``, whose output carries two representations:

- ``text/html``: ``pio.to_html(..., include_plotlyjs=False, include_mathjax=False)``,
  a ``<div>`` and a script that calls ``Plotly.newPlot``. myst-nb renders this one; the
  page loads ``plotly.min.js`` from the book's own ``_static/`` folder (copied there by
  :mod:`ig_ap.book` from the installed plotly package, see :func:`plotly_js_path`).
- ``application/vnd.plotly.v1+json``: the figure itself, which JupyterLab draws when a
  researcher opens the notebook interactively.

Every figure has a title, labelled axes and hover text. In the book each one goes through
:func:`show`: numbered and captioned (the caption says what one point or cell is), with a
link to a CSV of exactly the numbers it draws (:func:`figure_table`), written next to the
page when :mod:`ig_ap.book` executes the chapter. A :class:`Page` keeps one page's figure
numbers and where its CSVs go (a chapter's :class:`ig_ap.book.Chapter` holds one).
"""

from __future__ import annotations

import html
import re
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import plotly
import plotly.graph_objects as go
import plotly.io as pio
from plotly.colors import qualitative
from plotly.io._base_renderers import MimetypeRenderer, PlotlyRenderer
from plotly.subplots import make_subplots

from ig_ap.analysis import CorrelationSummary, Interval, correlation_summary, per_prompt_correlation
from ig_ap.storage import write_files_atomically

RENDERER = "ig_ap"
PLOTLY_MIMETYPE = "application/vnd.plotly.v1+json"


class OfflineRenderer(MimetypeRenderer):
    """Emit a figure as HTML that needs only a locally served ``plotly.min.js``, plus the plotly JSON."""

    config = {"displaylogo": False, "responsive": True}

    def to_mimebundle(self, fig_dict):
        html = pio.to_html(
            fig_dict,
            include_plotlyjs=False,
            include_mathjax=False,
            full_html=False,
            config=self.config,
        )
        bundle = PlotlyRenderer(config=self.config).to_mimebundle(dict(fig_dict))
        bundle["text/html"] = html
        return bundle


def use_offline_renderer() -> None:
    """Make ``fig.show()`` (and a figure as a cell's last value) use the offline renderer."""
    pio.renderers[RENDERER] = OfflineRenderer()
    pio.renderers.default = RENDERER


def figure_table(fig: go.Figure):
    """The numbers ``fig`` draws, as one long ``pandas.DataFrame``: a row per bar, point or heatmap cell.

    Columns: ``trace`` (its legend or panel name), ``type`` (bar, scatter, heatmap),
    ``label`` (the component or point a row is, where the figure names it: ``L3H1``),
    ``x``, ``y``, ``value`` (a heatmap cell's colour value; empty otherwise), ``error_plus``
    and ``error_minus`` (the error bar's extent above and below, where drawn).
    """
    import pandas as pd

    rows = []
    for index, trace in enumerate(fig.data):
        name = trace.name or f"trace {index}"
        if trace.type == "heatmap":
            z = np.asarray(trace.z, dtype=float)
            xs = list(trace.x) if trace.x is not None else list(range(z.shape[1]))
            ys = list(trace.y) if trace.y is not None else list(range(z.shape[0]))
            text = np.asarray(trace.text, dtype=object) if trace.text is not None else None
            for i, y in enumerate(ys):
                for j, x in enumerate(xs):
                    label = text[i][j] if text is not None and text.ndim == 2 else None
                    rows.append({"trace": name, "type": "heatmap", "label": label, "x": x, "y": y, "value": z[i, j]})
            continue
        xs = list(trace.x) if trace.x is not None else list(range(len(trace.y)))
        ys = list(trace.y) if trace.y is not None else [None] * len(xs)
        error = getattr(trace, "error_y", None)
        plus = list(error.array) if error is not None and error.array is not None else [None] * len(xs)
        minus = list(error.arrayminus) if error is not None and error.arrayminus is not None else plus
        text = trace.text if trace.text is not None and not isinstance(trace.text, str) else [None] * len(xs)
        for x, y, up, down, label in zip(xs, ys, plus, minus, text):
            rows.append({"trace": name, "type": trace.type, "label": label, "x": x, "y": y, "error_plus": up,
                         "error_minus": down})
    columns = ["trace", "type", "label", "x", "y", "value", "error_plus", "error_minus"]
    return pd.DataFrame(rows).reindex(columns=columns)


class Page:
    """One page's figures: their numbers (1, 2, ... in the order shown) and the folder their CSVs go to.

    ``data``: the folder (``.../data/<chapter>``) where :meth:`show` writes each figure's
    CSV; :mod:`ig_ap.book` copies it next to the page. ``None`` (a notebook opened by
    hand): no CSV is written and no link shown.
    """

    def __init__(self, data: str | Path | None = None):
        self.data = None if data is None else Path(data)
        self.numbers: dict[str, int] = {}  # figure name -> its number on this page

    def show(self, fig: go.Figure, name: str, caption: str) -> None:
        """Display ``fig`` numbered (``Figure N`` on its page) with ``caption``, and a link to its numbers as CSV.

        ``name`` (letters, digits, ``-``) identifies the figure on its page: the prose refers to it
        as ``{glue:md}`name``` (glued as "Figure N"), and its CSV is ``<name>.csv``. ``caption``
        (Markdown) says what the figure shows and what one point, bar or cell is.
        """
        from IPython.display import HTML, Markdown, display
        from myst_nb import glue

        if not re.fullmatch(r"[A-Za-z0-9-]+", name):
            raise ValueError(f"figure name {name!r} must be letters, digits and '-'")
        if name in self.numbers:
            raise ValueError(f"figure name {name!r} is used twice on this page")
        number = self.numbers[name] = len(self.numbers) + 1
        _wrap_titles(fig)
        display(fig)
        link = ""
        if self.data is not None:
            table = figure_table(fig)
            write_files_atomically([self.data / f"{name}.csv"], [lambda tmp: table.to_csv(tmp, index=False)])
            href = f"data/{self.data.name}/{name}.csv"
            link = f' <a class="figure-data" href="{html.escape(href)}" download>Data (CSV)</a>'
        display(HTML(f'<p class="figure-caption" id="{name}"><strong>Figure {number}.</strong> '
                     f"{_inline_markdown(caption)}{link}</p>"))
        glue(name, Markdown(f'<a href="#{name}">Figure {number}</a>'), display=False)

    @staticmethod
    def not_drawn(name: str, reason: str) -> None:
        """Say that the figure ``name`` is not drawn on this run and why; the prose's ``{glue:md}`name``` then reads
        "no figure: reason"."""
        from IPython.display import Markdown, display
        from myst_nb import glue

        display(Markdown(f"*No figure: {reason}.*"))
        glue(name, Markdown(f"(no figure: {reason})"), display=False)


def _wrap(text: str, width: int) -> str:
    """``text`` broken with ``<br>`` into lines of at most about ``width`` characters (plotly titles never wrap)."""
    if not text or len(text) <= width or "<br>" in text:
        return text
    lines, line = [], ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return "<br>".join(lines + [line])


def _wrap_titles(fig: go.Figure, width: int = 80, panel_width: int = 28) -> None:
    """Wrap a figure's title and its panel titles so that none runs off the plot (in place)."""
    title = fig.layout.title.text
    if title and len(title) > width:
        fig.update_layout(title_text=_wrap(title, width), margin_t=max(fig.layout.margin.t or 0, 110))
    panels = len(fig.layout.annotations)
    for annotation in fig.layout.annotations:
        if annotation.text and panels > 1:
            annotation.text = _wrap(annotation.text, panel_width)
    if title and panels > 1:  # panel titles sit just above the plots: keep the figure's title above them, not on them
        title_lines = fig.layout.title.text.count("<br>") + 1
        panel_lines = max((a.text.count("<br>") + 1 for a in fig.layout.annotations if a.text), default=0)
        top = 36 + 22 * title_lines + 18 * panel_lines
        fig.update_layout(margin_t=max(fig.layout.margin.t or 0, top), title_yref="container", title_y=1 - 12 / (fig.layout.height or 450),
                          title_yanchor="top")


def slug(text: str) -> str:
    """``text`` as a figure name part: lower case letters, digits and ``-`` (``"Greater-Than"`` → ``"greater-than"``)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def _inline_markdown(text: str) -> str:
    """Captions: escape HTML, then `code`, **bold** and *italic* (all a caption needs)."""
    text = html.escape(text, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"\*([^*]+)\*", r"<em>\1</em>", text)


def plotly_js_path() -> Path:
    """The ``plotly.min.js`` shipped with the installed plotly package (the one the HTML expects)."""
    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def token_bar(tokens: Sequence[str], probs: Sequence[float], title: str, subtitle: str | None = None) -> go.Figure:
    """Horizontal bar chart of next-token probabilities, most likely token on top."""
    labels = [repr(t) for t in tokens]
    fig = go.Figure(
        go.Bar(
            x=list(probs)[::-1],
            y=labels[::-1],
            orientation="h",
            hovertemplate="token %{y}<br>probability %{x:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=dict(text=title, subtitle=dict(text=subtitle) if subtitle else None),
        xaxis_title="probability of the next token",
        yaxis_title="token",
        height=80 + 28 * len(labels),
        margin=dict(l=120, r=20, t=90, b=50),
    )
    return fig


# --------------------------------------------------------------------------- attribution figures

DIVERGING = "RdBu_r"
MIN_PLOT_HEIGHT = 160
"""px: the least height of a heatmap's plot area, whatever its rows (a model of 2 layers still gets a readable map; the
phone check in tests/test_book.py reports plot areas under 120 px)."""


def component_names(kind: str, n_layers: int, n_components: int) -> np.ndarray:
    """``[layer, component]`` labels: ``L9H6`` for heads, ``L4N1297`` for neurons."""
    letter = "H" if kind == "heads" else "N"
    return np.array([[f"L{l}{letter}{c}" for c in range(n_components)] for l in range(n_layers)])


def _mean(scores) -> np.ndarray:
    """Mean over prompts of ``[prompt, layer, component]``, or a ``[layer, component]`` array as is."""
    array = scores.detach().cpu().double().numpy() if hasattr(scores, "detach") else np.asarray(scores, dtype=float)
    if array.ndim != 3:
        return array
    with warnings.catch_warnings():  # components no prompt has a score for (not computed) stay NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(array, axis=0)


def _heatmap_trace(values: np.ndarray, limit: float, label: str, showscale: bool = True, name: str | None = None) -> go.Heatmap:
    names = component_names("heads", *values.shape)
    return go.Heatmap(
        name=name or label, z=values, x=list(range(values.shape[1])), y=list(range(values.shape[0])), text=names,
        colorscale=DIVERGING, zmid=0, zmin=-limit, zmax=limit, showscale=showscale,
        colorbar=dict(title=label),
        hovertemplate="%{text}<br>" + label + " %{z:.4f}<extra></extra>",
    )


def head_heatmap(scores, title: str, label: str = "score") -> go.Figure:
    """Layer × head heatmap of scores (mean over prompts if given per prompt), zero in white."""
    values = _mean(scores)
    limit = float(np.nanmax(np.abs(values))) or 1.0
    fig = go.Figure(_heatmap_trace(values, limit, label))
    fig.update_layout(title=title, xaxis_title="head", yaxis_title="layer", height=200 + max(14 * values.shape[0], MIN_PLOT_HEIGHT))
    return fig


def compare_heatmaps(a, b, names: tuple[str, str], title: str, label: str = "score") -> go.Figure:
    """Two methods' layer × head heatmaps side by side, on one colour scale."""
    va, vb = _mean(a), _mean(b)
    limit = float(np.nanmax(np.abs(np.concatenate([va.ravel(), vb.ravel()])))) or 1.0
    fig = make_subplots(rows=1, cols=2, subplot_titles=list(names), shared_yaxes=True, horizontal_spacing=0.06)
    fig.add_trace(_heatmap_trace(va, limit, label, showscale=False, name=names[0]), row=1, col=1)
    fig.add_trace(_heatmap_trace(vb, limit, label, name=names[1]), row=1, col=2)
    fig.update_layout(title=title, height=220 + max(14 * va.shape[0], MIN_PLOT_HEIGHT))
    fig.update_xaxes(title_text="head")
    fig.update_yaxes(title_text="layer", row=1, col=1)
    return fig


def attention_positions(pattern, heads: Sequence[str], tokens: Sequence[str], title: str) -> go.Figure:
    """Heads × positions heatmap of attention from the last token of one prompt (0 to 1), the prompt's tokens on the x axis."""
    values = np.asarray(pattern, dtype=float)[:, :len(tokens)]
    labels = [f"{i} {t}" for i, t in enumerate(tokens)]  # position first: a token that repeats keeps its own column
    fig = go.Figure(go.Heatmap(
        name="attention", z=values, x=labels, y=list(heads), zmin=0, zmax=1, colorscale="Blues",
        colorbar=dict(title="attention"), hovertemplate="%{y} → %{x}<br>attention %{z:.3f}<extra></extra>",
    ))
    fig.update_layout(title=title, xaxis_title="position and token (the prompt)", yaxis_title="head",
                      height=220 + max(40 * len(heads), MIN_PLOT_HEIGHT), xaxis_tickangle=-60)
    return fig


def method_scatter(a, b, names: tuple[str, str], kind: str, title: str) -> go.Figure:
    """Scatter of two methods' scores per component (mean over prompts); the title gives the per-prompt r."""

    va, vb = _mean(a), _mean(b)
    labels = component_names(kind, *va.shape).ravel()
    keep = ~(np.isnan(va.ravel()) | np.isnan(vb.ravel()))
    summary = None
    if hasattr(a, "dim") and a.dim() == 3:
        summary = f"per-prompt Pearson {correlation_summary(per_prompt_correlation(a, b))}"
    fig = go.Figure(go.Scattergl(
        name=kind, x=va.ravel()[keep], y=vb.ravel()[keep], mode="markers", text=labels[keep], marker=dict(size=4, opacity=0.6),
        hovertemplate="%{text}<br>" + names[0] + " %{x:.4f}<br>" + names[1] + " %{y:.4f}<extra></extra>",
    ))
    fig.update_layout(title=dict(text=title, subtitle=dict(text=summary) if summary else None),
                      xaxis_title=f"{names[0]} (mean over prompts)", yaxis_title=f"{names[1]} (mean over prompts)", height=480)
    return fig


def _with_error(v) -> tuple[float, float | None, float | None]:
    """(value, error above, error below) of a number, a ``(mean, sd)`` pair, an
    :class:`~ig_ap.analysis.Interval` (its interval; none drawn where it has none or is unbounded) or a
    :class:`~ig_ap.analysis.CorrelationSummary` (the Fisher-z mean of r and its interval when
    it has one, else mean |r| ± sd)."""
    if isinstance(v, CorrelationSummary):
        v = v.fisher if v.fisher is not None else (v.mean_abs, v.sd_abs)
    if isinstance(v, Interval):
        if not np.isfinite(v.low):
            return v.value, None, None
        return v.value, v.high - v.value, v.value - v.low
    if isinstance(v, (tuple, list)):
        return float(v[0]), float(v[1]), float(v[1])
    return float(v), None, None


def _error_bars(triples) -> dict | None:
    if all(up is None for _, up, _ in triples):
        return None
    return dict(type="data", symmetric=False, array=[up or 0.0 for _, up, _ in triples],
                arrayminus=[down or 0.0 for _, _, down in triples], visible=True)


def correlation_bars(summaries: dict[str, dict[str, object]], title: str) -> go.Figure:
    """Per-prompt r between two methods for each task, heads and neurons side by side.

    ``summaries[task][kind]`` is an :class:`ig_ap.analysis.CorrelationSummary`: with
    intervals, the bar is the mean r through Fisher's z and the error bar its 95%
    interval over prompts; without, mean |r| ± sd.
    """
    fig = go.Figure()
    tasks = list(summaries)
    with_intervals = any(getattr(k, "fisher", None) is not None for t in tasks for k in summaries[t].values())
    lowest = 0.0
    for kind in ("heads", "neurons"):
        present = [t for t in tasks if kind in summaries[t]]
        if not present:
            continue
        triples = [_with_error(summaries[t][kind]) for t in present]
        lowest = min([lowest] + [v - (down or 0.0) for v, _, down in triples if np.isfinite(v)])
        fig.add_trace(go.Bar(
            name=kind, x=present, y=[v for v, _, _ in triples], error_y=_error_bars(triples),
            hovertemplate="%{x} " + kind + "<br>r %{y:.3f}<extra></extra>",
        ))
    label = "mean per-prompt r (Fisher z), 95% interval" if with_intervals else "mean per-prompt |r|"
    fig.update_layout(title=title, xaxis_title="task", yaxis_title=label, barmode="group", yaxis_range=_correlation_axis(lowest))
    return fig


def _correlation_axis(lowest: float) -> list[float]:
    """A correlation's axis: from 0 unless a bar or its interval goes below it (then from that value, at most −1), to 1."""
    return [max(-1.05, lowest - 0.05) if lowest < 0 else 0, 1.05]


def faithfulness_curves(sizes, curves: dict[str, object], title: str, kind: str = "heads") -> go.Figure:
    """Faithfulness against the number of components kept, one line per method.

    A curve is a list of :class:`~ig_ap.analysis.Interval` (one per size: the mean over
    prompts and its interval), or a ``[size, prompt]`` tensor (mean ± sd).
    """
    fig = go.Figure()
    for method, values in curves.items():
        if isinstance(values, (list, tuple)) and values and isinstance(values[0], Interval):
            triples = [_with_error(v) for v in values]
        else:
            array = values.detach().cpu().double().numpy() if hasattr(values, "detach") else np.asarray(values, dtype=float)
            triples = [(m, sd, sd) for m, sd in zip(array.mean(axis=1), array.std(axis=1))]
        fig.add_trace(go.Scatter(
            x=list(sizes), y=[v for v, _, _ in triples], name=method, mode="lines+markers", error_y=_error_bars(triples),
            hovertemplate=method + ": top %{x} " + kind + "<br>faithfulness %{y:.3f}<extra></extra>",
        ))
    fig.update_layout(title=title, xaxis_title=f"{kind} kept (top-k by |score|)", yaxis_title="faithfulness (normalised metric kept)",
                      xaxis_type="category")  # set sizes grow geometrically: evenly spaced labels
    return fig


def asymmetry_map(asym, title: str) -> go.Figure:
    """Layer × head map of the AP asymmetry: > 0 OR-like (found by denoising), < 0 AND-like (found by noising)."""
    return head_heatmap(asym, title, label="asymmetry")


def grouped_bars(values: dict[str, dict[str, object]], title: str, yaxis: str, xaxis: str = "task", yrange=None) -> go.Figure:
    """Bars grouped by the outer key (e.g. task), one series per inner key (e.g. method pair).

    A value is a number, a ``(mean, sd)`` pair, an :class:`ig_ap.analysis.Interval` (drawn
    with its interval) or a :class:`ig_ap.analysis.CorrelationSummary` (see
    :func:`correlation_bars`). Missing values leave a gap. ``yrange``: the y axis's range, or
    ``"correlation"``: from 0 (or the lowest bar or interval below it, at most −1) to 1.
    """
    groups = list(values)
    series = list(dict.fromkeys(s for g in groups for s in values[g]))
    fig = go.Figure()
    lowest = 0.0
    for name in series:
        present = [g for g in groups if name in values[g]]
        triples = [_with_error(values[g][name]) for g in present]
        lowest = min([lowest] + [v - (down or 0.0) for v, _, down in triples if np.isfinite(v)])
        fig.add_trace(go.Bar(
            name=name, x=present, y=[v for v, _, _ in triples], error_y=_error_bars(triples),
            hovertemplate="%{x}<br>" + name + ": %{y:.3f}<extra></extra>",
        ))
    fig.update_layout(title=title, xaxis_title=xaxis, yaxis_title=yaxis, barmode="group", legend_title_text="")
    if yrange is not None:
        fig.update_yaxes(range=_correlation_axis(lowest) if yrange == "correlation" else list(yrange))
    return fig


def stacked_bars(values: dict[str, dict[str, float]], title: str, yaxis: str, xaxis: str = "task",
                 totals: dict[str, dict[str, float]] | None = None) -> go.Figure:
    """One bar per outer key (e.g. task and method), stacked from its parts (inner keys, one colour each); a negative part
    is drawn below 0 (plotly's relative stacking). ``totals``: ``{name: {bar: value}}``, a marker per bar (e.g. the sum
    of signed parts, which relative stacking does not show)."""
    groups = list(values)
    parts = list(dict.fromkeys(p for g in groups for p in values[g]))
    fig = go.Figure()
    for part in parts:
        present = [g for g in groups if part in values[g]]
        fig.add_trace(go.Bar(name=part, x=present, y=[float(values[g][part]) for g in present],
                             hovertemplate="%{x}<br>" + part + ": %{y:.4f}<extra></extra>"))
    for name, by_bar in (totals or {}).items():
        present = [g for g in groups if g in by_bar]
        fig.add_trace(go.Scatter(name=name, x=present, y=[float(by_bar[g]) for g in present], mode="markers",
                                 marker=dict(symbol="diamond", size=11, color="black"),
                                 hovertemplate="%{x}<br>" + name + ": %{y:.4f}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title=xaxis, yaxis_title=yaxis, barmode="relative", legend_title_text="")
    return fig


def coalition_curves(curves: dict[str, tuple[Sequence[float], Sequence[float], Sequence[float]]], title: str, xaxis: str,
                     yaxis: str) -> go.Figure:
    """Per component, ``(x, observed, predicted)``: two lines of one colour, the observed solid and the prediction dashed
    (e.g. IG − AP with m partners moving against ½ Σ I over them)."""
    fig = go.Figure()
    palette = qualitative.Plotly
    for i, (name, (x, observed, predicted)) in enumerate(curves.items()):
        colour = palette[i % len(palette)]
        fig.add_trace(go.Scatter(x=list(x), y=list(observed), mode="lines+markers", name=f"{name}: observed", legendgroup=name,
                                 line=dict(color=colour), hovertemplate=name + "<br>%{x}: %{y:.4f}<extra></extra>"))
        fig.add_trace(go.Scatter(x=list(x), y=list(predicted), mode="lines+markers", name=f"{name}: ½ Σ I", legendgroup=name,
                                 line=dict(color=colour, dash="dash"), marker=dict(symbol="circle-open"),
                                 hovertemplate=name + " ½ Σ I<br>%{x}: %{y:.4f}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title=xaxis, yaxis_title=yaxis)
    return fig


def partner_map(rows: dict[str, Sequence[float]], partners: Sequence[str], title: str, label: str = "I") -> go.Figure:
    """Each row (a component) against each of its possible partners (columns): the interaction of the pair, zero in
    white; a row's own column (no pair) is left blank."""
    z = np.asarray([np.asarray(v, dtype=float) for v in rows.values()])
    limit = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
    fig = go.Figure(go.Heatmap(
        name=label, z=z, x=list(partners), y=list(rows), colorscale=DIVERGING, zmid=0, zmin=-(limit or 1.0),
        zmax=limit or 1.0, colorbar=dict(title=label), hovertemplate="%{y} with %{x}<br>" + label + " %{z:.4f}<extra></extra>",
    ))
    fig.update_layout(title=title, xaxis_title="partner (a head of the same layer)", yaxis_title="head",
                      height=200 + max(36 * len(rows), MIN_PLOT_HEIGHT), yaxis_autorange="reversed")
    return fig


def completeness_bars(attribution, title: str) -> go.Figure:
    """IG's completeness error per layer (worst prompt), relative to the clean−corrupted gap, log scale.

    The error of a layer is |sum of its components' attributions − the change of the metric
    when that layer goes from baseline to input|; a large one means the path is curved
    more sharply than the quadrature's steps can follow.
    """
    fig = go.Figure()
    for kind, table in attribution.completeness.items():
        worst = table["relative"].max(dim=0).values.clamp_min(1e-12).detach().cpu().numpy()
        fig.add_trace(go.Bar(
            name=kind, x=list(range(len(worst))), y=worst,
            hovertemplate="layer %{x} " + kind + "<br>relative error %{y:.2e}<extra></extra>",
        ))
    fig.update_layout(title=title, xaxis_title="layer", yaxis_title="completeness error / |clean − corrupted|",
                      yaxis_type="log", barmode="group")
    return fig


def path_matrix(effects, senders: Sequence[str], receivers: Sequence[str], inputs: Sequence[str], title: str) -> go.Figure:
    """Sender × receiver heatmaps of path-patching effects, one panel per receiver input (q, k, v).

    ``effects`` is ``[input, sender, receiver]`` (or ``[input, sender, receiver, prompt]``,
    averaged over prompts), in fractions of the clean−corrupted gap.
    """
    array = effects.detach().cpu().double().numpy() if hasattr(effects, "detach") else np.asarray(effects, dtype=float)
    if array.ndim == 4:
        array = array.mean(-1)
    finite = np.abs(array[np.isfinite(array)])
    limit = float(finite.max()) if finite.size and finite.max() > 0 else 1.0  # NaN cells (not measured) stay blank
    fig = make_subplots(rows=1, cols=len(inputs), subplot_titles=[f"receiver's {x}" for x in inputs], shared_yaxes=True,
                        horizontal_spacing=0.04)
    for i, name in enumerate(inputs):
        text = [[f"{s} → {r} ({name})" for r in receivers] for s in senders]
        fig.add_trace(go.Heatmap(
            name=f"receiver's {name}", z=array[i], x=list(receivers), y=list(senders), text=text, colorscale=DIVERGING, zmid=0, zmin=-limit, zmax=limit,
            showscale=i == len(inputs) - 1, colorbar=dict(title="effect"),
            hovertemplate="%{text}<br>effect %{z:.4f}<extra></extra>",
        ), row=1, col=i + 1)
    fig.update_layout(title=title, height=260 + max(22 * len(senders), MIN_PLOT_HEIGHT))
    fig.update_xaxes(title_text="receiver")
    fig.update_yaxes(title_text="sender", row=1, col=1)
    return fig


def path_profile_lines(curves: dict[str, object], title: str) -> go.Figure:
    """Cumulative share of each component's IG attribution along the path (α from baseline 0 to input 1).

    ``curves`` maps a label to the cumulative share at the end of each of the equal α
    segments (:func:`ig_ap.analysis.path_accumulation`); the dotted diagonal is a gradient
    that stays the same along the whole path.
    """
    fig = go.Figure()
    for label, values in curves.items():
        values = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values, dtype=float)
        alphas = np.linspace(0, 1, len(values) + 1)
        fig.add_trace(go.Scatter(x=alphas, y=np.concatenate([[0.0], values]), mode="lines+markers", name=label,
                                 hovertemplate=label + "<br>α %{x:.2f}: %{y:.2f} of the attribution<extra></extra>"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="uniform gradient", line=dict(dash="dot", color="grey")))
    fig.update_layout(title=title, xaxis_title="α (0 = baseline, 1 = input)", yaxis_title="share of the attribution so far")
    return fig


def paired_scatter(series: dict[str, tuple[object, object]], title: str, xaxis: str, yaxis: str, diagonal: bool = True) -> go.Figure:
    """One group of points per series (``(x, y)``, e.g. one point per prompt), with the line y = x for reference."""
    fig = go.Figure()
    top = bottom = 0.0
    for name, (x, y) in series.items():
        x, y = (np.asarray(v.detach().cpu() if hasattr(v, "detach") else v, dtype=float).ravel() for v in (x, y))
        top = max(top, float(np.nanmax(np.concatenate([x, y]))) if len(x) else 0.0)
        bottom = min(bottom, float(np.nanmin(np.concatenate([x, y]))) if len(x) else 0.0)
        fig.add_trace(go.Scatter(x=x, y=y, mode="markers", name=name, marker=dict(size=7, opacity=0.7),
                                 hovertemplate=name + "<br>" + xaxis + " %{x:.3f}<br>" + yaxis + " %{y:.3f}<extra></extra>"))
    if diagonal:
        fig.add_trace(go.Scatter(x=[bottom, top], y=[bottom, top], mode="lines", name="y = x", line=dict(dash="dot", color="grey")))
    fig.update_layout(title=title, xaxis_title=xaxis, yaxis_title=yaxis)
    return fig


def line_curves(x, series: dict[str, object], title: str, xaxis: str, yaxis: str, yrange=None) -> go.Figure:
    """One line per series over the shared ``x`` values (e.g. precision or recall against k)."""
    fig = go.Figure()
    for name, values in series.items():
        fig.add_trace(go.Scatter(x=list(x), y=list(values), mode="lines+markers", name=name,
                                 hovertemplate=name + "<br>" + xaxis + " %{x}: %{y:.3f}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title=xaxis, yaxis_title=yaxis)
    if yrange is not None:
        fig.update_yaxes(range=list(yrange))
    return fig
