// Analyze & Filter: a histogram per numeric field and a bar chart per categorical field, from the
// aggregated histograms endpoint; brushing a range or clicking categories filters, and the result can
// be saved as a tag.
import { api, busy, clear, datasetId, el, emptyState, errorBox, fmtCount, fmtNum, fmtValue, pageUrl, toast } from "../lib.js";

const base = "/datasets/" + encodeURIComponent(datasetId);
const chartsBox = document.getElementById("charts");
const matchedEl = document.getElementById("matched");
const totalEl = document.getElementById("total");
const activeBox = document.getElementById("active");
const tagSelect = document.getElementById("a-tag");
const exploreLink = document.getElementById("open-explore");
const saveForm = document.getElementById("save-form");
const saveError = document.getElementById("save-error");

const W = 400, H = 170, L = 8, R = 392, TOP = 8, BOTTOM = 140;
// path -> {range: [lo, hi]} (either end may be null: open) | {values: [..], anyCase} and/or {contains: text, exact}
const selections = new Map();
let others = [];              // conditions from a link that no chart edits (ne, exists, …): applied and shown as chips
let fields = [];
let charts = new Map();       // path -> {draw(field)}
let request = 0;
let timer = null;

const svg = (tag, attrs = {}, ...children) => el(tag, { ...attrs, svg: true }, ...children);
const label = (f) => f.display_name || f.path;
const round = (x) => Math.round(x * 100) / 100;

function conditions() {
  const out = [];
  for (const [path, sel] of selections) {
    if (sel.range) {
      if (sel.range[0] !== null) out.push({ path, op: "gte", value: sel.range[0] });
      if (sel.range[1] !== null) out.push({ path, op: "lte", value: sel.range[1] });
    }
    // A text field's values may match in any case (ieq, iin), as Explore's builder offers.
    if (sel.values && sel.values.length === 1) {
      out.push({ path, op: sel.anyCase ? "ieq" : "eq", value: sel.values[0] });
    } else if (sel.values && sel.values.length) {
      out.push({ path, op: sel.anyCase ? "iin" : "in", value: sel.values });
    }
    if (sel.contains) out.push({ path, op: sel.exact ? "contains" : "icontains", value: sel.contains });
  }
  return out.concat(others);
}

// A selection without anything left in it goes, so the URL and the chips hold only what filters.
function tidy(path) {
  const sel = selections.get(path);
  if (sel && !sel.range && !(sel.values && sel.values.length) && !sel.contains && !sel.anyCase) selections.delete(path);
}

// A picked value matches a chart's row: the same value, or the same text in another case when "any case" is on.
const sameValue = (sel, a, b) => a === b || Boolean(sel && sel.anyCase && typeof a === "string" && typeof b === "string" && a.toLowerCase() === b.toLowerCase());

function filterObject() {
  const obj = {};
  if (tagSelect.value) obj.tag = tagSelect.value;
  const c = conditions();
  if (c.length) obj.conditions = c;
  return obj;
}

function schedule(push = true) {
  clearTimeout(timer);
  timer = setTimeout(refresh, 120);
  renderActive();
  syncUrl(push);
}

// The filter lives in the URL (the same `tag` and `conditions` Explore reads), so reload and links keep it.
function syncUrl(push) {
  const qs = new URLSearchParams();
  if (tagSelect.value) qs.set("tag", tagSelect.value);
  const c = conditions();
  if (c.length) qs.set("conditions", JSON.stringify(c));
  const url = location.pathname + (qs.toString() ? "?" + qs : "");
  if (url === location.pathname + location.search) return;
  if (push) history.pushState(null, "", url); else history.replaceState(null, "", url);
}

