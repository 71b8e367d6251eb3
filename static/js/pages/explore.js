// Explore: the thumbnail grid over the dataset with cursor paging as you scroll, filters by tag,
// file name and configured metadata fields, sorting, selection and "save selection as tag".
import { api, apiRoot, busy, clear, datasetId, el, emptyState, errorBox, fmtCount, fmtNum, fmtValue, getPath, toast } from "../lib.js";

import { SampleGrid, infiniteScroll } from "../grid.js";
import { boxLayer } from "../predictions.js";

const base = "/datasets/" + encodeURIComponent(datasetId);
const moreLike = document.getElementById("more-like-sel");
const MAX_QUERY_SAMPLES = 10000;  // the search API's limit on sample ids
const form = document.getElementById("filters");
const tagSelect = document.getElementById("f-tag");
const nameInput = document.getElementById("f-name");
const sortSelect = document.getElementById("f-sort");
const showSelect = document.getElementById("f-show");
const fieldSelect = document.getElementById("c-field");
const opSelect = document.getElementById("c-op");
const valueInput = document.getElementById("c-value");
const valueList = document.getElementById("c-values");
const chips = document.getElementById("conditions");
const matchCount = document.getElementById("match-count");
const selCount = document.getElementById("sel-count");
const results = document.getElementById("results");
const saveForm = document.getElementById("save-form");
const saveError = document.getElementById("save-error");
const mapLink = document.getElementById("explore-map");

const PAGE = 120;
const OPS = {
  numeric: [["eq", "="], ["ne", "≠"], ["lt", "<"], ["lte", "≤"], ["gt", ">"], ["gte", "≥"]],
  categorical: [["eq", "is"], ["ne", "is not"], ["in", "is one of"]],
  // Text fields also match part of a value, and in any case (the API's contains, icontains, ieq, iin).
  text: [["eq", "is"], ["ne", "is not"], ["in", "is one of"], ["icontains", "contains (any case)"],
    ["contains", "contains (exact case)"], ["ieq", "is (any case)"], ["iin", "is one of (any case)"]],
};
const OP_TEXT = { eq: "=", ne: "≠", lt: "<", lte: "≤", gt: ">", gte: "≥", in: "in", exists: "exists",
  contains: "contains", icontains: "contains (any case)", ieq: "is (any case)", iin: "is one of (any case)" };
const TEXT_OPS = ["contains", "icontains", "ieq", "iin"];
const LIST_OPS = ["in", "iin"];

let fields = [];               // configured fields
let categories = new Map();    // path -> known values, for the value input's suggestions
let state = { tag: "", file_name: "", sort: "idx", conditions: [], show: "" };
let total = null;
let next = null;
let generation = 0;

// Tiles show the value sorted by (a metadata field), so the order can be read off the grid.
// and the field chosen under "Show on tiles".
function sortBadge(sample) {
  const sorted = state.sort.replace(/^-/, "");
  const paths = [sorted, state.show].filter((p, i, all) => p && p !== "idx" && all.indexOf(p) === i);
  const parts = paths.map((path) => {
    const f = fieldOf(path);
    return (f ? label(f) : path) + ": " + fmtValue(getPath(sample.metadata || {}, path));
  });
  parts.push(...predictionBadges(sample));
  return parts.length ? parts.join(" · ") : null;
}

// A model's predictions (and ground-truth labels) on the tiles, per task: the class and the model's confidence
// for classification, the class of the surest object and the object count for detection (metadata at
// predictions.<task>, written by a prediction upload; keys starting with "_" are Lightly's per-tag scores).
function predictionBadges(sample) {
  const tasks = (sample.metadata || {}).predictions;
  if (!tasks || typeof tasks !== "object" || Array.isArray(tasks)) return [];
  return Object.entries(tasks).filter(([name, v]) => !name.startsWith("_") && v && typeof v === "object").map(([name, v]) => {
    const cls = v.predicted_class ?? v.label ?? "–";
    const extra = typeof v.confidence === "number" ? " " + v.confidence.toFixed(2)
      : typeof v.object_count === "number" ? " (" + v.object_count + (v.object_count === 1 ? " object)" : " objects)") : "";
    return name + ": " + cls + extra;
  });
}
// Detection boxes over the thumbnails, per object-detection task, each task toggled under "Boxes on tiles".
// The boxes of a page of samples are asked for in one request as the page loads (only when some task has them).
const boxTasksBox = document.getElementById("box-tasks");
let boxTasks = [];                 // the dataset's object-detection tasks: {name, categories, is_labels}
const hiddenBoxes = new Set();     // names of the tasks whose boxes are switched off (in the URL as hide_boxes)

