// laminar ui: an execution page follows its run. The server sends the page's sections again, already
// rendered and escaped, whenever the run records change, and each log's new text only, like tail -f
// (Server-Sent Events); this swaps the sections in and appends the text, as text. Plotly figures are
// drawn with the plotly.js of the plotly package installed where the UI runs, loaded from the app.
"use strict";
// Characters a log keeps on the page: the oldest are dropped beyond it.
const LOG_KEPT = 200000;
let plotly = null; // plotly.js, once a page has a figure to draw
function drawFigures(root) {
  const pending = [...root.querySelectorAll(".plotly-figure[data-figure]:not([data-drawn])")];
  if (!pending.length) return;
  plotly = plotly || new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = "/static/plotly.min.js";
    script.onload = () => resolve(window.Plotly);
    script.onerror = reject;
    document.head.appendChild(script);
  });
  plotly.then((Plotly) => {
    for (const figure of pending) {
      figure.dataset.drawn = "1";
      const { data, layout } = JSON.parse(figure.dataset.figure);
      Plotly.newPlot(figure, data, layout || {}, { displayModeBar: false, responsive: true })
        .then(() => figure.parentElement.classList.add("drawn")); // the image or text it replaces hides
    }
  }, () => {}); // no plotly.js: the figure's image or text stays
}
document.addEventListener("DOMContentLoaded", () => {
  drawFigures(document);
  const live = document.getElementById("live");
  if (!live || !live.dataset.events) return;
  const head = document.getElementById("head");
  const logs = () => live.querySelectorAll("pre.log[data-log]");
  const source = new EventSource(live.dataset.events);
  source.addEventListener("update", (event) => {
    const update = JSON.parse(event.data);
    if (update.body !== null) {
      const open = new Set([...live.querySelectorAll("details[open]")].map((d) => d.parentElement.textContent.slice(0, 80)));
      const shown = new Map([...logs()].map((pre) => [pre.dataset.log, pre.textContent]));
      head.innerHTML = update.header;
      live.innerHTML = update.body;
      for (const details of live.querySelectorAll("details")) {
        if (open.has(details.parentElement.textContent.slice(0, 80))) details.open = true;
      }
      for (const pre of logs()) pre.textContent = shown.get(pre.dataset.log) || ""; // the log's blocks come empty
      drawFigures(live);
    }
    const fresh = new Set(update.fresh);
    for (const pre of logs()) {
      const key = pre.dataset.log;
      if (!(key in update.logs)) continue;
      const text = (fresh.has(key) ? "" : pre.textContent) + update.logs[key];
      pre.textContent = text.length > LOG_KEPT ? text.slice(-LOG_KEPT) : text;
      pre.scrollTop = pre.scrollHeight; // like tail -f
    }
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
    const status = document.getElementById("execution-status");
    if (status && status.textContent.trim() !== "running") source.close(); // it ended: nothing more to follow
  });
});
