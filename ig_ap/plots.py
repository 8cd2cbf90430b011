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

Every figure has a title, labelled axes and hover text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import plotly
import plotly.graph_objects as go
import plotly.io as pio
from plotly.io._base_renderers import MimetypeRenderer, PlotlyRenderer

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