function tileBoxes(sample, img) {
  const drawn = sample.prediction_boxes;
  if (!drawn || !drawn.width || !drawn.height) return null;
  return boxTasks.filter((t) => drawn.boxes[t.name]).map((t) => {
    const layer = boxLayer(t, drawn.boxes[t.name], img, drawn.width, drawn.height);
    if (hiddenBoxes.has(t.name)) layer.style.display = "none";
    return layer;
  });
}

async function attachBoxes(samples) {
  const ids = samples.filter((s) => s.thumbnail_url).map((s) => s.id);
  if (!boxTasks.length || !ids.length) return;
  try {
    const data = await api(base + "/prediction-boxes", { params: { sample_ids: ids.join(",") } });
    for (const s of samples) if (data.samples[s.id]) s.prediction_boxes = data.samples[s.id];
  } catch (_) { /* the tiles show without boxes */ }
}

function renderBoxToggles() {
  boxTasksBox.classList.toggle("hidden", !boxTasks.length);
  clear(boxTasksBox, el("legend", { style: "padding:0;font-weight:600" }, "Boxes on tiles"), boxTasks.map((t) => {
    const box = el("input", { type: "checkbox", checked: !hiddenBoxes.has(t.name), style: "width:auto;margin:0 4px 0 0" });
    box.addEventListener("change", () => {
      if (box.checked) hiddenBoxes.delete(t.name); else hiddenBoxes.add(t.name);
      showBoxLayers();
      syncUrl(true);  // part of the view: a link, back and forward and a saved view keep it
    });
    return el("label", { style: "display:inline-flex;align-items:center;margin:6px 10px 0 0" }, box, t.name + (t.is_labels ? " (labels)" : ""));
  }));
}

function showBoxLayers() {
  for (const layer of results.querySelectorAll('[data-testid="prediction-layer"]')) {
    layer.style.display = hiddenBoxes.has(layer.dataset.task) ? "none" : "";
  }
}

// Hidden boxes of a task the dataset does not have (an old link, a task since deleted) are said, not ignored.
function checkHiddenBoxes() {
  const unknown = [...hiddenBoxes].filter((name) => !boxTasks.some((t) => t.name === name));
  if (!unknown.length) return;
  for (const name of unknown) hiddenBoxes.delete(name);
  toast("The link hides the boxes of “" + unknown.join("”, “") + "”, which is not an object-detection task of this dataset.", "error");
  syncUrl(false);
}

const grid = new SampleGrid(results, { selectable: true, onSelectionChange: updateSelection, badge: sortBadge, overlay: tileBoxes });
const scroller = infiniteScroll(results, loadMore);

const samples = (n) => fmtCount(n, "sample");

function isNumeric(field) { return field && (field.type === "int" || field.type === "float"); }
function isText(field) { return field && field.type === "categorical_string"; }
function opsFor(field) { return isNumeric(field) ? OPS.numeric : isText(field) ? OPS.text : OPS.categorical; }

function typed(field, text) {
  const t = text.trim();
  if (field.type === "int" || field.type === "categorical_int") {
    if (!/^-?\d+$/.test(t)) throw new Error(label(field) + ": enter a whole number");
    return parseInt(t, 10);
  }
  if (field.type === "float") {
    const n = Number(t);
    if (t === "" || !Number.isFinite(n)) throw new Error(label(field) + ": enter a number");
    return n;
  }
  if (field.type === "boolean") {
    if (!["true", "false"].includes(t.toLowerCase())) throw new Error(label(field) + ": enter true or false");
    return t.toLowerCase() === "true";
  }
  if (!t) throw new Error(label(field) + ": enter a value");
  return text;
}

function label(field) { return field.display_name || field.path; }
function fieldOf(path) { return fields.find((f) => f.path === path); }

