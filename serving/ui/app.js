// Kairos feature views: a small page over /v1/features (no framework, no external resources).
// Every request carries `Authorization: Bearer <key>` when a key is saved; with auth off it works
// without one. Charts are SVG drawn here.
"use strict";

const KEY_STORE = "kairos_api_key";
const SVG = "http://www.w3.org/2000/svg";
const state = { catalog: null, views: {}, lookup: null };

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

// --- API ---------------------------------------------------------------------------------------

async function api(path, params = {}) {
  const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v !== null && v !== undefined));
  const url = query.toString() ? `${path}?${query}` : path;
  const headers = { Accept: "application/json" };
  const key = localStorage.getItem(KEY_STORE);
  if (key) headers.Authorization = `Bearer ${key}`;
  const response = await fetch(url, { headers });
  let body = null;
  try { body = await response.json(); } catch { body = null; }
  if (!response.ok) {
    const message = body && body.error ? body.error.message : `${response.status} ${response.statusText}`;
    if (response.status === 401 || response.status === 403) {
      $("api-key").focus();
      throw new Error(`${message} — enter an API key with the analyst scope above`);
    }
    throw new Error(message);
  }
  return body;
}

function showError(error) {
  const box = $("error");
  box.textContent = error ? String(error.message || error) : "";
  box.hidden = !error;
}

async function guarded(fn) {
  showError(null);
  try { await fn(); } catch (error) { showError(error); }
}

// --- formatting ----------------------------------------------------------------------------------

function fmt(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(4).replace(/0+$/, "").replace(/\.$/, "");
  return String(value);
}

function fmtAge(seconds) {
  const ahead = seconds < 0;
  let s = Math.abs(seconds);
  const units = [["d", 86400], ["h", 3600], ["min", 60], ["s", 1]];
  let text = "0 s";
  for (const [unit, size] of units) {
    if (s >= size || unit === "s") { text = `${(s / size).toFixed(s >= 10 * size || unit === "s" ? 0 : 1)} ${unit}`; break; }
  }
  return ahead ? `${text} ahead of the server clock` : `${text} ago`;
}

const utcIso = (local) => (local ? `${local}Z` : "");
const shortTime = (iso) => iso.replace("T", " ").slice(0, 19);

// --- API key -------------------------------------------------------------------------------------

function initKey() {
  const saved = localStorage.getItem(KEY_STORE) || "";
  $("api-key").value = saved;
  $("key-state").textContent = saved ? "key saved" : "no key (fine when auth is off)";
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (key) localStorage.setItem(KEY_STORE, key); else localStorage.removeItem(KEY_STORE);
    $("key-state").textContent = key ? "key saved" : "no key (fine when auth is off)";
    guarded(loadCatalog);
  });
}

// --- catalog -------------------------------------------------------------------------------------

async function loadCatalog() {
  const body = await api("/v1/features");
  state.catalog = body;
  state.views = Object.fromEntries(body.views.map((v) => [v.name, v]));
  const list = $("catalog-list");
  list.replaceChildren();
  for (const view of body.views) {
    const fields = el("table", { class: "fields" },
      el("tr", {}, el("th", {}, "field"), el("th", {}, "type"), el("th", {}, "window"), el("th", {}, "meaning")),
      ...view.fields.map((f) => el("tr", {}, el("td", {}, f.name), el("td", {}, f.dtype), el("td", {}, f.window || ""),
        el("td", {}, f.description))));
    const card = el("article", { class: "card", "data-view": view.name },
      el("h3", {}, el("a", { href: "#lookup", class: "view-link", onclick: () => selectView(view.name) }, view.name)),
      el("p", {}, view.description),
      el("p", {}, el("b", {}, "key: "), view.key_format, " — ",
        view.entities.map((e) => `${e.name}: ${e.description}`).join(" ")),
      el("p", {}, el("b", {}, "windows: "), view.windows.map((w) => w.name).join(", ") || "none (current state)",
        " · ", el("b", {}, "freshness objective: "), `${view.freshness_objective_s} s`,
        " · ", el("b", {}, "fields: "), String(view.fields.length)),
      el("details", {}, el("summary", {}, "fields"), fields));
    list.append(card);
  }
  for (const select of document.querySelectorAll(".view-select")) {
    const current = select.value;
    select.replaceChildren(...body.views.map((v) => el("option", { value: v.name }, v.name)));
    if (current) select.value = current;
  }
  const category = $("map-category");
  category.replaceChildren(el("option", { value: "" }, "all"), ...body.categories.map((c) => el("option", { value: c }, c)));
  fillMapFields();
  await fillKeys();
}

