"""Figures and the offline renderer."""

import plotly.io as pio

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
    curves = plots.faithfulness_curves([0, 2, 4], {"IG": torch.rand(3, 5), "AP": torch.rand(3, 5)}, "faithfulness")
    assert [t.name for t in curves.data] == ["IG", "AP"] and len(curves.data[0].y) == 3
    amap = plots.asymmetry_map(a.mean(0), "asymmetry")
    assert amap.data[0].zmid == 0 and "asymmetry" in amap.data[0].hovertemplate
    for figure in (fig, both, scatter, bars, curves, amap):
        assert figure.layout.title.text