function filterObject() {
  const obj = {};
  if (state.tag) obj.tag = state.tag;
  if (state.file_name) obj.file_name = state.file_name;
  if (state.conditions.length) obj.conditions = state.conditions;
  return obj;
}

// A condition as the URL or a person may write it, checked against the configured fields; an Error names what is wrong.
function checkCondition(c) {
  if (!c || typeof c !== "object" || typeof c.path !== "string") throw new Error("a condition must be an object with path, op and value");
  const f = fieldOf(c.path);
  if (!f) throw new Error("“" + c.path + "” is not a configured metadata field");
  const ops = opsFor(f).map(([v]) => v).concat(["exists"]);
  if (!ops.includes(c.op)) {
    const why = TEXT_OPS.includes(c.op) ? " (it matches text, and this field holds " + (isNumeric(f) ? "numbers" : f.type.replace("_", " ") + " values") + ")" : "";
    throw new Error(label(f) + ": “" + c.op + "” is not a condition for a " + f.type + " field" + why);
  }
  if (c.op === "exists") return;
  const values = LIST_OPS.includes(c.op) ? c.value : [c.value];
  if (!Array.isArray(values) || !values.length) throw new Error(label(f) + ": “" + OP_TEXT[c.op] + "” needs a list of values");
  if ((c.op === "contains" || c.op === "icontains") && values[0] === "") throw new Error(label(f) + " " + OP_TEXT[c.op] + ": enter the text to look for");
  for (const v of values) {
    const ok = isNumeric(f) || f.type === "categorical_int" ? typeof v === "number" && Number.isFinite(v) && (f.type === "float" || Number.isInteger(v))
      : f.type === "boolean" ? typeof v === "boolean" : typeof v === "string";
    if (!ok) {
      const want = f.type === "float" ? "a number" : isNumeric(f) || f.type === "categorical_int" ? "a whole number" : f.type === "boolean" ? "true or false" : "text";
      throw new Error(label(f) + " " + (OP_TEXT[c.op] || c.op) + " " + JSON.stringify(v) + ": the value must be " + want);
    }
  }
}

function syncUrl(push) {
  const qs = new URLSearchParams();
  if (state.tag) qs.set("tag", state.tag);
  if (state.file_name) qs.set("file_name", state.file_name);
  if (state.sort !== "idx") qs.set("sort", state.sort);
  if (state.show) qs.set("show", state.show);
  if (state.conditions.length) qs.set("conditions", JSON.stringify(state.conditions));
  for (const name of [...hiddenBoxes].sort()) qs.append("hide_boxes", name);
  const s = qs.toString();
  // The map highlights the same filter (it reads tag, file_name and conditions the way this page writes them).
  const onMap = new URLSearchParams();
  for (const key of ["tag", "file_name", "conditions"]) if (qs.get(key)) onMap.set(key, qs.get(key));
  mapLink.href = base + "/map" + (onMap.toString() ? "?" + onMap : "");
  updateExport();
  const url = location.pathname + (s ? "?" + s : "");
  if (url === location.pathname + location.search) return;
  // A change the curator made is a new history entry, so back and forward walk through the filters.
  if (push) history.pushState(null, "", url); else history.replaceState(null, "", url);
}

let urlProblem = null;  // what is wrong with the filter in the URL, said instead of "0 samples"

function readUrl() {
  const qs = new URLSearchParams(location.search);
  state.tag = qs.get("tag") || "";
  state.file_name = qs.get("file_name") || "";
  state.sort = qs.get("sort") || "idx";
  state.show = qs.get("show") || "";
  hiddenBoxes.clear();
  for (const name of qs.getAll("hide_boxes")) if (name) hiddenBoxes.add(name);
  urlProblem = null;
  try {
    const conditions = JSON.parse(qs.get("conditions") || "[]");
    if (!Array.isArray(conditions)) throw new Error("must be a list");
    state.conditions = conditions;
  } catch (err) {
    state.conditions = [];
    urlProblem = "The link's conditions are not valid JSON (" + err.message + ").";
  }
}

function showForm() {
  tagSelect.value = state.tag;
  nameInput.value = state.file_name;
  sortSelect.value = state.sort;
  showSelect.value = state.show;
}

