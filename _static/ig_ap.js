/* ig-ap: figures that fit their page.
   Plotly sizes a figure from its container when it is drawn; a page laid out again later (a phone
   turned, a window resized, fonts loaded, a folded cell opened) leaves it at its first width. Each
   figure is resized whenever its container's width changes, and on narrow screens (under 600 px)
   its legend moves to the foot of the figure, horizontal, below the axis labels, so that no entry is
   cut and the plot keeps its width and its height. */
(function () {
  "use strict";
  var NARROW = 600;

  var BELOW = {"legend.orientation": "h", "legend.xref": "container", "legend.x": 0, "legend.xanchor": "left",
               "legend.yref": "container", "legend.y": 0, "legend.yanchor": "bottom"};

  /* The legend at the foot of the figure, under the tick labels and axis titles, every entry shown (no scrolling
     legend): the bottom margin and the figure's height grow by the legend's height, so the plot area keeps its size
     however many entries there are. */
  function legendBelow(plot) {
    var margin = plot._fullLayout._size.b, height = plot._fullLayout.height;
    var below = Object.assign({"legend.maxheight": 100000}, BELOW);
    return window.Plotly.relayout(plot, below).then(function () {
      var legend = plot.querySelector(".legend");
      var extra = (legend ? legend.getBoundingClientRect().height : 0) + 8;
      return window.Plotly.relayout(plot, {"margin.b": margin + extra, "height": height + extra});
    });
  }

  function fit(plot) {
    if (!window.Plotly || !plot.layout || !plot._fullLayout) return;
    var width = plot.parentElement.getBoundingClientRect().width;
    if (width === plot._igApWidth) return;  // only a change of width redraws (a height change is the figure's own)
    plot._igApWidth = width;
    var narrow = width < NARROW;
    var legend = plot._fullLayout.showlegend;
    window.Plotly.Plots.resize(plot).then(function () {
      if (!legend || plot._igApNarrow === narrow) return;
      if (plot._igApOriginal === undefined) {
        plot._igApOriginal = {legend: JSON.parse(JSON.stringify(plot.layout.legend || {})),
                              "margin.b": (plot.layout.margin || {}).b === undefined ? null : plot.layout.margin.b,
                              height: plot.layout.height === undefined ? null : plot.layout.height};
      }
      plot._igApNarrow = narrow;
      return narrow ? legendBelow(plot) : window.Plotly.relayout(plot, plot._igApOriginal);
    });
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

  /* A wide table scrolls inside its box (ig_ap.css); one whose rows are named by a single column keeps that column
     in view (a table with several index columns, spanning rows, is left to scroll whole). */
  function stickRowNames() {
    document.querySelectorAll("table.dataframe").forEach(function (table) {
      var rows = table.querySelectorAll("tbody tr");
      var single = rows.length > 0 && Array.prototype.every.call(rows, function (row) {
        return row.querySelectorAll("th").length === 1 && !row.querySelector("th[rowspan]");
      });
      if (single) table.classList.add("ig-ap-sticky");
    });
  }

  function start() { stickRowNames(); watch(); }

  if (document.readyState === "complete") start();
  else window.addEventListener("load", start);
})();
