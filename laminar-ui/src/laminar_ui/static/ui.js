// laminar ui: an execution page follows its run. The server sends the page's sections again, already
// rendered and escaped, whenever the run records change (Server-Sent Events); this swaps them in.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const live = document.getElementById("live");
  if (!live || !live.dataset.events) return;
  const head = document.getElementById("head");
  const source = new EventSource(live.dataset.events);
  source.addEventListener("update", (event) => {
    const sections = JSON.parse(event.data);
    const open = new Set([...live.querySelectorAll("details[open]")].map((d) => d.parentElement.textContent.slice(0, 80)));
    head.innerHTML = sections.header;
    live.innerHTML = sections.body;
    for (const details of live.querySelectorAll("details")) {
      if (open.has(details.parentElement.textContent.slice(0, 80))) details.open = true;
    }
    for (const log of live.querySelectorAll("pre.log")) log.scrollTop = log.scrollHeight; // like tail -f
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
    const status = document.getElementById("execution-status");
    if (status && status.textContent.trim() !== "running") source.close(); // it ended: nothing more to follow
  });
});