function renderChips() {
  clear(chips, state.conditions.map((c, i) => {
    const f = fieldOf(c.path);
    const remove = el("button", { type: "button", "aria-label": "Remove condition " + (f ? label(f) : c.path) }, "×");
    remove.addEventListener("click", () => { state.conditions.splice(i, 1); urlProblem = null; apply(); });
    return el("span", { class: "badge blue cond-chip", "data-testid": "condition" },
      (f ? label(f) : c.path) + " " + (OP_TEXT[c.op] || c.op) + " " + JSON.stringify(c.value), remove);
  }));
}

function renderOps() {
  const f = fieldOf(fieldSelect.value);
  clear(opSelect, opsFor(f).map(([v, t]) => el("option", { value: v }, t)));
  renderValueList();
  valueInput.value = "";
}

function renderValueList() {
  clear(valueList, (categories.get(fieldSelect.value) || []).map((v) => el("option", { value: String(v) })));
}

function updateSelection() {
  const n = grid.allInFilter ? Math.max(0, (total || 0) - grid.excluded.size) : grid.selected.size;
  selCount.textContent = !grid.allInFilter ? fmtNum(n) + " selected"
    : grid.excluded.size ? fmtNum(n) + " of " + fmtNum(total) + " in filter selected" : "all " + fmtNum(total) + " in filter selected";
  const save = document.getElementById("save-tag");
  if (save) save.disabled = !n;
  // A search takes the sample ids themselves: "all in filter" (or a huge pick) is saved as a tag first.
  moreLike.disabled = grid.allInFilter || !n || n > MAX_QUERY_SAMPLES;
  moreLike.title = grid.allInFilter || n > MAX_QUERY_SAMPLES
    ? "Save the selection as a tag, then search from the tag on the Similar page"
    : "Samples nearest to the selected ones (their centroid)";
}

moreLike.addEventListener("click", () => busy(moreLike, async () => {
  try {
    const run = await api(base + "/similarity/search", { method: "POST", body: { samples: [...grid.selected], k: 100 } });
    window.location.href = base + "/similar?run=" + encodeURIComponent(run.id);
  } catch (err) {
    toast(err.message, "error");
  }
}).then(updateSelection));

async function loadMore() {
  const mine = generation;
  let data;
  try {
    if (next) data = await api(next);
    else {
      data = await api(base + "/samples", { params: {
        tag: state.tag, file_name: state.file_name, sort: state.sort, limit: PAGE, count: "true",
        conditions: state.conditions.length ? JSON.stringify(state.conditions) : "" } });
    }
  } catch (err) {
    if (mine !== generation) return true;
    // The page that failed is asked for again (same cursor) when the curator says so.
    const box = errorBox(err);
    box.append(" ", el("button", { type: "button", class: "secondary", onclick: () => { box.remove(); scroller.restart(); } }, "Try again"));
    results.prepend(box);
    if (total === null) matchCount.textContent = "";
    return false;
  }
  if (mine !== generation) return true; // the filter changed meanwhile: this page is dropped, the new filter loads
  if (data.count !== undefined) {
    total = data.count;
    matchCount.textContent = samples(total);
    updateSelection();
    if (total === 0) {
      const filtered = state.tag || state.file_name || state.conditions.length;
      results.prepend(emptyState(filtered ? "No sample matches these filters" : "No samples yet",
        el("p", {}, filtered ? "Remove a condition or choose another tag." : "Add images with the winnow CLI: see the dataset's Overview.")));
    }
  }
  await attachBoxes(data.results);
  if (mine !== generation) return true;
  grid.append(data.results);
  next = data.next;
  return Boolean(next);
}

function apply(push = true) {
  generation += 1;
  next = null;
  total = null;
  grid.reset();
  grid.clearSelection();
  results.querySelectorAll(".empty, .alert").forEach((n) => n.remove());
  renderChips();
  syncUrl(push);
  let problem = urlProblem;
  if (!problem) {
    try { state.conditions.forEach(checkCondition); } catch (err) { problem = "This filter cannot be applied: " + err.message + "."; }
  }
  if (problem) {
    // A bad value (a link typed by hand, a field since reconfigured) is said in words, never shown as 0 samples.
    matchCount.textContent = "";
    results.prepend(el("div", { class: "alert error", role: "alert", "data-testid": "filter-error" }, problem,
      " Remove the condition, or fix the value."));
    return;
  }
  matchCount.textContent = "Counting…";
  scroller.restart();
  refreshFacets();
}

