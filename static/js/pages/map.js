// Embedding map: the binary float32 projection drawn as a WebGL scatter; colour by a configured field
// or a tag; hover shows the sample; lasso selects samples, lists them and saves them as a tag.
import { api, busy, clear, datasetId, el, emptyState, errorBox, fmtCount, fmtNum, fmtValue, page, toast } from "../lib.js";
import { SampleGrid } from "../grid.js";
import { Scatter } from "../scatter.js";

const base = "/datasets/" + encodeURIComponent(datasetId);
const embSelect = document.getElementById("m-embedding");
const colorSelect = document.getElementById("m-color");
const statusEl = document.getElementById("map-status");
const box = document.getElementById("map-box");
const glCanvas = document.getElementById("map-gl");
const overlay = document.getElementById("map-overlay");
const octx = overlay.getContext("2d");
const hoverCard = document.getElementById("map-hover");
const legend = document.getElementById("legend");
const lassoCount = document.getElementById("lasso-count");
const saveForm = document.getElementById("lasso-save");
const saveButton = document.getElementById("lasso-save-button");
const gridNote = document.getElementById("selgrid-note");
const toolPan = document.getElementById("tool-pan");
const toolLasso = document.getElementById("tool-lasso");

const PALETTE = [[78, 121, 237], [242, 142, 43], [89, 195, 120], [225, 87, 89], [176, 122, 215],
  [237, 201, 72], [118, 183, 178], [255, 157, 167], [156, 117, 95], [186, 176, 172],
  [31, 200, 230], [200, 230, 80], [250, 100, 200], [120, 90, 255], [90, 150, 60],
  [255, 200, 150], [140, 210, 255], [210, 80, 40], [160, 160, 255], [100, 100, 100], [220, 220, 220]];
const DEFAULT = [125, 170, 255];
const MISSING = [110, 118, 135];
const forceFallback = new URLSearchParams(location.search).get("renderer") === "2d";

const scatter = new Scatter(glCanvas, { forceFallback });
let idxOf = new Uint32Array(0);   // point i -> sample idx
let pointOf = new Map();          // sample idx -> point i
let baseColors = null;            // rgba per point, before the selection dims the rest
let selected = [];                // point indices in the lasso
let tool = "pan";
let embeddings = [];
const sampleCache = new Map();
const selGrid = new SampleGrid(document.getElementById("selgrid"));

// Tests and curious users can inspect the map's state.
window.winnowMap = {
  get renderer() { return scatter.kind; },
  get points() { return idxOf.length; },
  get frames() { return scatter.frames; },
  get selectedIdx() { return selected.map((i) => idxOf[i]).sort((a, b) => a - b); },
  toScreen(x, y) { return scatter.toScreen(x, y); },
  get pointSize() { return scatter.pointSize() / (window.devicePixelRatio || 1); },
  get viewport() { return scatter.getViewport(); },
  // The samples (idx) the filter from the URL matches, drawn highlighted; null without a filter.
  get highlightedIdx() {
    if (!filterMatch) return null;
    const out = [];
    for (let i = 0; i < filterMatch.length; i++) if (filterMatch[i]) out.push(idxOf[i]);
    return out.sort((a, b) => a - b);
  },
};

// --- the view in the URL: embedding, colour and viewport -------------------------------------------------

const urlParams = () => new URLSearchParams(location.search);
let restoring = false;   // while the URL is being applied, changes do not write it back

function syncUrl(push) {
  if (restoring || !scatter.xy) return;
  const qs = urlParams();
  qs.delete("embedding"); qs.delete("color"); qs.delete("view");
  if (embSelect.value) qs.set("embedding", embSelect.value);
  if (colorSelect.value) qs.set("color", colorSelect.value);
  const v = scatter.getViewport();
  if (Math.abs(v.zoom - 1) > 1e-3 || scatter.view.cx !== (scatter.bounds.minX + scatter.bounds.maxX) / 2 || scatter.view.cy !== (scatter.bounds.minY + scatter.bounds.maxY) / 2) {
    qs.set("view", [v.cx, v.cy, v.zoom].map((x) => Number(x.toPrecision(6))).join(","));
  }
  const url = location.pathname + (qs.toString() ? "?" + qs : "");
  if (url === location.pathname + location.search) return;
  if (push) history.pushState(null, "", url); else history.replaceState(null, "", url);
}

