// Configurator: proposed metadata paths, and the configured entries edited locally, then saved.
import { api, busy, canEdit, clear, datasetId, el, emptyState, errorBox, fmtValue, toast } from "../lib.js";

const base = "/datasets/" + encodeURIComponent(datasetId);
const configuredBox = document.getElementById("configured");
const proposedBox = document.getElementById("proposed");
const saveButton = document.getElementById("save");
const saveStatus = document.getElementById("save-status");

const TYPES = [
  ["int", "Integer"], ["float", "Float"], ["categorical_string", "Categorical string"],
  ["categorical_int", "Categorical integer"], ["boolean", "Boolean"],
];
let saved = [];     // entries as the server has them
let entries = [];   // the working copy: {id?, path, type, display_name, fallbackText, deleted?}
let proposals = [];
let nextKey = 1;
let warnedPaths = new Set();  // paths no sample has, already warned about: a second Save saves them anyway

const TYPE_NAME = Object.fromEntries(TYPES);

// What the sampled metadata says about a path and a type: an error (refused), a warning (once), or nothing.
function checkAgainstData(path, type) {
  const p = proposals.find((x) => x.path === path);
  if (!p) {
    return { warn: "No sample has the path “" + path + "”" + (proposals.length ? " (check the spelling; known paths are listed below)" : "") + ". Press Save changes again to save it anyway." };
  }
  const kinds = new Set(Object.keys(p.value_types || {}));
  const numeric = kinds.has("int") || kinds.has("float");
  const examples = (p.examples || []).slice(0, 3).map(fmtValue).join(", ");
  if (["int", "float", "categorical_int"].includes(type) && !numeric) {
    return { error: "“" + path + "” holds " + (kinds.has("boolean") && !kinds.has("string") ? "true/false values" : "text") +
      (examples ? " (" + examples + ")" : "") + ", not numbers: it cannot be " + TYPE_NAME[type] + ". Choose " +
      (kinds.has("string") ? "Categorical string" : "Boolean") + "." };
  }
  if ((type === "int" || type === "categorical_int") && !kinds.has("int") && kinds.has("float")) {
    return { error: "“" + path + "” holds decimal numbers" + (examples ? " (" + examples + ")" : "") + ": it cannot be " + TYPE_NAME[type] + ". Choose Float." };
  }
  return null;
}

const fallbackText = (v) => (v === null || v === undefined ? "" : String(v));

function parseFallback(entry) {
  const text = entry.fallbackText.trim();
  if (text === "") return null;
  if (entry.type === "int" || entry.type === "categorical_int") {
    if (!/^-?\d+$/.test(text)) throw new Error("“" + entry.path + "”: the fallback must be a whole number");
    return parseInt(text, 10);
  }
  if (entry.type === "float") {
    const n = Number(text);
    if (!Number.isFinite(n)) throw new Error("“" + entry.path + "”: the fallback must be a number");
    return n;
  }
  if (entry.type === "boolean") {
    if (!["true", "false"].includes(text.toLowerCase())) throw new Error("“" + entry.path + "”: the fallback must be true or false");
    return text.toLowerCase() === "true";
  }
  return entry.fallbackText;
}

function isDirty() {
  if (entries.some((e) => e.deleted ? e.id : !e.id)) return true;
  return entries.some((e) => {
    if (!e.id || e.deleted) return false;
    const s = saved.find((x) => x.id === e.id);
    return !s || s.path !== e.path || s.type !== e.type || s.display_name !== e.display_name || fallbackText(s.fallback) !== e.fallbackText;
  });
}

function markDirty() {
  if (saveButton) saveButton.disabled = !isDirty();
}

function addEntry(path, type) {
  const existing = entries.find((e) => e.path === path && path);
  if (existing) {
    existing.deleted = false;
  } else {
    entries.push({ key: nextKey++, path, type: type || "categorical_string", display_name: path, fallbackText: "" });
  }
  renderConfigured();
  renderProposed();
  markDirty();
  const inputs = configuredBox.querySelectorAll("input[name=path]");
  if (!path && inputs.length) inputs[inputs.length - 1].focus();
}