function readUrl() {
  const qs = new URLSearchParams(location.search);
  selections.clear();
  others = [];
  let list = [];
  try { list = JSON.parse(qs.get("conditions") || "[]"); } catch (_) { toast("The link's conditions are not valid JSON; showing no filter.", "error"); }
  for (const c of Array.isArray(list) ? list : []) {
    if (!c || typeof c.path !== "string") continue;
    const sel = selections.get(c.path) || {};
    if (c.op === "gte" || c.op === "lte") {
      sel.range = sel.range || [null, null];
      sel.range[c.op === "gte" ? 0 : 1] = c.value;
    } else if ((c.op === "eq" || c.op === "ieq") && !sel.values) {
      sel.values = [c.value];
      sel.anyCase = c.op === "ieq";
    } else if ((c.op === "in" || c.op === "iin") && Array.isArray(c.value) && !sel.values) {
      sel.values = [...c.value];
      sel.anyCase = c.op === "iin";
    } else if ((c.op === "contains" || c.op === "icontains") && !sel.contains && typeof c.value === "string") {
      sel.contains = c.value;
      sel.exact = c.op === "contains";
    } else {
      others.push(c);  // kept and applied as it is; its chip removes it
      continue;
    }
    selections.set(c.path, sel);
  }
  return qs.get("tag") || "";
}

window.addEventListener("popstate", () => {
  tagSelect.value = readUrl();
  schedule(false);
  redrawAll();
});

const OP_TEXT = { ne: "≠", lt: "<", lte: "≤", gt: ">", gte: "≥", eq: "=", in: "in", exists: "exists",
  contains: "contains", icontains: "contains (any case)", ieq: "is (any case)", iin: "is one of (any case)" };

function renderActive() {
  const chip = (text, name, onRemove) => {
    const remove = el("button", { type: "button", "aria-label": "Remove filter on " + name }, "×");
    remove.addEventListener("click", () => { onRemove(); schedule(); redrawAll(); });
    return el("span", { class: "badge blue cond-chip", "data-testid": "active-filter" }, text, remove);
  };
  const nameOf = (path) => { const f = fields.find((x) => x.path === path); return f ? label(f) : path; };
  clear(activeBox, [...selections].map(([path, sel]) => {
    const name = nameOf(path);
    const parts = [];
    if (sel.range) parts.push(sel.range[1] === null ? `${name} ≥ ${fmtValue(sel.range[0])}` : sel.range[0] === null ? `${name} ≤ ${fmtValue(sel.range[1])}`
      : `${name} ${fmtValue(sel.range[0])} – ${fmtValue(sel.range[1])}`);
    if (sel.values && sel.values.length) parts.push(`${name}: ${sel.values.map(fmtValue).join(", ")}${sel.anyCase ? " (any case)" : ""}`);
    if (sel.contains) parts.push(`${name} contains “${sel.contains}”${sel.exact ? " (exact case)" : " (any case)"}`);
    return parts.length ? chip(parts.join(" · "), name, () => selections.delete(path)) : null;
  }), others.map((c) => chip(`${nameOf(c.path)} ${OP_TEXT[c.op] || c.op}${c.op === "exists" ? "" : " " + JSON.stringify(c.value)}`,
    nameOf(c.path), () => { others = others.filter((x) => x !== c); })));
  const qs = new URLSearchParams();
  if (tagSelect.value) qs.set("tag", tagSelect.value);
  const c = conditions();
  if (c.length) qs.set("conditions", JSON.stringify(c));
  exploreLink.href = pageUrl("explore") + (qs.toString() ? "?" + qs : "");
}

async function refresh() {
  const mine = ++request;
  const filter = filterObject();
  try {
    const data = await api(base + "/metadata/histograms", { params: { filter: Object.keys(filter).length ? JSON.stringify(filter) : "" } });
    if (mine !== request) return;
    matchedEl.textContent = fmtNum(data.matched);
    totalEl.textContent = "of " + fmtNum(data.total) + " samples match";
    if (!charts.size) build(data.fields);
    fields = data.fields;
    redrawAll();
  } catch (err) {
    if (mine !== request) return;
    if (!charts.size) clear(chartsBox, errorBox(err)); else toast(err.message, "error");
  }
}

function redrawAll() {
  for (const f of fields) charts.get(f.path)?.draw(f);
}

function build(list) {
  fields = list;
  if (!list.length) {
    clear(chartsBox, emptyState("No configured fields yet",
      el("p", {}, "Charts appear for the metadata fields configured in the ", el("a", { href: pageUrl("configurator") }, "Configurator"), ".")));
    return;
  }
  clear(chartsBox);
  for (const f of list) {
    const chart = f.kind === "numeric" ? numericChart(f) : categoricalChart(f);
    charts.set(f.path, chart);
    chartsBox.appendChild(chart.node);
  }
}