function applyViewFromUrl() {
  const view = (urlParams().get("view") || "").split(",").map(Number);
  if (view.length === 3) scatter.setViewport({ cx: view[0], cy: view[1], zoom: view[2] });
  else scatter.resetView();
}

// Panning and zooming rewrite the URL (without a history entry each), at most a few times a second.
let viewTimer = null;
scatter.onViewChange = () => {
  clearTimeout(viewTimer);
  viewTimer = setTimeout(() => syncUrl(false), 300);
};

function setStatus(text) { statusEl.textContent = text; }

// --- loading -----------------------------------------------------------------------------------------

async function loadProjection(embedding) {
  setStatus("Loading the projection…");
  clearSelection();
  const response = await api(base + "/embeddings/" + encodeURIComponent(embedding.id) + "/projection", { raw: true });
  if (response.status === 202) {
    setStatus("The 2D layout is being computed; the map appears when it is ready…");
    setTimeout(() => { if (embSelect.value === embedding.id) loadProjection(embedding).catch(showError); }, 3000);
    return;
  }
  const raw = new Float32Array(await response.arrayBuffer());
  const rows = raw.length / 2;
  // NaN rows are idx without a sample (deleted, or not in this embedding): they are not drawn.
  const keep = [];
  for (let i = 0; i < rows; i++) if (Number.isFinite(raw[2 * i]) && Number.isFinite(raw[2 * i + 1])) keep.push(i);
  const xy = new Float32Array(keep.length * 2);
  idxOf = new Uint32Array(keep);
  pointOf = new Map();
  keep.forEach((idx, i) => { xy[2 * i] = raw[2 * idx]; xy[2 * i + 1] = raw[2 * idx + 1]; pointOf.set(idx, i); });
  filterMatch = null;  // per point of the previous projection: applied again below
  scatter.resize();
  scatter.setPoints(xy);
  applyViewFromUrl();
  await applyColor();
  await applyFilter();
  const method = response.headers.get("X-Projection-Method");
  setStatus(fmtNum(keep.length) + " points · " + (method ? method.toUpperCase() + " layout · " : "") +
    (scatter.kind === "webgl" ? "WebGL" : "2D canvas"));
  box.dataset.ready = "1";
}

function showError(err) {
  setStatus("");
  clear(legend, errorBox(err));
  toast(err.message, "error");
}

// --- colour ------------------------------------------------------------------------------------------

// A colour column arrives binary: uint32 LE legend length, the JSON legend, then float32 (NaN = no value)
// or int16 codes (-1 = no value), one per sample idx. A million points stay a few megabytes.
async function fetchColumn(params) {
  const response = await api(base + "/metadata/column", { raw: true, params: { ...params, encoding: "binary" } });
  const buffer = await response.arrayBuffer();
  const length = new DataView(buffer).getUint32(0, true);
  const legend = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, length)));
  const data = legend.dtype === "float32" ? new Float32Array(buffer, 4 + length, legend.size) : new Int16Array(buffer, 4 + length, legend.size);
  return legend.kind === "numeric" ? { ...legend, values: data } : { ...legend, codes: data };
}

// The selection as a base64 bitmask over sample idx (bit i, least significant first): any size fits one request.
function selectionMask(points) {
  let top = 0;
  for (const i of points) top = Math.max(top, idxOf[i]);
  const bytes = new Uint8Array((top >> 3) + 1);
  for (const i of points) { const idx = idxOf[i]; bytes[idx >> 3] |= 1 << (idx & 7); }
  let text = "";
  for (let k = 0; k < bytes.length; k += 0x8000) text += String.fromCharCode.apply(null, bytes.subarray(k, k + 0x8000));
  return btoa(text);
}