function entryRow(entry) {
  const input = (name, value, label, extra = {}) => {
    const node = el("input", { type: "text", name, value, "aria-label": label + " for " + (entry.path || "new entry"), disabled: !canEdit, ...extra });
    node.addEventListener("input", () => { entry[name] = node.value; markDirty(); });
    return node;
  };
  const type = el("select", { name: "type", "aria-label": "Type for " + (entry.path || "new entry"), disabled: !canEdit },
    TYPES.map(([value, label]) => el("option", { value, selected: value === entry.type }, label)));
  type.addEventListener("change", () => { entry.type = type.value; markDirty(); });
  const pathInput = entry.id
    ? el("code", {}, entry.path)
    : input("path", entry.path, "Path", { placeholder: "weather.temperature" });
  const remove = el("button", { type: "button", class: "small danger", "aria-label": "Delete entry " + entry.path }, "Delete");
  remove.addEventListener("click", () => {
    if (entry.id) entry.deleted = true; else entries = entries.filter((e) => e !== entry);
    renderConfigured();
    renderProposed();
    markDirty();
  });
  return el("tr", { "data-testid": "configured-row", "data-path": entry.path },
    el("td", {}, pathInput),
    el("td", {}, type),
    el("td", {}, input("display_name", entry.display_name, "Display name")),
    el("td", {}, input("fallbackText", entry.fallbackText, "Fallback", { placeholder: "none" })),
    el("td", { class: "num" }, canEdit ? remove : null));
}

function renderConfigured() {
  const visible = entries.filter((e) => !e.deleted);
  if (!visible.length) {
    clear(configuredBox, emptyState("No fields configured yet",
      el("p", {}, canEdit ? "Add the paths you want to filter and colour by from the list below, then “Save changes”."
        : "An editor of this dataset can configure fields.")));
    return;
  }
  clear(configuredBox, el("table", {},
    el("thead", {}, el("tr", {}, ["Path", "Type", "Display name", "Fallback", ""].map((h) => el("th", {}, h)))),
    el("tbody", {}, visible.map(entryRow))));
}

function renderProposed() {
  if (!proposals.length) {
    clear(proposedBox, emptyState("No metadata yet",
      el("p", {}, "Upload custom metadata (Lightly's COCO-like JSON) and its paths appear here:"),
      el("pre", { class: "cmd" }, "winnow magic --dataset-id " + datasetId + " --input-dir ./images --custom-metadata metadata.json")));
    return;
  }
  const active = new Set(entries.filter((e) => !e.deleted).map((e) => e.path));
  const rows = proposals.map((p) => {
    const add = el("button", { type: "button", class: "small", "aria-label": "Add " + p.path, disabled: active.has(p.path) },
      active.has(p.path) ? "Added" : "Add");
    add.addEventListener("click", () => addEntry(p.path, p.type));
    return el("tr", { "data-testid": "proposed-row" },
      el("td", {}, el("code", {}, p.path)),
      el("td", {}, el("span", { class: "badge" }, (TYPES.find(([v]) => v === p.type) || [p.type, p.type])[1]),
        p.mixed_types ? el("span", { class: "badge amber", title: JSON.stringify(p.value_types) }, "mixed") : null),
      el("td", { class: "small" }, (p.examples || []).map(fmtValue).join(", ")),
      el("td", { class: "num" }, Math.round((p.coverage || 0) * 1000) / 10 + "%"),
      el("td", { class: "num" }, p.distinct_values === null ? "many" : String(p.distinct_values)),
      el("td", { class: "num" }, canEdit ? add : null));
  });
  clear(proposedBox, el("table", {},
    el("thead", {}, el("tr", {}, ["Path", "Proposed type", "Examples", "Coverage", "Distinct", ""].map((h, i) =>
      el("th", { class: i >= 3 && i <= 4 ? "num" : null }, h)))),
    el("tbody", {}, rows)));
}

