"""Figures and the offline renderer."""

import plotly.io as pio
import pytest
import torch

from ig_ap import plots


def test_offline_renderer_emits_html_without_outside_urls_and_the_plotly_json():
    fig = plots.token_bar([" Mary", " the"], [0.9, 0.05], "title", subtitle="prompt")
    bundle = plots.OfflineRenderer().to_mimebundle(fig.to_dict())
    html = bundle["text/html"]
    assert "Plotly.newPlot" in html
    assert "<script src" not in html and "cdn" not in html.lower() and "mathjax" not in html.lower()
    assert bundle[plots.PLOTLY_MIMETYPE]["data"][0]["type"] == "bar"


def test_use_offline_renderer_makes_it_the_default():
    before = pio.renderers.default
    try:
        plots.use_offline_renderer()
        assert pio.renderers.default == plots.RENDERER
    finally:
        pio.renderers.default = before


def test_plotly_js_is_shipped_with_plotly():
    path = plots.plotly_js_path()
    assert path.is_file() and path.stat().st_size > 1_000_000


def test_token_bar_has_title_axes_hover_and_order():
    fig = plots.token_bar([" a", " b", " c"], [0.5, 0.3, 0.2], "Next token", subtitle="p")
    assert fig.layout.title.text == "Next token"
    assert fig.layout.xaxis.title.text and fig.layout.yaxis.title.text
    bar = fig.data[0]
    assert "probability" in bar.hovertemplate
    assert list(bar.y) == ["' c'", "' b'", "' a'"]  # most likely on top
    assert list(bar.x) == [0.2, 0.3, 0.5]


def _scores(seed=0, layers=3, comps=4, prompts=5):
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randn(prompts, layers, comps, generator=g)


def test_attribution_figures_build_with_named_hover():
    import torch

    from ig_ap.analysis import correlation_summary, per_prompt_correlation

    a, b = _scores(0), _scores(1)
    fig = plots.head_heatmap(a, "heads")
    assert fig.data[0].type == "heatmap" and fig.data[0].text[2][3] == "L2H3" and "%{text}" in fig.data[0].hovertemplate
    assert fig.layout.xaxis.title.text == "head" and fig.layout.yaxis.title.text == "layer"
    both = plots.compare_heatmaps(a, b, ("IG", "AP"), "IG vs AP")
    assert [t.type for t in both.data] == ["heatmap", "heatmap"]
    assert both.data[0].zmax == both.data[1].zmax == -both.data[0].zmin  # one colour scale
    scatter = plots.method_scatter(a, b, ("IG", "AP"), "neurons", "neurons")
    assert scatter.data[0].text[5] == "L1N1" and "|r|" in scatter.layout.title.subtitle.text
    summary = correlation_summary(per_prompt_correlation(a, b))
    bars = plots.correlation_bars({"IOI": {"heads": summary, "neurons": summary}, "Greater-Than": {"heads": summary}}, "r")
    assert [t.name for t in bars.data] == ["heads", "neurons"] and list(bars.data[0].x) == ["IOI", "Greater-Than"]
    low = summary.fisher.low if summary.fisher is not None else summary.mean_abs - summary.sd_abs
    assert bars.layout.yaxis.range[0] == (0 if low >= 0 else max(-1.05, low - 0.05))  # no empty half when every r is above 0
    positive = plots.correlation_bars({"IOI": {"heads": (0.6, 0.1)}}, "r")
    negative = plots.correlation_bars({"IOI": {"heads": (-0.2, 0.1)}}, "r")
    assert positive.layout.yaxis.range[0] == 0 and negative.layout.yaxis.range[0] == pytest.approx(-0.35)
    # grouped bars of correlations: the same axis rule (0 when every bar and interval is above it), or a fixed range
    grouped = plots.grouped_bars({"IOI": {"aligned": (0.9, 0.05), "zero": (0.3, 0.1)}}, "r", "r", yrange="correlation")
    below = plots.grouped_bars({"IOI": {"aligned": (0.9, 0.05), "zero": (-0.4, 0.2)}}, "r", "r", yrange="correlation")
    fixed = plots.grouped_bars({"IOI": {"aligned": (0.9, 0.05)}}, "r", "r", yrange=(0, 1.05))
    assert list(grouped.layout.yaxis.range) == [0, 1.05] and below.layout.yaxis.range[0] == pytest.approx(-0.65)
    assert list(fixed.layout.yaxis.range) == [0, 1.05] and plots.grouped_bars({"IOI": {"a": 0.5}}, "r", "r").layout.yaxis.range is None
    curves = plots.faithfulness_curves([0, 2, 4], {"IG": torch.rand(3, 5), "AP": torch.rand(3, 5)}, "faithfulness")
    assert [t.name for t in curves.data] == ["IG", "AP"] and len(curves.data[0].y) == 3
    amap = plots.asymmetry_map(a.mean(0), "asymmetry")
    assert amap.data[0].zmid == 0 and "asymmetry" in amap.data[0].hovertemplate
    stacked = plots.stacked_bars({"IOI, IG": {"explained": 0.3, "rest": 0.1}, "IOI, AtP": {"explained": -0.05, "rest": 0.4}},
                                 "budget", "squared disagreement")
    assert stacked.layout.barmode == "relative" and [t.name for t in stacked.data] == ["explained", "rest"]
    assert list(stacked.data[0].y) == [0.3, -0.05] and list(stacked.data[1].x) == ["IOI, IG", "IOI, AtP"]
    partners = plots.partner_map({"L3H1": [0.1, float("nan"), -0.2], "L5H0": [float("nan"), 0.05, 0.0]}, ["H0", "H1", "H2"], "partners")
    assert partners.data[0].zmid == 0 and partners.data[0].zmax == pytest.approx(0.2) and list(partners.data[0].y) == ["L3H1", "L5H0"]
    assert partners.data[0].showscale is not False  # the colour bar stays
    for figure in (fig, both, scatter, bars, curves, amap, stacked, partners):
        assert figure.layout.title.text