function rgbaFor(codes, pick) {
  const n = idxOf.length;
  const rgba = new Uint8Array(n * 4);
  for (let i = 0; i < n; i++) {
    const c = pick(codes, idxOf[i]);
    rgba[4 * i] = c[0]; rgba[4 * i + 1] = c[1]; rgba[4 * i + 2] = c[2]; rgba[4 * i + 3] = 200;
  }
  return rgba;
}

function ramp(t) {
  // A perceptual blue -> teal -> yellow ramp.
  const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const x = Math.max(0, Math.min(1, t)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x)), f = x - i;
  return stops[i].map((a, k) => Math.round(a + (stops[i + 1][k] - a) * f));
}

async function applyColor() {
  const choice = colorSelect.value;
  if (!choice) {
    baseColors = rgbaFor(null, () => DEFAULT);
    clear(legend, el("span", { class: "muted small" }, "Colour by a configured field or a tag."));
  } else {
    const [kind, key] = [choice.slice(0, choice.indexOf(":")), choice.slice(choice.indexOf(":") + 1)];
    const column = await fetchColumn(kind === "tag" ? { tag: key } : { path: key });
    const finite = column.kind === "numeric" && column.min !== null && column.max !== null && Number.isFinite(column.min) && Number.isFinite(column.max);
    if (column.kind === "numeric" && !finite) {
      // No sample holds a number there: most often a field typed as a number whose values are text.
      baseColors = rgbaFor(null, () => MISSING);
      const name = colorSelect.selectedOptions[0] ? colorSelect.selectedOptions[0].textContent : key;
      clear(legend, el("div", { class: "alert warn", role: "alert", "data-testid": "colour-problem" },
        "No sample has a number for “" + name + "”, so there is nothing to colour by. If its values are text, change its type to categorical in the ",
        el("a", { href: "/datasets/" + encodeURIComponent(datasetId) + "/configurator" }, "Configurator"), "."));
    } else if (column.kind === "numeric") {
      const values = column.values;
      const lo = column.min === null ? 0 : column.min, hi = column.max === null ? 0 : column.max;
      baseColors = rgbaFor(values, (vals, idx) => (idx >= vals.length || Number.isNaN(vals[idx]) ? MISSING : ramp((vals[idx] - lo) / ((hi - lo) || 1))));
      const bar = el("div", { style: "height:10px;border-radius:4px;background:linear-gradient(90deg," + [0, 0.25, 0.5, 0.75, 1].map((t) => "rgb(" + ramp(t).join(",") + ")").join(",") + ")" });
      clear(legend, bar, el("div", { class: "row small", style: "justify-content:space-between" }, el("span", {}, fmtValue(lo)), el("span", {}, fmtValue(hi))),
        el("div", { class: "small" }, el("span", { class: "sw", style: "background:rgb(" + MISSING.join(",") + ")" }), "no value"));
    } else {
      const codes = column.codes;
      const colour = (c) => (c < 0 ? MISSING : kind === "tag" ? (c ? [255, 196, 61] : [70, 90, 130]) : PALETTE[c % PALETTE.length]);
      baseColors = rgbaFor(codes, (cs, idx) => colour(idx >= cs.length ? -1 : cs[idx]));
      clear(legend, column.categories.map((name, c) => el("div", {},
        el("span", { class: "sw", style: "background:rgb(" + colour(c).join(",") + ")" }), fmtValue(name))),
        kind === "tag" ? null : el("div", {}, el("span", { class: "sw", style: "background:rgb(" + MISSING.join(",") + ")" }), "no value"));
    }
  }
  paintColors();
}

