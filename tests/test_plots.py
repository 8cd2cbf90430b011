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
