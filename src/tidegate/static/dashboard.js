// tidegate dashboard: spend, tokens and requests per key and model over time (from the usage
// ledger, GET /admin/usage), error rates, open streams and deployment health. Every number
// comes from the admin API with the admin key the person typed; the key stays in memory.
// Everything is built from DOM nodes and text, never from markup strings.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = ["#0b6bcb", "#e07b00", "#2a9d55", "#c2185b", "#7e57c2", "#00838f", "#8d6e63", "#9e9d24"];
  const OTHERS = "others";
  const MAX_SERIES = 8; // more keys or models than this are summed as "others"
  const REFRESH_MS = 10000;

  const ui = {
    period: $("period"), refresh: $("refresh"), updated: $("updated"), keyForm: $("key-form"),
    key: $("key"), problem: $("problem"), keyMetric: $("key-metric"), modelMetric: $("model-metric"),
  };
  const state = { key: "", data: null, timer: null, keyWaiter: null, keyPrompt: null };

  // -- talking to the gateway ------------------------------------------------------------------

  /** Show the key form; resolves once a key was typed. Every request that got a 401 waits
   * for the same prompt. */
  function askForKey() {
    if (state.keyPrompt) return state.keyPrompt;
    ui.keyForm.hidden = false;
    ui.key.focus();
    state.keyPrompt = new Promise((resolve) => { state.keyWaiter = resolve; });
    return state.keyPrompt;
  }

  ui.keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = ui.key.value.trim();
    if (!key) return;
    state.key = key;
    ui.key.value = "";
    ui.keyForm.hidden = true;
    state.keyWaiter?.();
    state.keyWaiter = null;
    state.keyPrompt = null;
  });

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  /** GET a JSON document of the admin API, asking for the admin key while the answer is 401. */
  async function getJson(url) {
    for (;;) {
      const headers = state.key ? { Authorization: `Bearer ${state.key}` } : {};
      const response = await fetch(url, { headers });
      if (response.status === 401) {
        await response.body?.cancel();
        await askForKey();
        continue;
      }
      if (!response.ok) {
        let message = response.statusText;
        try {
          const body = await response.json();
          message = body?.error?.message || message;
        } catch { /* not JSON */ }
        throw new ApiError(response.status, message);
      }
      return response.json();
    }
  }

  /** The first day of the chosen period, as YYYY-MM-DD (UTC). */
  function since() {
    const days = Number(ui.period.value);
    const start = new Date(Date.now() - (days - 1) * 86400000);
    return start.toISOString().slice(0, 10);
  }

  async function load() {
    const from = since();
    const usage = (by) => getJson(`/admin/usage?by=${by}&since=${from}`);
    const [byDayKey, byDayModel, byKey, byModel, recent, deployments, runtime] = await Promise.all([
      usage("day,key"), usage("day,model"), usage("key"), usage("model"),
      getJson("/admin/usage/recent?limit=20"), getJson("/admin/deployments"), getJson("/admin/runtime"),
    ]);
    return { from, byDayKey: byDayKey.rows, byDayModel: byDayModel.rows, byKey: byKey.rows,
      byModel: byModel.rows, recent: recent.rows, deployments: deployments.deployments, runtime };
  }

  async function refresh() {
    clearTimeout(state.timer);
    try {
      state.data = await load();
      ui.problem.hidden = true;
      render(state.data);
      ui.updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      ui.problem.hidden = false;
      ui.problem.textContent = err instanceof ApiError && err.status === 404
        ? "This gateway keeps no usage ledger (the admin API has no /admin/usage)."
        : `The dashboard could not be loaded: ${err.message}`;
    }
    state.timer = setTimeout(refresh, REFRESH_MS);
  }

  // -- numbers -----------------------------------------------------------------------------------

  const integer = new Intl.NumberFormat("en", { maximumFractionDigits: 0 });
  const compact = new Intl.NumberFormat("en", { notation: "compact", maximumFractionDigits: 1 });
  function money(value) {
    if (value === 0) return "$0";
    return value < 0.01 ? `$${value.toPrecision(2)}` : `$${value.toFixed(2)}`;
  }
  function percent(errors, requests) {
    return requests ? `${((100 * errors) / requests).toFixed(1)}%` : "–";
  }
  function metricOf(row, metric) {
    if (metric === "tokens") return (row.input_tokens || 0) + (row.output_tokens || 0);
    return row[metric] || 0;
  }
  function formatMetric(value, metric) {
    return metric === "cost" ? money(value) : compact.format(value);
  }

  // -- rendering ---------------------------------------------------------------------------------

  function render(data) {
    const totals = data.byModel.reduce((t, r) => ({
      requests: t.requests + r.requests, errors: t.errors + r.errors, cost: t.cost + r.cost,
      input: t.input + r.input_tokens, output: t.output + r.output_tokens,
    }), { requests: 0, errors: 0, cost: 0, input: 0, output: 0 });
    $("total-cost").textContent = money(totals.cost);
    $("total-requests").textContent = integer.format(totals.requests);
    $("total-error-rate").textContent = percent(totals.errors, totals.requests);
    $("total-tokens").textContent = `${compact.format(totals.input)} / ${compact.format(totals.output)}`;
    $("open-streams").textContent = integer.format(data.runtime.in_flight ?? 0);

    chart($("chart-key"), data.byDayKey, "key", ui.keyMetric.value, data.from);
    chart($("chart-model"), data.byDayModel, "model", ui.modelMetric.value, data.from);
    usageTable($("keys-table"), data.byKey, "key");
    usageTable($("models-table"), data.byModel, "model");
    table($("deployments-table"), data.deployments, (d) => [
      d.deployment, d.model, d.upstream, { text: d.state, cls: `state-${d.state}` },
      d.max_in_flight ? `${d.in_flight} / ${d.max_in_flight}` : String(d.in_flight),
      String(d.trips), d.cooldown_remaining_s ? `${d.cooldown_remaining_s.toFixed(1)} s` : "–",
    ]);
    table($("recent-table"), data.recent, (r) => [
      (r.started_at || "").replace("T", " ").slice(0, 19), r.key_name || r.key_id || "–", r.endpoint || "–", r.model || "–",
      { text: r.status, cls: `status-${r.status}` },
      r.input_tokens == null ? "–" : integer.format(r.input_tokens),
      r.output_tokens == null ? "–" : `${integer.format(r.output_tokens)}${r.estimated ? "*" : ""}`,
      money(r.cost || 0), r.duration_ms == null ? "–" : integer.format(Math.round(r.duration_ms)),
    ]);
  }

  function usageTable(element, rows, column) {
    const sorted = [...rows].sort((a, b) => b.cost - a.cost || b.requests - a.requests);
    table(element, sorted, (r) => [
      r[column] ?? "–", integer.format(r.requests), integer.format(r.errors),
      { text: percent(r.errors, r.requests), cls: r.errors ? "status-error" : "" },
      integer.format(r.input_tokens), integer.format(r.output_tokens), money(r.cost),
    ]);
  }

  function table(element, rows, cells) {
    const body = element.tBodies[0];
    body.replaceChildren();
    for (const row of rows) {
      const tr = body.insertRow();
      for (const cell of cells(row)) {
        const td = tr.insertCell();
        if (cell && typeof cell === "object") {
          td.textContent = cell.text;
          if (cell.cls) td.className = cell.cls;
        } else {
          td.textContent = cell;
        }
      }
    }
    if (!rows.length) {
      const td = body.insertRow().insertCell();
      td.colSpan = element.tHead.rows[0].cells.length;
      td.className = "empty";
      td.textContent = "nothing in this period";
    }
  }

  function days(from) {
    const out = [];
    const end = new Date().toISOString().slice(0, 10);
    for (let d = new Date(`${from}T00:00:00Z`); ; d = new Date(d.getTime() + 86400000)) {
      const day = d.toISOString().slice(0, 10);
      out.push(day);
      if (day >= end) return out;
    }
  }

  function svg(name, attrs, parent) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    parent?.appendChild(node);
    return node;
  }

  /** A stacked bar per day, one colour per key (or model), the largest series first. */
  function chart(figure, rows, column, metric, from) {
    figure.replaceChildren();
    const totals = new Map();
    for (const r of rows) totals.set(r[column], (totals.get(r[column]) || 0) + metricOf(r, metric));
    const names = [...totals.keys()].sort((a, b) => totals.get(b) - totals.get(a));
    const shown = names.slice(0, names.length > MAX_SERIES ? MAX_SERIES - 1 : MAX_SERIES);
    const series = names.length > shown.length ? [...shown, OTHERS] : shown;
    const dayList = days(from);
    const values = new Map(dayList.map((d) => [d, new Map()]));
    for (const r of rows) {
      const name = shown.includes(r[column]) ? r[column] : OTHERS;
      const day = values.get(r.day);
      if (day) day.set(name, (day.get(name) || 0) + metricOf(r, metric));
    }
    const dayTotals = dayList.map((d) => [...values.get(d).values()].reduce((a, b) => a + b, 0));
    const max = Math.max(...dayTotals, 0);
    if (max === 0) {
      const p = document.createElement("p");
      p.className = "empty";
      p.textContent = "nothing in this period";
      figure.append(p);
      return;
    }
    const W = 1000, H = 220, left = 56, bottom = 22, top = 8;
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" }, figure);
    svg("title", {}, root).textContent = `${metric} per ${column} and day`;
    const plotH = H - bottom - top;
    const step = (W - left) / dayList.length;
    const barW = Math.max(2, Math.min(40, step * 0.7));
    svg("line", { x1: left, y1: top + plotH, x2: W, y2: top + plotH, class: "axis" }, root);
    for (const frac of [0.5, 1]) {
      const y = top + plotH * (1 - frac);
      svg("line", { x1: left, y1: y, x2: W, y2: y, class: "axis", "stroke-dasharray": "3 3" }, root);
      svg("text", { x: left - 6, y: y + 4, "text-anchor": "end" }, root).textContent = formatMetric(max * frac, metric);
    }
    const labelEvery = Math.ceil(dayList.length / 10);
    dayList.forEach((day, i) => {
      const x = left + i * step + (step - barW) / 2;
      let y = top + plotH;
      series.forEach((name, s) => {
        const v = values.get(day).get(name) || 0;
        if (!v) return;
        const h = (v / max) * plotH;
        y -= h;
        const rect = svg("rect", { x, y, width: barW, height: Math.max(h, 0.5), fill: COLORS[s % COLORS.length],
          "data-series": name, "data-day": day, "data-value": v }, root);
        svg("title", {}, rect).textContent = `${day} · ${name}: ${formatMetric(v, metric)}`;
      });
      if (i % labelEvery === 0) {
        svg("text", { x: x + barW / 2, y: H - 6, "text-anchor": "middle" }, root).textContent = day.slice(5);
      }
    });
    const legend = document.createElement("figcaption");
    legend.className = "legend";
    series.forEach((name, s) => {
      const item = document.createElement("span");
      item.style.setProperty("--swatch", COLORS[s % COLORS.length]);
      item.textContent = `${name} (${formatMetric(totals.get(name) ?? sumOthers(totals, shown), metric)})`;
      legend.append(item);
    });
    figure.append(legend);
  }

  function sumOthers(totals, shown) {
    let sum = 0;
    for (const [name, v] of totals) if (!shown.includes(name)) sum += v;
    return sum;
  }

  // -- wiring ------------------------------------------------------------------------------------

  ui.refresh.addEventListener("click", refresh);
  ui.period.addEventListener("change", refresh);
  for (const select of [ui.keyMetric, ui.modelMetric]) {
    select.addEventListener("change", () => { if (state.data) render(state.data); });
  }
  refresh();
})();