function paintColors() {
  if (!baseColors) return;
  if (!selected.length && !filterMatch) { scatter.setColors(baseColors); return; }
  // Everything outside the lasso (and outside the filter's matches) turns a faint grey, so what is chosen
  // stands out in any colouring.
  const rgba = new Uint8Array(baseColors.length);
  for (let i = 0; i < rgba.length; i += 4) { rgba[i] = 70; rgba[i + 1] = 80; rgba[i + 2] = 100; rgba[i + 3] = 70; }
  const lit = selected.length ? selected : null;
  // Without a colouring, the filter's matches turn amber: they stand out from the faint rest at any zoom.
  const amber = filterMatch && !colorSelect.value && !lit ? [255, 196, 61] : null;
  const light = (i) => {
    if (amber) rgba.set(amber, 4 * i); else rgba.set(baseColors.subarray(4 * i, 4 * i + 3), 4 * i);
    rgba[4 * i + 3] = 255;
  };
  if (lit) { for (const i of lit) if (!filterMatch || filterMatch[i]) light(i); }
  else { for (let i = 0; i < filterMatch.length; i++) if (filterMatch[i]) light(i); }
  scatter.setColors(rgba);
}

// --- the filter from Explore (tag, file_name, conditions in the URL, as Explore writes them) ---------------

let filterMatch = null;   // per point: 1 when its sample matches the filter in the URL; null without a filter
const filterBox = document.getElementById("map-filter");

function filterFromUrl() {
  const qs = urlParams();
  const obj = {};
  if (qs.get("tag")) obj.tag = qs.get("tag");
  if (qs.get("file_name")) obj.file_name = qs.get("file_name");
  if (qs.get("conditions")) {
    let conditions;
    try { conditions = JSON.parse(qs.get("conditions")); } catch (err) { throw new Error("The link's conditions are not valid JSON (" + err.message + ")."); }
    if (!Array.isArray(conditions)) throw new Error("The link's conditions must be a list.");
    if (conditions.length) obj.conditions = conditions;
  }
  return Object.keys(obj).length ? obj : null;
}

function exploreLink() {
  const qs = new URLSearchParams();
  for (const key of ["tag", "file_name", "conditions"]) { const v = urlParams().get(key); if (v) qs.set(key, v); }
  return base + "/explore" + (qs.toString() ? "?" + qs : "");
}

async function applyFilter() {
  let obj;
  try { obj = filterFromUrl(); } catch (err) { obj = err; }
  if (!obj) {
    filterMatch = null;
    filterBox.classList.add("hidden");
    paintColors();
    return;
  }
  filterBox.classList.remove("hidden");
  let column = null;
  let problem = obj instanceof Error ? obj.message : null;
  if (!problem) {
    try { column = await fetchColumn({ filter: JSON.stringify(obj) }); } catch (err) { problem = err.message; }
  }
  const clearButton = el("button", { type: "button", class: "small", onclick: () => {
    const qs = urlParams();
    for (const key of ["tag", "file_name", "conditions"]) qs.delete(key);
    history.pushState(null, "", location.pathname + (qs.toString() ? "?" + qs : ""));
    applyFilter();
  } }, "Show all samples");
  if (problem) {
    // A filter that cannot be applied is said in words; the map then shows every sample as it is.
    filterMatch = null;
    clear(filterBox, el("div", { class: "alert error", role: "alert", "data-testid": "map-filter-error" },
      "The filter from the link cannot be applied: " + problem + " "), clearButton);
    paintColors();
    return;
  }
  filterMatch = new Uint8Array(idxOf.length);
  let shown = 0;
  for (let i = 0; i < idxOf.length; i++) {
    const idx = idxOf[i];
    if (idx < column.codes.length && column.codes[idx] === 1) { filterMatch[i] = 1; shown += 1; }
  }
  const off = column.matched - shown;
  clear(filterBox, el("span", { "data-testid": "map-filter-count" },
    "Highlighting " + fmtCount(shown, "sample") + " that match the filter from Explore" +
    (off > 0 ? " (" + fmtNum(off) + " more match but have no point in this embedding)" : "") + ". "),
  el("a", { href: exploreLink() }, "Open in Explore"), " ", clearButton);
  paintColors();
}

// --- interaction -------------------------------------------------------------------------------------

