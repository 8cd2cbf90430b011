/* ig-ap: figures that fit their page.
   Plotly sizes a figure from its container when it is drawn; a page laid out again later (a phone
   turned, a window resized, fonts loaded, a folded cell opened) leaves it at its first width. Each
   figure is resized whenever its container's width changes, and on narrow screens (under 600 px)
   its legend moves below the plot, horizontal, so that no entry is cut. */
(function () {
  "use strict";
  var NARROW = 600;

  function fit(plot) {
    if (!window.Plotly || !plot.layout) return;
    var width = plot.parentElement.getBoundingClientRect().width;
    if (width === plot._igApWidth) return;  // only a change of width redraws (a height change is the figure's own)
    plot._igApWidth = width;
    var narrow = width < NARROW;
    var legend = plot.layout.showlegend !== false && (plot.data || []).length > 1;
    if (legend && plot._igApNarrow !== narrow) {
      plot._igApNarrow = narrow;
      if (plot._igApLegend === undefined) plot._igApLegend = JSON.parse(JSON.stringify(plot.layout.legend || {}));
      var update = narrow
        ? {"legend.orientation": "h", "legend.x": 0, "legend.xanchor": "left", "legend.y": -0.2, "legend.yanchor": "top"}
        : {"legend": plot._igApLegend};
      window.Plotly.relayout(plot, update);
    }
    window.Plotly.Plots.resize(plot);
  }

  function watch() {
    var plots = document.querySelectorAll(".js-plotly-plot");
    if (!("ResizeObserver" in window)) {
      plots.forEach(fit);
      window.addEventListener("resize", function () { plots.forEach(fit); });
      return;
    }
    var observer = new ResizeObserver(function (entries) {
      entries.forEach(function (entry) {
        var plot = entry.target.querySelector(".js-plotly-plot");
        if (plot) fit(plot);
      });
    });
    plots.forEach(function (plot) { observer.observe(plot.parentElement); fit(plot); });
  }

  if (document.readyState === "complete") watch();
  else window.addEventListener("load", watch);
})();