def test_figure_table_holds_exactly_the_numbers_drawn():
    import plotly.graph_objects as go

    fig = go.Figure([go.Bar(name="IG", x=["IOI", "Greater-Than"], y=[0.5, 0.25],
                            error_y=dict(type="data", array=[0.1, 0.2], arrayminus=[0.3, 0.05]))])
    table = plots.figure_table(fig)
    assert table[["x", "y", "error_plus", "error_minus"]].values.tolist() == [["IOI", 0.5, 0.1, 0.3], ["Greater-Than", 0.25, 0.2, 0.05]]
    heat = plots.figure_table(plots.compare_heatmaps(torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, float("nan")]]),
                                                     ("IG", "AP"), "t"))
    assert len(heat) == 4 and set(heat.trace) == {"IG", "AP"}
    assert heat[heat.trace == "IG"].value.tolist() == [1.0, 2.0] and heat[heat.trace == "IG"].label.tolist() == ["L0H0", "L0H1"]
    assert heat[heat.trace == "AP"].value.isna().tolist() == [False, True]  # not computed stays NaN, never 0


def test_show_numbers_figures_writes_their_csv_and_refuses_a_name_twice(tmp_path, monkeypatch):
    import plotly.graph_objects as go

    page = plots.Page(tmp_path / "data" / "02_chapter")
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj, **kw: shown.append(obj))
    plots.use_offline_renderer()
    try:
        for name in ("fig-a", "fig-b"):
            page.show(go.Figure(go.Bar(x=["a"], y=[1.5])), name, "One *bar* is one thing.")
        with pytest.raises(ValueError, match="used twice"):
            page.show(go.Figure(), "fig-a", "again")
        with pytest.raises(ValueError, match="letters, digits"):
            page.show(go.Figure(), "fig a", "bad name")
    finally:
        pio.renderers.default = "plotly_mimetype"
    captions = [o.data for o in shown if type(o).__name__ == "HTML"]
    assert "<strong>Figure 2.</strong> One <em>bar</em> is one thing." in captions[1]
    assert 'href="data/02_chapter/fig-b.csv"' in captions[1]
    assert (tmp_path / "data" / "02_chapter" / "fig-a.csv").read_text().splitlines()[1].startswith("trace 0,bar,,a,1.5")
    plots.Page().show(go.Figure(go.Bar(x=["a"], y=[1.0])), "fig-a", "caption")  # by hand: numbered, no CSV, no link
    last = [o.data for o in shown if type(o).__name__ == "HTML"][-1]
    assert "Data (CSV)" not in last and "<strong>Figure 1.</strong>" in last


def test_long_titles_wrap_instead_of_running_off_the_plot():
    fig = plots.compare_heatmaps(torch.zeros(2, 3), torch.zeros(2, 3), ("IG, corrupted baseline, corrupted run", "AP"),
                                 "IOI, prompt 0: 'Then, Ben and Jennifer had a long argument. Afterwards Jennifer said to'")
    plots._wrap_titles(fig)
    assert all(len(line) <= 80 for line in fig.layout.title.text.split("<br>")) and "<br>" in fig.layout.title.text
    assert [a.text for a in fig.layout.annotations] == ["IG, corrupted baseline,<br>corrupted run", "AP"]
    # the figure's title (2 lines) stays above the panel titles (up to 2 lines): the top margin holds both
    assert fig.layout.margin.t >= 36 + 22 * 2 + 18 * 2 and fig.layout.title.yanchor == "top" and fig.layout.title.yref == "container"
    title_bottom_px = (1 - fig.layout.title.y) * fig.layout.height + 22 * 2
    assert title_bottom_px < fig.layout.margin.t - 18 * 2  # above where the panel titles begin