function local(event) {
  const r = glCanvas.getBoundingClientRect();
  return [event.clientX - r.left, event.clientY - r.top];
}

function setTool(next) {
  tool = next;
  toolPan.setAttribute("aria-pressed", String(next === "pan"));
  toolLasso.setAttribute("aria-pressed", String(next === "lasso"));
  toolPan.classList.toggle("primary", next === "pan");
  toolLasso.classList.toggle("primary", next === "lasso");
}
toolPan.addEventListener("click", () => setTool("pan"));
toolLasso.addEventListener("click", () => setTool("lasso"));
document.getElementById("reset-view").addEventListener("click", () => scatter.resetView());
setTool("pan");

let drag = null;
overlay.addEventListener("pointerdown", (event) => {
  if (!scatter.xy) return;
  overlay.setPointerCapture(event.pointerId);
  glCanvas.focus({ preventScroll: true });
  const p = local(event);
  drag = { mode: tool === "lasso" || event.shiftKey ? "lasso" : "pan", last: p, path: [p] };
  hideHover();
});
overlay.addEventListener("pointermove", (event) => {
  const p = local(event);
  if (!drag) { hover(p); return; }
  if (drag.mode === "pan") {
    scatter.panBy(p[0] - drag.last[0], p[1] - drag.last[1]);
    drag.last = p;
  } else {
    drag.path.push(p);
    drawLasso(drag.path);
  }
});
overlay.addEventListener("pointerup", () => {
  if (!drag) return;
  const done = drag;
  drag = null;
  octx.clearRect(0, 0, overlay.width, overlay.height);
  if (done.mode === "lasso" && done.path.length > 2) {
    const poly = done.path.map(([x, y]) => scatter.toData(x, y));
    setSelection(scatter.index.inPolygon(poly));
  }
});
overlay.addEventListener("pointerleave", () => { if (!drag) hideHover(); });
overlay.addEventListener("wheel", (event) => {
  event.preventDefault();
  const [x, y] = local(event);
  scatter.zoomAt(x, y, Math.exp(-event.deltaY * 0.0015));
  hideHover();
}, { passive: false });

glCanvas.addEventListener("keydown", (event) => {
  const v = scatter.view;
  const step = 60;
  const keys = {
    ArrowLeft: () => scatter.panBy(step, 0), ArrowRight: () => scatter.panBy(-step, 0),
    ArrowUp: () => scatter.panBy(0, step), ArrowDown: () => scatter.panBy(0, -step),
    "+": () => scatter.zoomAt(v.cssWidth / 2, v.cssHeight / 2, 1.25), "=": () => scatter.zoomAt(v.cssWidth / 2, v.cssHeight / 2, 1.25),
    "-": () => scatter.zoomAt(v.cssWidth / 2, v.cssHeight / 2, 0.8), "0": () => scatter.resetView(),
    l: () => setTool(tool === "lasso" ? "pan" : "lasso"), Escape: () => clearSelection(),
  };
  if (keys[event.key]) { event.preventDefault(); keys[event.key](); }
});

function drawLasso(path) {
  const dpr = window.devicePixelRatio || 1;
  octx.setTransform(dpr, 0, 0, dpr, 0, 0);
  octx.clearRect(0, 0, overlay.width, overlay.height);
  octx.beginPath();
  path.forEach(([x, y], i) => (i ? octx.lineTo(x, y) : octx.moveTo(x, y)));
  octx.closePath();
  octx.fillStyle = "rgba(255, 196, 61, 0.12)";
  octx.strokeStyle = "#ffc43d";
  octx.lineWidth = 1.5;
  octx.fill();
  octx.stroke();
}

function resizeOverlay() {
  const dpr = window.devicePixelRatio || 1;
  overlay.width = Math.round(overlay.clientWidth * dpr);
  overlay.height = Math.round(overlay.clientHeight * dpr);
}

// --- hover -------------------------------------------------------------------------------------------

let hoverTimer = null;
let hoverPoint = -1;

