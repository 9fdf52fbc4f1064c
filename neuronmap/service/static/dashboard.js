// NeuronMap dashboard: login, run charts (plotly, bundled), comparison and jobs. No inline scripts:
// pages pass their data in <script type="application/json" id="page-data">.
"use strict";

const SIBLINGS = ["_ci_low", "_ci_high", "_p", "_p_adj"];

function pageData() {
  const el = document.getElementById("page-data");
  return el ? JSON.parse(el.textContent) : {};
}

async function api(path, options) {
  const response = await fetch(path, Object.assign({credentials: "same-origin"}, options || {}));
  const body = await response.json().catch(() => ({}));
  if (!response.ok) { throw new Error(body.detail || response.statusText); }
  return body;
}

async function login(token, next) {
  await api("/ui/session", {method: "POST", headers: {"Content-Type": "application/json"},
                            body: JSON.stringify({token: token})});
  window.location.replace(next);
}

function setupLogin() {
  const form = document.getElementById("login-form");
  if (!form) { return; }
  const next = form.dataset.next || "/ui/";
  const fail = (err) => { document.getElementById("login-error").textContent = err.message; };
  if (window.location.hash.length > 1) {  // /ui/login#<token>: the fragment never reaches a server log
    const token = decodeURIComponent(window.location.hash.slice(1));
    history.replaceState(null, "", window.location.pathname + window.location.search);
    login(token, next).catch(fail);
  }
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    login(document.getElementById("token").value, next).catch(fail);
  });
}

function historyRows(h) {
  // the API's columnar History: parallel lists plus a key dictionary
  const rows = [];
  for (let i = 0; i < h.count; i++) {
    const k = h.keys[h.key_index[i]];
    rows.push({step: h.step[i], key: k.key, analysis: k.analysis, layer: k.layer, metric: k.metric, value: h.value[i]});
  }
  return rows;
}

function isSibling(metric) { return SIBLINGS.some((s) => metric.endsWith(s)); }

function drawRunCharts(h) {
  const rows = historyRows(h);
  const byKey = new Map();
  for (const r of rows) {
    if (!byKey.has(r.key)) { byKey.set(r.key, []); }
    byKey.get(r.key).push(r);
  }
  const groups = new Map();  // "analysis/metric" -> [key ...]
  for (const [key, list] of byKey) {
    const r = list[0];
    if (!r.analysis || isSibling(r.metric)) { continue; }
    const g = r.analysis + "/" + r.metric;
    if (!groups.has(g)) { groups.set(g, []); }
    groups.get(g).push(key);
  }
  const charts = document.getElementById("charts");
  const heatmaps = document.getElementById("heatmaps");
  charts.textContent = "";
  let n = 0;
  for (const [title, keys] of [...groups].sort()) {
    if (n++ >= 60) { break; }
    const traces = [];
    keys.forEach((key, i) => {
      const pts = byKey.get(key).slice().sort((a, b) => a.step - b.step);
      const layer = pts[0].layer;
      const colour = `hsl(${(i * 47) % 360},60%,45%)`;
      const low = byKey.get(key + "_ci_low"), high = byKey.get(key + "_ci_high");
      if (low && high && low.length === pts.length && high.length === pts.length) {
        const lo = low.slice().sort((a, b) => a.step - b.step), hi = high.slice().sort((a, b) => a.step - b.step);
        traces.push({x: hi.map((p) => p.step), y: hi.map((p) => p.value), mode: "lines", line: {width: 0},
                     showlegend: false, hoverinfo: "skip", legendgroup: layer});
        traces.push({x: lo.map((p) => p.step), y: lo.map((p) => p.value), mode: "lines", line: {width: 0},
                     fill: "tonexty", fillcolor: colour.replace("hsl", "hsla").replace(")", ",0.15)"),
                     showlegend: false, hoverinfo: "skip", legendgroup: layer, name: layer + " 95% CI"});
      }
      traces.push({x: pts.map((p) => p.step), y: pts.map((p) => p.value), mode: "lines+markers", name: layer,
                   line: {color: colour}, legendgroup: layer});
    });
    const div = document.createElement("div");
    div.className = "chart metric-chart";
    div.dataset.metric = title;
    charts.appendChild(div);
    Plotly.newPlot(div, traces, {title: {text: title, font: {size: 13}}, margin: {t: 40, l: 50, r: 10, b: 40},
                                 xaxis: {title: {text: "step"}}}, {responsive: true, displaylogo: false});
    if (keys.length > 1) {
      const layers = keys.map((k) => byKey.get(k)[0].layer);
      const steps = [...new Set(keys.flatMap((k) => byKey.get(k).map((p) => p.step)))].sort((a, b) => a - b);
      const z = keys.map((k) => steps.map((s) => { const p = byKey.get(k).find((q) => q.step === s); return p ? p.value : null; }));
      const hd = document.createElement("div");
      hd.className = "chart heatmap";
      heatmaps.appendChild(hd);
      Plotly.newPlot(hd, [{type: "heatmap", z: z, x: steps, y: layers, colorscale: "Viridis"}],
                     {title: {text: title, font: {size: 13}}, margin: {t: 40, l: 160, r: 10, b: 40}},
                     {responsive: true, displaylogo: false});
    }
  }
  if (n === 0) { charts.textContent = "No NeuronMap metrics in this run yet."; }
}