// --- facets: each configured field with its counts under the current filter; ticking one edits the filter ---

const facetsBox = document.getElementById("facets");
const MAX_FACET_VALUES = 12;
let facetRequest = 0;

// Conditions a facet owns for its field: `in`/`eq` for a category, `gte`/`lte` for a number.
function setFacet(path, ops, added) {
  state.conditions = state.conditions.filter((c) => !(c.path === path && ops.includes(c.op))).concat(added);
  urlProblem = null;
  apply();
}

function facetValues(path) {
  const out = [];
  for (const c of state.conditions) {
    if (c.path !== path) continue;
    if (c.op === "eq") out.push(c.value);
    if (c.op === "in" && Array.isArray(c.value)) out.push(...c.value);
  }
  return out;
}

function facetBound(path, op) {
  const c = state.conditions.find((x) => x.path === path && x.op === op);
  return c ? c.value : "";
}

// Without a filter the endpoint counts everything as the total: "matched" then means every sample.
let facetsUnfiltered = true;
const matchedOf = (v) => (facetsUnfiltered ? v.count : v.matched);

function categoricalFacet(f, data) {
  const chosen = facetValues(f.path);
  const shown = data.values.slice(0, MAX_FACET_VALUES);
  for (const v of chosen) if (!shown.some((x) => x.value === v)) shown.push({ value: v, count: 0, matched: 0 });
  const containsBox = isText(f) ? textFacet(f) : null;
  return el("fieldset", { class: "facet", "data-path": f.path, style: "margin:0" },
    el("legend", { class: "sr-only" }, label(f)), el("h3", { "aria-hidden": "true" }, label(f)), containsBox,
    shown.map((v) => {
      const box = el("input", { type: "checkbox", checked: chosen.some((x) => x === v.value), "data-facet-key": f.path + "=" + JSON.stringify(v.value) });
      box.addEventListener("change", () => {
        const next = box.checked ? [...chosen, v.value] : chosen.filter((x) => x !== v.value);
        setFacet(f.path, ["eq", "in"], next.length ? [{ path: f.path, op: "in", value: next }] : []);
      });
      return el("label", { "data-testid": "facet-value" }, box, fmtValue(v.value), el("span", { class: "n", "data-testid": "facet-count" }, fmtNum(matchedOf(v))));
    }),
    data.values.length > MAX_FACET_VALUES ? el("p", { class: "muted small", style: "margin:4px 0 0" }, fmtNum(data.values.length - MAX_FACET_VALUES) + " more values: use the condition builder") : null,
    data.other ? el("p", { class: "muted small", style: "margin:4px 0 0" }, fmtNum(facetsUnfiltered ? data.other : data.other_matched || 0) + " in rarer values") : null);
}

// A text field's "contains" box (any case by default; "Aa" makes it exact case). The value counts below
// follow it, as they follow every condition.
function textFacet(f) {
  const current = state.conditions.find((c) => c.path === f.path && (c.op === "icontains" || c.op === "contains"));
  const input = el("input", { type: "search", value: current ? current.value : "", placeholder: "contains…",
    "aria-label": label(f) + " contains", "data-facet-key": f.path + ":contains", style: "width:100%" });
  const exact = el("input", { type: "checkbox", checked: Boolean(current && current.op === "contains"),
    "data-facet-key": f.path + ":contains-case", "aria-label": label(f) + ": match case" });
  const update = () => {
    const text = input.value;
    setFacet(f.path, ["icontains", "contains"], text.trim() === "" ? [] : [{ path: f.path, op: exact.checked ? "contains" : "icontains", value: text }]);
  };
  input.addEventListener("change", update);
  exact.addEventListener("change", () => { if (input.value.trim()) update(); });
  return el("div", { class: "row small", style: "align-items:center;gap:6px;flex-wrap:nowrap;margin-bottom:4px" },
    input, el("label", { class: "muted", title: "Match case" }, exact, "Aa"));
}