function selectView(name) {
  $("lookup-view").value = name;
  $("stats-view").value = name;
  $("lookup-key").value = "";
  guarded(fillKeys);
}

async function fillKeys() {
  const view = $("lookup-view").value;
  if (!view) return;
  const body = await api(`/v1/features/${encodeURIComponent(view)}/keys`, { limit: 50 });
  $("lookup-keys").replaceChildren(...body.keys.map((k) => el("option", { value: k.key })));
  $("lookup-key").placeholder = body.keys.length ? `e.g. ${body.keys[0].key}` : body.key_format;
}

// --- lookup --------------------------------------------------------------------------------------

async function lookup() {
  const view = $("lookup-view").value;
  const key = $("lookup-key").value.trim();
  if (!key) throw new Error("key: enter an entity key (suggestions appear as you type)");
  const body = await api(`/v1/features/${encodeURIComponent(view)}/${encodeURIComponent(key)}`);
  state.lookup = { view, key };
  const badge = body.fresh ? el("span", { class: "badge ok" }, "fresh") : el("span", { class: "badge warn" }, "stale");
  const rows = body.values.map((v) => el("tr", {}, el("td", {}, v.name), el("td", { class: "value" }, fmt(v.value)),
    el("td", {}, shortTime(v.event_time)), el("td", {}, fmtAge(v.age_s))));
  $("lookup-result").replaceChildren(
    el("p", { id: "lookup-summary" }, `${view} ${key}: computed as of ${shortTime(body.event_time)} UTC, `,
      fmtAge(body.age_s), ` (objective ${body.freshness_objective_s} s) `, badge,
      body.degraded ? el("span", { class: "badge warn" }, "store down: last known values") : ""),
    el("table", { class: "values" },
      el("tr", {}, el("th", {}, "field"), el("th", {}, "value"), el("th", {}, "event time (UTC)"), el("th", {}, "age")),
      ...rows));
  const spec = state.views[view];
  const select = $("history-field");
  select.replaceChildren(...spec.fields.map((f) => el("option", { value: f.name }, `${f.name} (${f.dtype})`)));
  const firstCount = spec.fields.find((f) => f.dtype === "int" && f.window) || spec.fields[0];
  select.value = firstCount.name;
}

// --- history -------------------------------------------------------------------------------------

async function history() {
  if (!state.lookup) throw new Error("look an entity up first: the history is of that entity");
  const { view, key } = state.lookup;
  const field = $("history-field").value;
  const body = await api(`/v1/features/${encodeURIComponent(view)}/${encodeURIComponent(key)}/history`, {
    start: utcIso($("history-start").value), end: utcIso($("history-end").value), at: utcIso($("history-at").value),
  });
  const dtype = (body.fields.find((f) => f.name === field) || {}).dtype;
  const points = [];
  if (body.in_force_at_start && body.start) points.push({ t: Date.parse(body.start), v: body.in_force_at_start[field] });
  for (const row of body.rows) points.push({ t: Date.parse(row.event_time), v: row[field] });
  const out = [el("p", { id: "history-summary" }, `${body.rows.length} rows of ${view} ${key} from the offline log`,
    body.truncated ? " (newest only)" : "", `; first ${shortTime(body.first_event_time)}, last ${shortTime(body.last_event_time)} UTC`)];
  if (body.at) {
    const row = body.at.row;
    out.push(el("p", { id: "history-asof" }, `as of ${shortTime(body.at.time)} UTC: ${field} = `,
      el("b", {}, row ? fmt(row[field]) : "no value yet"), row ? ` (row computed at ${shortTime(row.event_time)})` : ""));
  }
  if (dtype === "int" || dtype === "float" || dtype === "bool") out.push(lineChart(points, field));
  out.push(el("table", { class: "values" }, el("tr", {}, el("th", {}, "event time (UTC)"), el("th", {}, field)),
    ...body.rows.slice(-30).reverse().map((r) => el("tr", {}, el("td", {}, shortTime(r.event_time)), el("td", {}, fmt(r[field]))))));
  $("history-result").replaceChildren(...out);
}