function head(f, extra) {
  return el("div", { class: "chart-head" },
    el("h3", { style: "margin:0" }, label(f)),
    el("span", { class: "muted small" }, f.type + (f.fallback !== null && f.fallback !== undefined ? " · fallback " + fmtValue(f.fallback) : "")),
    extra);
}

// --- numeric: histogram with a brush -------------------------------------------------------------------

function numericChart(f) {
  const plot = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "Histogram of " + label(f) });
  const lo = el("input", { type: "number", step: "any", "aria-label": label(f) + " from", style: "width:100px" });
  const hi = el("input", { type: "number", step: "any", "aria-label": label(f) + " to", style: "width:100px" });
  const missing = el("span", { class: "muted small" });
  const node = el("section", { class: "chart", "data-testid": "chart", "data-path": f.path },
    head(f), plot,
    el("div", { class: "row small", style: "align-items:center" }, "Range", lo, "to", hi, missing));
  let current = f;
  const scale = () => {
    const e = current.edges;
    return { x0: e[0], x1: e[e.length - 1], toX: (v) => L + (v - e[0]) / (e[e.length - 1] - e[0]) * (R - L),
      toV: (x) => e[0] + (x - L) / (R - L) * (e[e.length - 1] - e[0]) };
  };
  // Either end may stay open (null): typing only "from" keeps everything above it, and "to" stays empty for typing.
  const setRange = (a, b) => {
    if (a === null && b === null) selections.delete(f.path);
    else selections.set(f.path, { range: a !== null && b !== null ? [Math.min(a, b), Math.max(a, b)] : [a, b] });
    schedule();
    draw(current);
  };
  const onInputs = () => {
    const a = lo.value === "" || !Number.isFinite(Number(lo.value)) ? null : Number(lo.value);
    const b = hi.value === "" || !Number.isFinite(Number(hi.value)) ? null : Number(hi.value);
    setRange(a, b);
  };
  lo.addEventListener("change", onInputs);
  hi.addEventListener("change", onInputs);

  let drag = null;
  const toLocal = (event) => {
    const pt = new DOMPoint(event.clientX, event.clientY).matrixTransform(plot.getScreenCTM().inverse());
    return Math.max(L, Math.min(R, pt.x));
  };
  plot.addEventListener("pointerdown", (event) => {
    if (!current.edges.length) return;
    plot.setPointerCapture(event.pointerId);
    drag = { start: toLocal(event), end: toLocal(event) };
    draw(current);
  });
  plot.addEventListener("pointermove", (event) => {
    if (!drag) return;
    drag.end = toLocal(event);
    draw(current);
  });
  plot.addEventListener("pointerup", () => {
    if (!drag) return;
    const s = scale();
    const { start, end } = drag;
    drag = null;
    if (Math.abs(end - start) < 3) return setRange(null, null); // a click clears
    setRange(round(s.toV(Math.min(start, end))), round(s.toV(Math.max(start, end))));
  });

  function draw(data) {
    current = data;
    const sel = selections.get(f.path);
    // An input the curator is typing in is left alone: a redraw must not overwrite a half-typed value.
    if (document.activeElement !== lo) lo.value = sel && sel.range && sel.range[0] !== null ? sel.range[0] : "";
    if (document.activeElement !== hi) hi.value = sel && sel.range && sel.range[1] !== null ? sel.range[1] : "";
    missing.textContent = data.missing ? fmtNum(data.missing) + " without a value" : "";
    if (!data.edges.length) {
      clear(plot, svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "axis" }, "no numeric values"));
      return;
    }
    const s = scale();
    const top = Math.max(1, ...data.counts);
    const bars = [];
    for (let i = 0; i < data.counts.length; i++) {
      const x = s.toX(data.edges[i]) + 0.5, w = Math.max(1, s.toX(data.edges[i + 1]) - s.toX(data.edges[i]) - 1);
      const h = (c) => (c / top) * (BOTTOM - TOP);
      bars.push(svg("rect", { class: "bar", x, width: w, y: BOTTOM - h(data.counts[i]), height: h(data.counts[i]) },
        svg("title", {}, `${fmtValue(data.edges[i])} – ${fmtValue(data.edges[i + 1])}: ${fmtNum(data.matched_counts[i])} of ${fmtNum(data.counts[i])}`)));
      bars.push(svg("rect", { class: "bar match", x, width: w, y: BOTTOM - h(data.matched_counts[i]), height: h(data.matched_counts[i]), "pointer-events": "none" }));
    }
    let brush = null;
    const span = drag ? [Math.min(drag.start, drag.end), Math.max(drag.start, drag.end)]
      : sel && sel.range ? [s.toX(sel.range[0] ?? s.x0), s.toX(sel.range[1] ?? s.x1)].map((x) => Math.max(L, Math.min(R, x))) : null;
    if (span) brush = svg("rect", { class: "brush", x: span[0], width: Math.max(1, span[1] - span[0]), y: TOP - 4, height: BOTTOM - TOP + 4, "pointer-events": "none" });
    clear(plot, bars, brush,
      svg("line", { x1: L, x2: R, y1: BOTTOM + 0.5, y2: BOTTOM + 0.5, stroke: "#cfd4dc" }),
      svg("text", { x: L, y: BOTTOM + 16, class: "axis" }, fmtValue(data.min)),
      svg("text", { x: R, y: BOTTOM + 16, class: "axis", "text-anchor": "end" }, fmtValue(data.max)),
      svg("text", { x: W / 2, y: BOTTOM + 16, class: "axis", "text-anchor": "middle" }, "max bin " + fmtNum(top)));
  }
  draw(f);
  return { node, draw };
}