function numericFacet(f, data) {
  const bound = (op, text) => {
    const input = el("input", { type: "number", step: "any", value: String(facetBound(f.path, op)), "aria-label": label(f) + " " + text,
      "data-facet-key": f.path + ":" + op, placeholder: op === "gte" ? fmtValue(data.min) : fmtValue(data.max) });
    input.addEventListener("change", () => {
      const t = input.value.trim();
      if (t !== "" && !Number.isFinite(Number(t))) { toast(label(f) + ": enter a number", "error"); return; }
      setFacet(f.path, [op], t === "" ? [] : [{ path: f.path, op, value: f.type === "int" ? Math.round(Number(t)) : Number(t) }]);
    });
    return input;
  };
  const matched = ((facetsUnfiltered ? data.counts : data.matched_counts) || []).reduce((a, b) => a + b, 0);
  return el("div", { class: "facet", "data-path": f.path },
    el("h3", {}, label(f)),
    el("div", { class: "row small", style: "align-items:center;gap:6px" }, bound("gte", "at least"), "–", bound("lte", "at most")),
    el("p", { class: "muted small", style: "margin:4px 0 0", "data-testid": "facet-range" },
      data.min === null ? "no numeric values" : fmtValue(data.min) + " to " + fmtValue(data.max) + " · " + fmtNum(matched) + " matched"));
}

async function refreshFacets() {
  const mine = ++facetRequest;
  if (!fields.length) { document.getElementById("facets-panel").classList.add("hidden"); return; }
  try {
    const filter = filterObject();
    const data = await api(base + "/metadata/histograms", { params: { filter: JSON.stringify(filter) } });
    if (mine !== facetRequest) return;
    facetsUnfiltered = !Object.keys(filter).length;
    // The boxes are rebuilt: the control holding keyboard focus gets it back.
    const focused = facetsBox.contains(document.activeElement) ? document.activeElement.dataset.facetKey : null;
    clear(facetsBox, data.fields.map((h) => {
      const f = fieldOf(h.path) || { path: h.path, type: h.type };
      return h.kind === "numeric" ? numericFacet(f, h) : categoricalFacet(f, h);
    }));
    if (focused) {
      const again = [...facetsBox.querySelectorAll("[data-facet-key]")].find((n) => n.dataset.facetKey === focused);
      if (again) again.focus();
    }
  } catch (err) {
    if (mine === facetRequest) clear(facetsBox, errorBox(err));
  }
}

window.addEventListener("popstate", () => {
  readUrl();
  showForm();
  renderBoxToggles();
  apply(false);
});

form.addEventListener("submit", (event) => {
  event.preventDefault();
  // A value typed but not yet added is a condition the curator meant: add it rather than drop it.
  if (valueInput.value.trim() && fieldOf(fieldSelect.value)) { addCondition(); return; }
  state.tag = tagSelect.value;
  state.file_name = nameInput.value.trim();
  state.sort = sortSelect.value;
  apply();
});
tagSelect.addEventListener("change", () => form.requestSubmit());
sortSelect.addEventListener("change", () => form.requestSubmit());
showSelect.addEventListener("change", () => {
  // Only the tiles change: the loaded samples stay, their tiles are built again with the new badge.
  state.show = showSelect.value;
  syncUrl(true);
  const loaded = grid.samples;
  grid.reset();
  grid.append(loaded);
});
fieldSelect.addEventListener("change", renderOps);

function addCondition() {
  const f = fieldOf(fieldSelect.value);
  if (!f) return;
  try {
    const list = LIST_OPS.includes(opSelect.value);
    const value = list
      ? valueInput.value.split(",").filter((v) => v.trim()).map((v) => typed(f, f.type === "categorical_string" ? v.trim() : v))
      : typed(f, valueInput.value);
    if (list && !value.length) throw new Error(label(f) + ": enter values separated by commas");
    state.conditions.push({ path: f.path, op: opSelect.value, value });
  } catch (err) {
    toast(err.message, "error");
    valueInput.focus();
    return;
  }
  valueInput.value = "";
  state.tag = tagSelect.value;
  state.file_name = nameInput.value.trim();
  state.sort = sortSelect.value;
  apply();
}
document.getElementById("c-add").addEventListener("click", addCondition);
valueInput.addEventListener("keydown", (event) => {
  if (event.key === "Enter") { event.preventDefault(); addCondition(); }
});