function hideHover() {
  hoverCard.classList.add("hidden");
  hoverPoint = -1;
}

function hover([px, py]) {
  if (!scatter.index) return;
  const [x, y] = scatter.toData(px, py);
  const i = scatter.index.nearest(x, y, 8 / scatter.view.ppu);
  if (i < 0) { hideHover(); return; }
  if (i === hoverPoint) return;
  hoverPoint = i;
  const [sx, sy] = scatter.toScreen(scatter.xy[2 * i], scatter.xy[2 * i + 1]);
  hoverCard.style.left = Math.min(sx + 12, box.clientWidth - 150) + "px";
  hoverCard.style.top = Math.min(sy + 12, box.clientHeight - 170) + "px";
  clearTimeout(hoverTimer);
  hoverTimer = setTimeout(() => showHover(i), 40);
}

async function showHover(i) {
  const idx = idxOf[i];
  let sample = sampleCache.get(idx);
  if (!sample) {
    try {
      const data = await api(base + "/map/samples", { method: "POST", body: { idx: [idx], limit: 1 } });
      sample = data.samples[0];
      if (sample) sampleCache.set(idx, sample);
    } catch (_) { return; }
  }
  if (!sample || hoverPoint !== i) return;
  clear(hoverCard,
    sample.thumbnail_url ? el("img", { src: sample.thumbnail_url, alt: "" }) : el("span", { class: "ph" }, sample.file_name),
    el("div", { title: sample.file_name }, sample.file_name));
  hoverCard.classList.remove("hidden");
}

// --- selection ---------------------------------------------------------------------------------------

function clearSelection() { setSelection([]); }

async function setSelection(points) {
  selected = points;
  lassoCount.textContent = fmtNum(points.length);
  if (saveButton) saveButton.disabled = !points.length;
  paintColors();
  selGrid.reset();
  if (!points.length) { gridNote.textContent = "Draw a lasso on the map to list samples here."; return; }
  gridNote.textContent = "Loading…";
  try {
    const data = await api(base + "/map/samples", { method: "POST", body: { mask: selectionMask(points), limit: 60 } });
    if (selected !== points) return;
    selGrid.append(data.samples);
    gridNote.textContent = data.count > data.samples.length
      ? "Showing the first " + fmtNum(data.samples.length) + " of " + fmtNum(data.count) + " (by upload order)." : fmtNum(data.count) + " samples.";
  } catch (err) {
    gridNote.textContent = err.message;
  }
}

document.getElementById("clear-lasso").addEventListener("click", clearSelection);

if (saveForm) {
  saveForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const errorArea = clear(document.getElementById("lasso-error"));
    busy(saveButton, async () => {
      try {
        const tag = await api(base + "/tags", { method: "POST", body: { name: saveForm.elements.name.value.trim(), bitmask: selectionMask(selected) } });
        toast("Tag “" + tag.name + "” saved with " + fmtCount(tag.count, "sample"));
        saveForm.reset();
        colorSelect.append(el("option", { value: "tag:" + tag.id }, "tag: " + tag.name));
      } catch (err) {
        errorArea.appendChild(errorBox(err));
      }
    });
    saveButton.disabled = !selected.length;
  });
}

// --- start -------------------------------------------------------------------------------------------