// --- categorical: clickable bars -----------------------------------------------------------------------

function categoricalChart(f) {
  const list = el("div", { role: "group", "aria-label": label(f) + " values" });
  const note = el("p", { class: "muted small", style: "margin:6px 0 0" });
  const text = f.type === "categorical_string" ? textControls(f, () => draw(current)) : null;
  const node = el("section", { class: "chart", "data-testid": "chart", "data-path": f.path }, head(f), text && text.node, list, note);

  const toggle = (value) => {
    const sel = selections.get(f.path) || {};
    const values = sel.values ? [...sel.values] : [];
    const at = values.findIndex((v) => sameValue(sel, v, value));
    if (at >= 0) values.splice(at, 1); else values.push(value);
    selections.set(f.path, { ...sel, values });
    tidy(f.path);
    schedule();
    draw(current);
  };
  let current = f;
  function draw(data) {
    current = data;
    const sel = selections.get(f.path);
    if (text) text.show(sel);
    const top = Math.max(1, ...data.values.map((v) => v.count));
    // The rows are rebuilt: the one holding keyboard focus gets it back.
    const focused = list.contains(document.activeElement) ? document.activeElement.dataset.value : null;
    clear(list, data.values.map((v) => {
      const on = !!(sel && sel.values && sel.values.some((x) => sameValue(sel, x, v.value)));
      const row = el("div", {
        class: "cat", role: "checkbox", tabindex: "0", "aria-checked": String(on), "data-value": String(v.value),
        "aria-label": `${fmtValue(v.value)}: ${v.matched} of ${v.count}`,
        style: "display:grid;grid-template-columns:110px 1fr 90px;gap:8px;align-items:center;padding:2px 4px;border-radius:4px;cursor:pointer;" + (on ? "background:var(--accent-soft);outline:1px solid var(--accent)" : ""),
      },
      el("span", { style: "overflow:hidden;text-overflow:ellipsis;white-space:nowrap", title: fmtValue(v.value) }, fmtValue(v.value)),
      el("span", { style: "position:relative;height:14px;background:#eef1f5;border-radius:3px;overflow:hidden" },
        el("span", { style: `position:absolute;left:0;top:0;bottom:0;width:${(v.count / top) * 100}%;background:#c9d6f2` }),
        el("span", { style: `position:absolute;left:0;top:0;bottom:0;width:${(v.matched / top) * 100}%;background:var(--accent)` })),
      el("span", { class: "small", style: "text-align:right;font-variant-numeric:tabular-nums" }, fmtNum(v.matched) + " / " + fmtNum(v.count)));
      row.addEventListener("click", () => toggle(v.value));
      row.addEventListener("keydown", (event) => {
        if (event.key === " " || event.key === "Enter") { event.preventDefault(); toggle(v.value); }
      });
      return row;
    }));
    if (focused !== null) {
      const again = [...list.children].find((row) => row.dataset.value === focused);
      if (again) again.focus();
    }
    const extra = [];
    if (data.other) extra.push(fmtNum(data.other) + " in other values");
    if (data.missing) extra.push(fmtNum(data.missing) + " without a value");
    note.textContent = extra.join(" · ");
  }
  draw(f);
  return { node, draw };
}