document.getElementById("select-all").addEventListener("click", () => { if (total) grid.selectAllInFilter(); });
document.getElementById("clear-sel").addEventListener("click", () => grid.clearSelection());

if (saveForm) {
  saveForm.addEventListener("submit", (event) => {
    event.preventDefault();
    clear(saveError);
    const name = saveForm.elements.name.value.trim();
    busy(saveForm.querySelector("button"), async () => {
      try {
        const body = grid.allInFilter ? { name, filter: filterObject() } : { name, sample_ids: [...grid.selected] };
        if (grid.allInFilter && grid.excluded.size) body.exclude_sample_ids = [...grid.excluded];
        if (!grid.allInFilter && state.tag) body.parent = state.tag;
        const tag = await api(base + "/tags", { method: "POST", body });
        toast("Tag “" + tag.name + "” saved with " + samples(tag.count));
        saveForm.reset();
        const option = el("option", { value: tag.id }, tag.name + " (" + fmtNum(tag.count) + ")");
        tagSelect.appendChild(option);
        grid.clearSelection();
      } catch (err) {
        saveError.appendChild(errorBox(err));
      }
    }).then(updateSelection);  // busy() enables the button again: nothing selected means nothing to save
  });
}

// --- saved views: the current filter and sort under a name (the API keeps them per dataset) ---------------

const viewSelect = document.getElementById("v-select");
const viewName = document.getElementById("v-name");
const viewError = document.getElementById("views-error");
const viewMap = document.getElementById("v-map");
let views = [];

function renderViews(selectedId = viewSelect.value) {
  clear(viewSelect, el("option", { value: "" }, views.length ? "Open a saved view…" : "No saved views yet"),
    views.map((v) => el("option", { value: v.id }, v.name)));
  viewSelect.value = views.some((v) => v.id === selectedId) ? selectedId : "";
  const chosen = views.find((v) => v.id === viewSelect.value);
  for (const id of ["v-rename", "v-delete"]) { const b = document.getElementById(id); if (b) b.disabled = !chosen; }
  viewMap.classList.toggle("hidden", !(chosen && chosen.color));
  if (chosen && chosen.color) viewMap.href = "/datasets/" + encodeURIComponent(datasetId) + "/map?color=" + encodeURIComponent(chosen.color);
  updateExport();
}

// Export: the open saved view (while the filter is still the view's), else the current filter, as a download in the
// tag export's formats, without making a tag first.
const exportFormat = document.getElementById("x-format");
const exportLink = document.getElementById("x-link");
// Compared with keys in one order: the server keeps a view's filter as jsonb, which orders keys its own way.
const canonical = (v) => (Array.isArray(v) ? v.map(canonical) : v && typeof v === "object"
  ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, canonical(v[k])])) : v);
const sameFilter = (a, b) => JSON.stringify(canonical(a || {})) === JSON.stringify(canonical(b || {}));
function updateExport() {
  const chosen = views.find((v) => v.id === viewSelect.value);
  const format = "format=" + encodeURIComponent(exportFormat.value);
  // Either export comes in the grid's order: the view's sort, or the current one.
  if (chosen && sameFilter(chosen.filter, filterObject()) && (chosen.sort || "idx") === state.sort) {
    exportLink.href = apiRoot + base + "/views/" + encodeURIComponent(chosen.id) + "/export?" + format;
    exportLink.textContent = "Export view “" + chosen.name + "”";
  } else {
    const filter = filterObject();
    exportLink.href = apiRoot + base + "/export?" + format + (Object.keys(filter).length ? "&filter=" + encodeURIComponent(JSON.stringify(filter)) : "")
      + (state.sort !== "idx" ? "&sort=" + encodeURIComponent(state.sort) : "");
    exportLink.textContent = Object.keys(filter).length ? "Export the matching samples" : "Export all samples";
  }
}
exportFormat.addEventListener("change", updateExport);

async function loadViews(selectedId) {
  const data = await api(base + "/views");
  views = Array.isArray(data) ? data : data.results || [];
  renderViews(selectedId);
}