function lineChart(points, label) {
  const W = 760, H = 260, L = 60, R = 20, T = 20, B = 40;
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", id: "history-chart", role: "img" });
  const data = points.filter((p) => p.v !== null && p.v !== undefined).map((p) => ({ t: p.t, v: Number(p.v) }));
  if (!data.length) { chart.append(svg("text", { x: L, y: H / 2 }, "no values in this period")); return chart; }
  const t0 = Math.min(...data.map((p) => p.t)), t1 = Math.max(...data.map((p) => p.t));
  let v0 = Math.min(0, ...data.map((p) => p.v)), v1 = Math.max(...data.map((p) => p.v));
  if (v1 === v0) v1 = v0 + 1;
  const x = (t) => L + (t1 === t0 ? (W - L - R) / 2 : ((t - t0) / (t1 - t0)) * (W - L - R));
  const y = (v) => T + (1 - (v - v0) / (v1 - v0)) * (H - T - B);
  chart.append(svg("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }),
    svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }),
    svg("text", { x: L - 6, y: y(v1) + 4, "text-anchor": "end" }, fmt(v1)),
    svg("text", { x: L - 6, y: y(v0) + 4, "text-anchor": "end" }, fmt(v0)),
    svg("text", { x: L, y: H - B + 18 }, shortTime(new Date(t0).toISOString())),
    svg("text", { x: W - R, y: H - B + 18, "text-anchor": "end" }, shortTime(new Date(t1).toISOString())),
    svg("text", { x: W / 2, y: H - 6, "text-anchor": "middle", class: "muted" }, `${label} (a value holds until the next row)`));
  // A step line: a feature keeps its value until the next row replaces it.
  let path = `M ${x(data[0].t)} ${y(data[0].v)}`;
  for (let i = 1; i < data.length; i++) path += ` H ${x(data[i].t)} V ${y(data[i].v)}`;
  chart.append(svg("path", { d: path, class: "line" }));
  for (const p of data) {
    const dot = svg("circle", { cx: x(p.t), cy: y(p.v), r: 3, class: "dot" });
    dot.append(svg("title", {}, `${shortTime(new Date(p.t).toISOString())}: ${fmt(p.v)}`));
    chart.append(dot);
  }
  return chart;
}

// --- distributions -------------------------------------------------------------------------------

async function stats() {
  const view = $("stats-view").value;
  const body = await api(`/v1/features/${encodeURIComponent(view)}/stats`, { days: $("stats-days").value });
  const head = body.reference_time
    ? `${body.entities_current} entities in the ${body.days} days up to ${shortTime(body.reference_time)} UTC, ` +
      `${body.entities_previous} in the ${body.days} days before (${body.rows_in_log} rows read)`
    : body.note;
  const cards = body.fields.map((f) => {
    const level = f.drift.level;
    const chart = f.histogram ? barChart(f.histogram.map((b) => ({ label: b.from === b.to ? fmt(b.from) : `${fmt(b.from)}–${fmt(b.to)}`, count: b.count })))
      : barChart((f.top_values || []).map((t) => ({ label: t.value, count: t.count })));
    return el("article", { class: "card stat", "data-field": f.name },
      el("h3", {}, f.name, el("span", { class: "muted" }, ` ${f.dtype}${f.window ? " · " + f.window : ""}`)),
      el("p", {}, `null rate ${f.null_rate === null ? "—" : (100 * f.null_rate).toFixed(1) + " %"}`,
        f.summary ? ` · median ${fmt(f.summary.median)} · mean ${fmt(f.summary.mean)}` : "",
        f.distinct !== undefined ? ` · ${f.distinct} distinct` : ""),
      chart,
      el("p", { class: `drift ${level}` }, el("span", { class: `badge ${level === "stable" ? "ok" : level === "unknown" ? "" : "warn"}` },
        f.drift.psi === null ? "drift ?" : `PSI ${f.drift.psi}`), " ", f.drift.words));
  });
  $("stats-result").replaceChildren(el("p", { id: "stats-summary" }, head), el("div", { class: "cards" }, ...cards));
}