async function save() {
  clear(saveStatus);
  const work = [];
  try {
    for (const e of entries) {
      if (e.deleted) { if (e.id) work.push({ e, method: "DELETE" }); continue; }
      if (!e.path.trim()) throw new Error("An entry has no path: fill it in or delete the entry.");
      const body = { path: e.path.trim(), type: e.type, display_name: e.display_name.trim(), fallback: parseFallback(e) };
      if (!e.id) work.push({ e, method: "POST", body });
      else {
        const s = saved.find((x) => x.id === e.id);
        if (s.type !== e.type || s.display_name !== e.display_name || fallbackText(s.fallback) !== e.fallbackText) {
          work.push({ e, method: "PATCH", body: { type: body.type, display_name: body.display_name, fallback: body.fallback } });
        }
      }
    }
    const warnings = [];
    for (const item of work) {
      if (item.method === "DELETE") continue;
      const path = item.body.path || item.e.path;
      const problem = checkAgainstData(path, item.body.type);
      if (problem && problem.error) throw new Error(problem.error);
      if (problem && problem.warn && !warnedPaths.has(path)) { warnedPaths.add(path); warnings.push(problem.warn); }
    }
    if (warnings.length) {
      renderConfigured();  // the rows' labels follow the paths typed
      saveStatus.appendChild(el("div", { class: "alert warn", role: "alert", "data-testid": "configurator-warning" }, warnings.join(" ")));
      return;
    }
  } catch (err) {
    saveStatus.appendChild(errorBox(err));
    return;
  }
  let done = 0;
  try {
    // Deletions first, so a path deleted and re-added in one edit does not collide.
    work.sort((a, b) => (a.method === "DELETE" ? -1 : 0) - (b.method === "DELETE" ? -1 : 0));
    for (const item of work) {
      const url = base + "/configurator" + (item.e.id ? "/" + item.e.id : "");
      try {
        await api(url, { method: item.method, body: item.body });
      } catch (err) {
        throw new Error("“" + item.e.path + "”: " + err.message);
      }
      done += 1;
    }
  } catch (err) {
    // Keep the edits on screen to fix; entries that did land become saved ones.
    const data = await api(base + "/configurator").catch(() => null);
    if (data) {
      saved = Array.isArray(data) ? data : data.results || [];
      entries = entries.filter((e) => !(e.deleted && e.id && !saved.some((x) => x.id === e.id)));
      for (const e of entries) {
        const landed = !e.id && saved.find((x) => x.path === e.path.trim());
        if (landed) e.id = landed.id;
      }
      renderConfigured();
      renderProposed();
      markDirty();
    }
    saveStatus.appendChild(errorBox(err));
    return;
  }
  // The message comes after the reload, so what the page shows is what the server holds.
  await load();
  toast("Saved " + done + " change" + (done === 1 ? "" : "s"));
  saveStatus.appendChild(el("div", { class: "alert ok", role: "status" }, "All changes saved."));
}

async function load() {
  try {
    const [configured, proposed] = await Promise.all([
      api(base + "/configurator"), api(base + "/metadata/fields")]);
    saved = Array.isArray(configured) ? configured : configured.results || [];
    entries = saved.map((f) => ({ key: nextKey++, id: f.id, path: f.path, type: f.type,
      display_name: f.display_name || "", fallbackText: fallbackText(f.fallback) }));
    proposals = proposed.fields || [];
    if (proposed.sampled) proposedBox.dataset.sampled = "1";
    renderConfigured();
    renderProposed();
    markDirty();
  } catch (err) {
    clear(configuredBox, errorBox(err));
  }
}

if (saveButton) saveButton.addEventListener("click", () => busy(saveButton, save));
const manual = document.getElementById("add-manual");
if (manual) manual.addEventListener("click", () => addEntry("", "categorical_string"));
window.addEventListener("beforeunload", (event) => { if (isDirty()) event.preventDefault(); });
load();