function openView(view) {
  const f = view.filter || {};
  state.tag = f.tag || "";
  state.file_name = f.file_name || "";
  state.conditions = Array.isArray(f.conditions) ? JSON.parse(JSON.stringify(f.conditions)) : [];
  state.sort = view.sort || "idx";
  hiddenBoxes.clear();
  for (const name of view.hidden_boxes || []) hiddenBoxes.add(name);
  renderBoxToggles();
  urlProblem = null;
  showForm();
  apply();
}

viewSelect.addEventListener("change", () => {
  clear(viewError);
  const chosen = views.find((v) => v.id === viewSelect.value);
  renderViews();
  if (!chosen) return;
  if (viewName) viewName.value = chosen.name;
  openView(chosen);
});

function viewAction(button, action) {
  if (!button) return;
  button.addEventListener("click", () => {
    clear(viewError);
    busy(button, async () => {
      try { await action(); } catch (err) { viewError.appendChild(errorBox(err)); }
    }).then(() => renderViews());
  });
}
viewAction(document.getElementById("v-save"), async () => {
  const name = viewName.value.trim();
  if (!name) { viewName.focus(); throw new Error("Give the view a name first."); }
  const view = await api(base + "/views", { method: "POST",
    body: { name, filter: filterObject(), sort: state.sort, hidden_boxes: [...hiddenBoxes].sort() } });
  await loadViews(view.id);
  toast("View “" + view.name + "” saved");
});
viewAction(document.getElementById("v-rename"), async () => {
  const chosen = views.find((v) => v.id === viewSelect.value);
  const name = viewName.value.trim();
  if (!name) { viewName.focus(); throw new Error("Type the new name in “View name”."); }
  const view = await api(base + "/views/" + encodeURIComponent(chosen.id), { method: "PATCH", body: { name } });
  await loadViews(view.id);
  toast("View renamed to “" + view.name + "”");
});
viewAction(document.getElementById("v-delete"), async () => {
  const chosen = views.find((v) => v.id === viewSelect.value);
  if (!window.confirm("Delete the saved view “" + chosen.name + "”? Tags and samples stay.")) return;
  await api(base + "/views/" + encodeURIComponent(chosen.id), { method: "DELETE" });
  viewName.value = "";
  await loadViews("");
  toast("View “" + chosen.name + "” deleted");
});

async function init() {
  readUrl();
  loadViews().catch((err) => viewError.appendChild(errorBox(err)));
  nameInput.value = state.file_name;
  try {
    const [tags, configured, tasks] = await Promise.all([api(base + "/tags"), api(base + "/configurator"),
      api(base + "/predictions").catch(() => [])]);
    boxTasks = (Array.isArray(tasks) ? tasks : tasks.results || []).filter((t) => t.type === "object-detection");
    checkHiddenBoxes();
    renderBoxToggles();
    fields = Array.isArray(configured) ? configured : configured.results || [];
    const tagList = Array.isArray(tags) ? tags : tags.results || [];
    tagSelect.append(...tagList.map((t) => el("option", { value: t.id }, t.name + " (" + fmtNum(t.count) + ")")));
    showSelect.append(...fields.map((f) => el("option", { value: f.path }, label(f))));
    for (const f of fields) {
      sortSelect.append(el("option", { value: f.path }, label(f) + " ↑"), el("option", { value: "-" + f.path }, label(f) + " ↓"));
    }
    showForm();
    if (fields.length) {
      fieldSelect.append(...fields.map((f) => el("option", { value: f.path }, label(f))));
      renderOps();
    } else {
      document.getElementById("cond-add").replaceChildren(el("p", { class: "muted small", style: "margin:0;align-self:center" },
        "Configure metadata fields in the Configurator to filter by them."));
    }
  } catch (err) {
    toast(err.message, "error");
  }
  apply(false);
  // Known values of categorical fields, for the value suggestions (not needed to browse).
  if (fields.some((f) => !isNumeric(f))) {
    api(base + "/metadata/histograms").then((h) => {
      for (const f of h.fields) if (f.kind === "categorical") categories.set(f.path, f.values.map((v) => v.value));
      renderValueList();  // only the suggestions: the condition being typed meanwhile stays as it is
    }).catch(() => {});
  }
}

init();