function barChart(bars) {
  const W = 320, H = 140, B = 30, T = 8;
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart bars" });
  if (!bars.length) { chart.append(svg("text", { x: 10, y: H / 2 }, "no values")); return chart; }
  const max = Math.max(...bars.map((b) => b.count), 1);
  const w = W / bars.length;
  bars.forEach((b, i) => {
    const h = (b.count / max) * (H - B - T);
    const rect = svg("rect", { x: i * w + 1, y: H - B - h, width: Math.max(w - 2, 1), height: h, class: "bar" });
    rect.append(svg("title", {}, `${b.label}: ${b.count}`));
    chart.append(rect);
  });
  chart.append(svg("text", { x: 2, y: H - B + 14 }, bars[0].label.slice(0, 18)),
    svg("text", { x: W - 2, y: H - B + 14, "text-anchor": "end" }, bars[bars.length - 1].label.slice(0, 18)),
    svg("text", { x: 2, y: H - 2, class: "muted" }, `max ${max}`));
  return chart;
}

// --- map -----------------------------------------------------------------------------------------

function fillMapFields() {
  const spec = state.views[$("map-view").value];
  if (!spec) return;
  const numeric = spec.fields.filter((f) => (f.dtype === "int" || f.dtype === "float") && f.name !== "as_of");
  $("map-field").replaceChildren(...numeric.map((f) => el("option", { value: f.name }, f.name)));
  $("map-field").value = $("map-view").value === "cell_demand" ? "view_count_24h" : "active_items";
  $("map-area").replaceChildren(el("option", { value: "0" }, "busiest"));
}

async function drawMap() {
  const view = $("map-view").value;
  const body = await api(`/v1/features/${encodeURIComponent(view)}/map`, {
    field: $("map-field").value, category: $("map-category").value, area: $("map-area").value,
  });
  const area = $("map-area");
  area.replaceChildren(...body.areas.map((a) => el("option", { value: String(a.index) },
    `${a.index + 1}: ${a.cells} cells near ${a.center[0].toFixed(2)}, ${a.center[1].toFixed(2)}`)));
  if (body.area !== null) area.value = String(body.area);
  if (!body.cells.length) { $("map-result").replaceChildren(el("p", {}, "no cells in the offline log yet")); return; }
  const { south, west, north, east } = body.bounds;
  const k = Math.cos(((south + north) / 2) * Math.PI / 180);  // equirectangular, true to scale locally
  const W = 760, pad = 10;
  const scale = (W - 2 * pad) / Math.max((east - west) * k, 1e-9);
  const H = Math.min(Math.max((north - south) * scale + 2 * pad, 120), 900);
  const s = Math.min(scale, (H - 2 * pad) / Math.max(north - south, 1e-9));
  const px = (lon) => pad + (lon - west) * k * s, py = (lat) => pad + (north - lat) * s;
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart map", id: "map-chart" });
  for (const c of body.cells) {
    const t = body.max_value ? c.value / body.max_value : 0;
    const points = c.boundary.map(([lat, lon]) => `${px(lon).toFixed(1)},${py(lat).toFixed(1)}`).join(" ");
    const poly = svg("polygon", { points, fill: `hsl(${50 - 50 * t}, 90%, ${88 - 48 * t}%)`, class: "cell", "data-cell": c.cell });
    poly.append(svg("title", {}, `${c.cell}: ${fmt(c.value)}`));
    chart.append(poly);
  }
  $("map-result").replaceChildren(
    el("p", { id: "map-summary" }, `${body.cells.length} cells, ${body.field}`,
      body.category ? ` (${body.category})` : ` (${body.combined_over_categories} over categories)`,
      `; darkest = ${fmt(body.max_value)}. Hover a cell for its value.`), chart);
}

// --- wiring --------------------------------------------------------------------------------------

function onSubmit(id, fn) {
  $(id).addEventListener("submit", (event) => { event.preventDefault(); guarded(fn); });
}

document.addEventListener("DOMContentLoaded", () => {
  initKey();
  onSubmit("lookup-form", lookup);
  onSubmit("history-form", history);
  onSubmit("stats-form", stats);
  onSubmit("map-form", drawMap);
  $("lookup-view").addEventListener("change", () => { $("stats-view").value = $("lookup-view").value; guarded(fillKeys); });
  $("map-view").addEventListener("change", fillMapFields);
  guarded(loadCatalog);
});