async function setupRun() {
  const data = pageData();
  if (!data.run || !document.getElementById("charts")) { return; }
  try {
    drawRunCharts(await api(`/api/v1/runs/${encodeURIComponent(data.run)}/history`));
  } catch (err) {
    document.getElementById("charts").textContent = "Could not load the history: " + err.message;
  }
}

async function setupCompare() {
  const data = pageData();
  if (!data.a || !data.b || !document.getElementById("deltas")) { return; }
  const c = await api(`/api/v1/compare?a=${encodeURIComponent(data.a)}&b=${encodeURIComponent(data.b)}`);
  const body = document.querySelector("#deltas tbody");
  const fmt = (v) => (v === null ? "n/a" : Number(v).toPrecision(4));
  for (const m of c.metrics) {
    const tr = document.createElement("tr");
    for (const v of [m.key, fmt(m.a), fmt(m.b), fmt(m.delta)]) {
      const td = document.createElement("td"); td.textContent = v; tr.appendChild(td);
    }
    body.appendChild(tr);
  }
  const cka = document.getElementById("cka");
  if (c.cka.available) {
    cka.className = "chart";
    Plotly.newPlot(cka, [{type: "heatmap", z: c.cka.matrix, x: c.cka.columns, y: c.cka.rows, zmin: 0, zmax: 1}],
                   {title: {text: "linear CKA, A layers × B layers"}, margin: {l: 160, b: 120}});
  } else {
    cka.textContent = c.cka.note;
  }
}

function setupJobs() {
  const form = document.getElementById("job-form");
  if (!form) { return; }
  const msg = document.getElementById("job-message");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const runName = document.getElementById("job-run-name").value.trim();
    try {
      const job = await api("/api/v1/jobs", {method: "POST", headers: {"Content-Type": "application/json"},
        body: JSON.stringify({spec: document.getElementById("job-spec").value, run_name: runName || null})});
      msg.textContent = `Job ${job.id} queued.`;
      setTimeout(() => window.location.reload(), 1000);
    } catch (err) { msg.textContent = err.message; }
  });
  document.querySelectorAll("button.cancel").forEach((b) => b.addEventListener("click", async () => {
    try { await api(`/api/v1/jobs/${b.dataset.job}/cancel`, {method: "POST"}); window.location.reload(); }
    catch (err) { msg.textContent = err.message; }
  }));
  if (document.querySelector("button.cancel")) { setTimeout(() => window.location.reload(), 3000); }
}

document.addEventListener("DOMContentLoaded", () => {
  const out = document.getElementById("logout");
  if (out) { out.addEventListener("click", async () => { await api("/ui/logout", {method: "POST"}); window.location.href = "/ui/login"; }); }
  setupLogin();
  setupRun();
  setupCompare();
  setupJobs();
});