// A text field's controls, as Explore's sidebar has them: "contains…" (any case; "Aa" makes it exact case), and
// "any case" for the values picked below (is / is one of, in any case: ieq, iin).
const INLINE = "display:inline-flex;align-items:center;gap:4px;margin:0;font-weight:normal;white-space:nowrap";

function textControls(f, redraw) {
  const input = el("input", { type: "search", placeholder: "contains…", "aria-label": label(f) + " contains", style: "width:100%" });
  const exact = el("input", { type: "checkbox", "aria-label": label(f) + ": match case", style: "width:auto;margin:0" });
  const anyCase = el("input", { type: "checkbox", "aria-label": label(f) + ": picked values in any case", style: "width:auto;margin:0" });
  const edit = (change) => {
    const sel = { ...(selections.get(f.path) || {}) };
    change(sel);
    selections.set(f.path, sel);
    tidy(f.path);
    schedule();
    redraw();
  };
  input.addEventListener("change", () => edit((sel) => {
    const typed = input.value;
    if (typed.trim() === "") { delete sel.contains; delete sel.exact; } else { sel.contains = typed; sel.exact = exact.checked; }
  }));
  exact.addEventListener("change", () => { if (input.value.trim()) edit((sel) => { sel.contains = input.value; sel.exact = exact.checked; }); });
  anyCase.addEventListener("change", () => edit((sel) => { sel.anyCase = anyCase.checked; }));
  const node = el("div", { class: "row small", style: "align-items:center;gap:6px;flex-wrap:wrap;margin:4px 0" },
    el("div", { class: "row", style: "align-items:center;gap:6px;flex:1 1 160px;flex-wrap:nowrap" }, input,
      el("label", { class: "muted", title: "Match case", style: INLINE }, exact, "Aa")),
    el("label", { class: "muted", title: "Picked values also match in other cases (Rain, RAIN)", style: INLINE }, anyCase, "any case"));
  // What the URL holds shows in the controls; a box the curator is typing in is left alone.
  const show = (sel) => {
    if (document.activeElement !== input) input.value = sel && sel.contains ? sel.contains : "";
    exact.checked = Boolean(sel && sel.contains && sel.exact);
    anyCase.checked = Boolean(sel && sel.anyCase);
  };
  return { node, show };
}

// --- wiring ----------------------------------------------------------------------------------------------

document.getElementById("clear-all").addEventListener("click", () => { selections.clear(); others = []; schedule(); redrawAll(); });
tagSelect.addEventListener("change", schedule);

if (saveForm) {
  saveForm.addEventListener("submit", (event) => {
    event.preventDefault();
    clear(saveError);
    busy(saveForm.querySelector("button"), async () => {
      try {
        const tag = await api(base + "/tags", { method: "POST", body: { name: saveForm.elements.name.value.trim(), filter: filterObject() } });
        toast("Tag “" + tag.name + "” saved with " + fmtCount(tag.count, "sample"));
        saveForm.reset();
        tagSelect.appendChild(el("option", { value: tag.id }, tag.name + " (" + fmtNum(tag.count) + ")"));
      } catch (err) {
        saveError.appendChild(errorBox(err));
      }
    });
  });
}

const startTag = readUrl();
api(base + "/tags").then((tags) => {
  const list = Array.isArray(tags) ? tags : tags.results || [];
  tagSelect.append(...list.map((t) => el("option", { value: t.id }, "within " + t.name + " (" + fmtNum(t.count) + ")")));
  if (startTag && tagSelect.value !== startTag) {
    tagSelect.value = startTag;
    // A link's tag this dataset does not have (deleted since) is said, not silently dropped.
    if (tagSelect.value !== startTag) toast("The link's tag is not a tag of this dataset (deleted?): showing all samples.", "error");
    schedule(false);
  }
}).catch((err) => toast(err.message, "error"));
renderActive();
refresh();