async function init() {
  try {
    const [embs, fields, tags] = await Promise.all([api(base + "/embeddings"), api(base + "/configurator"), api(base + "/tags")]);
    embeddings = Array.isArray(embs) ? embs : embs.results || [];
    if (!embeddings.length) {
      clear(document.getElementById("map-area"), emptyState("No embeddings yet",
        el("p", {}, "The map needs an embedding. Here is how to add one: “winnow magic” computes one with the built-in embedder, or upload your own in Lightly's CSV format."),
        el("pre", { class: "cmd" }, "winnow magic --dataset-id " + datasetId + " --input-dir ./images\n# or\nwinnow magic --dataset-id " + datasetId + " --input-dir ./images --embeddings embeddings.csv")));
      document.getElementById("map-toolbar").classList.add("hidden");
      return;
    }
    embSelect.append(...embeddings.map((e) => el("option", { value: e.id }, e.name + " (" + e.dimension + "-d)")));
    const wanted = new URLSearchParams(location.search).get("embedding");
    if (wanted && embeddings.some((e) => e.id === wanted)) embSelect.value = wanted;
    const fieldList = Array.isArray(fields) ? fields : fields.results || [];
    const tagList = Array.isArray(tags) ? tags : tags.results || [];
    colorSelect.append(
      ...fieldList.map((f) => el("option", { value: "field:" + f.path }, f.display_name || f.path)),
      ...tagList.map((t) => el("option", { value: "tag:" + t.id }, "tag: " + t.name)));
  } catch (err) {
    showError(err);
    return;
  }
  resizeOverlay();
  new ResizeObserver(() => { scatter.resize(); resizeOverlay(); }).observe(box);
  const current = () => embeddings.find((e) => e.id === embSelect.value);
  embSelect.addEventListener("change", () => loadProjection(current()).catch(showError));
  colorSelect.addEventListener("change", () => { syncUrl(true); applyColor().catch(showError); });
  embSelect.addEventListener("change", () => syncUrl(true));
  window.addEventListener("popstate", () => {
    restoring = true;
    const qs = urlParams();
    const color = qs.get("color") || "";
    const emb = qs.get("embedding");
    const work = [];
    if (emb && emb !== embSelect.value && embeddings.some((e) => e.id === emb)) {
      embSelect.value = emb;
      colorSelect.value = [...colorSelect.options].some((o) => o.value === color) ? color : "";
      work.push(loadProjection(current()));
    } else {
      applyViewFromUrl();
      if (color !== colorSelect.value) {
        colorSelect.value = [...colorSelect.options].some((o) => o.value === color) ? color : "";
        work.push(applyColor());
      }
      work.push(applyFilter());
    }
    Promise.all(work).catch(showError).finally(() => { restoring = false; });
  });
  setUpViews().catch((err) => document.getElementById("map-view-error").appendChild(errorBox(err)));
  const color = urlParams().get("color");
  if (color && [...colorSelect.options].some((o) => o.value === color)) colorSelect.value = color;
  await loadProjection(current()).catch(showError);
}

// Saved views on the map: opening one applies its colour; saving keeps the colour under a name (no filter).
async function setUpViews() {
  const select = document.getElementById("m-view");
  const nameInput = document.getElementById("m-view-name");
  const save = document.getElementById("m-view-save");
  const errorArea = document.getElementById("map-view-error");
  let views = [];
  const render = (chosen = "") => {
    clear(select, el("option", { value: "" }, views.length ? "Open a saved view…" : "No saved views yet"),
      views.map((v) => el("option", { value: v.id }, v.name + (v.color ? "" : " (no colour)"))));
    select.value = chosen;
  };
  const load = async (chosen) => {
    const data = await api(base + "/views");
    views = Array.isArray(data) ? data : data.results || [];
    render(chosen);
  };
  select.addEventListener("change", () => {
    clear(errorArea);
    const view = views.find((v) => v.id === select.value);
    if (!view) return;
    const color = view.color && [...colorSelect.options].some((o) => o.value === view.color) ? view.color : "";
    if (colorSelect.value !== color) {
      colorSelect.value = color;
      syncUrl(true);
      applyColor().catch(showError);
    }
  });
  if (save) {
    save.addEventListener("click", () => {
      clear(errorArea);
      busy(save, async () => {
        try {
          const name = nameInput.value.trim();
          if (!name) { nameInput.focus(); throw new Error("Give the view a name first."); }
          const view = await api(base + "/views", { method: "POST", body: { name, color: colorSelect.value } });
          nameInput.value = "";
          await load(view.id);
          toast("View “" + view.name + "” saved");
        } catch (err) {
          errorArea.appendChild(errorBox(err));
        }
      });
    });
  }
  await load("");
}

init();
