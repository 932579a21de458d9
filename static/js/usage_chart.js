// Monitor usage: draws a figure per day (credits, or a meter's values) from the
// JSON the page carries (Django's json_script, id in the canvas's
// data-chart-source; its `label` names the bars, its `unit` the figures). No inline
// script: the page works under a CSP that allows only scripts served from here.
// The chart's box is hidden and the table of the same figures open until this
// runs, so without JavaScript (or Chart.js) the page shows the table instead.
(function () {
  "use strict";

  function cssVar(name, fallback) {
    var value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return value || fallback;
  }

  function credits(value) {
    // Figures come as exact decimal strings; Chart.js plots numbers.
    return value === null ? null : Number(value);
  }

  function formatCredits(value) {
    return value.toLocaleString("en-US", { maximumFractionDigits: 6 });
  }

  function draw(canvas) {
    var source = document.getElementById(canvas.dataset.chartSource);
    if (!source || typeof window.Chart === "undefined") return;
    var data = JSON.parse(source.textContent);
    // The page shows the figures as a table until there is a chart to show.
    var box = canvas.closest(".usage-chart");
    if (box) box.hidden = false;
    var table = box && box.parentElement.querySelector("details.usage-chart-data");
    if (table) table.open = false;
    var reduceMotion = window.matchMedia("(prefers-reduced-motion: reduce)").matches;
    var accent = cssVar("--accent", "#4f46e5");
    var grid = cssVar("--gray-100", "#f1f5f9");
    var muted = cssVar("--gray-500", "#64748b");
    window.Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;

    new window.Chart(canvas, {
      type: "bar",
      data: {
        labels: data.labels,
        datasets: [
          {
            label: data.label || "Credits used",
            data: data.used.map(credits),
            backgroundColor: accent,
            hoverBackgroundColor: cssVar("--accent-hover", "#4338ca"),
            borderRadius: 3,
            maxBarThickness: 28,
          },
        ],
      },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: reduceMotion ? false : { duration: 300 },
        plugins: {
          legend: { display: false },
          tooltip: {
            callbacks: {
              label: function (context) {
                return formatCredits(context.parsed.y) + " " + (data.unit || "credits");
              },
            },
          },
        },
        scales: {
          x: {
            grid: { display: false },
            ticks: { color: muted, autoSkip: true, maxRotation: 0, autoSkipPadding: 8 },
          },
          y: {
            beginAtZero: true,
            grid: { color: grid },
            border: { display: false },
            ticks: { color: muted, maxTicksLimit: 6 },
          },
        },
      },
    });
  }

  function init() {
    document.querySelectorAll("canvas[data-chart-source]").forEach(draw);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
