// Duplicates: start a grouping run (a worker, with progress), review the groups side by side with the sample
// each keeps marked, then save the keepers, the deduplicated set (a sampling run's input) or the extra copies.
import { api, busy, canEdit, clear, datasetId, el, emptyState, errorBox, fmtNum, followRun, toast } from "../lib.js";

const base = "/datasets/" + encodeURIComponent(datasetId) + "/similarity";
const form = document.getElementById("dup-form");
const result = document.getElementById("dup-result");
const PAGE = 20;
let stopPoll = null;
let keep = "first";
let currentRun = null;
const KEEPS = ["first", "largest", "sharpest"];

// The run under review and which sample a group keeps live in the URL (?run=&keep=): a reload or a link shows the
// same review, back and forward walk the runs and choices.
function syncUrl(push) {
  const qs = new URLSearchParams();
  if (currentRun) qs.set("run", currentRun);
  if (keep !== "first") qs.set("keep", keep);
  const url = location.pathname + (qs.toString() ? "?" + qs : "");
  if (url === location.pathname + location.search) return;
  if (push) history.pushState(null, "", url); else history.replaceState(null, "", url);
}

function readKeep() {
  const wanted = new URLSearchParams(location.search).get("keep") || "first";
  keep = KEEPS.includes(wanted) ? wanted : "first";
  if (wanted !== keep) toast("The link's keep=" + wanted + " is not a choice (" + KEEPS.join(", ") + "): keeping the first uploaded.", "error");
}

const list = (data) => (Array.isArray(data) ? data : (data && data.results) || []);

async function start() {
  const f = form.elements;
  const body = { embedding: f.embedding.value };
  if (f.threshold.value !== "") body.threshold = Number(f.threshold.value);
  const run = await api(base + "/duplicates", { method: "POST", body });
  follow(run.id);
  syncUrl(true);
}

function follow(runId) {
  if (stopPoll) stopPoll();
  currentRun = runId;
  stopPoll = followRun(base + "/runs/" + encodeURIComponent(runId), result, {
    working: (pct) => "Comparing every pair of samples on a worker… " + pct + "%",
    failedText: "the run failed",
    barAttrs: { "data-testid": "dup-progress" },
    done: render,
  });
}

function render(run) {
  const s = run.summary;
  const groups = el("div", { "data-testid": "dup-groups" });
  const more = el("button", { type: "button", class: "small hidden" }, "More groups");
  let offset = 0;
  const loadPage = () => busy(more, async () => {
    const page = await api(base + "/runs/" + encodeURIComponent(run.id) + "/results", { params: { offset, limit: PAGE } });
    page.results.forEach((g) => groups.appendChild(groupRow(g)));
    offset = page.next_offset;
    more.classList.toggle("hidden", offset === null);
  });
  more.addEventListener("click", loadPage);
  const keepSelect = el("select", { id: "d-keep", "aria-label": "Which sample a group keeps" },
    el("option", { value: "first" }, "keep the first uploaded"), el("option", { value: "largest" }, "keep the largest image"), el("option", { value: "sharpest" }, "keep the sharpest image"));
  keepSelect.value = keep;
  keepSelect.addEventListener("change", () => { keep = keepSelect.value; groups.querySelectorAll("[data-group]").forEach(markKeeper); syncUrl(true); });
  const head = el("div", { class: "panel" },
    el("p", { "data-testid": "dup-summary" },
      el("strong", {}, fmtNum(s.groups) + " groups"), " (" + fmtNum(s.exact_groups) + " exact), ",
      fmtNum(s.in_groups) + " samples in them, " + fmtNum(s.removable) + " extra copies"),
    el("p", { class: "muted small" }, "Threshold " + round(s.threshold) + " (suggested from the data: " + round(s.suggested_threshold)
      + ") over " + fmtNum(s.searched) + " samples, " + run.params.metric + " distance."),
    el("div", { class: "row", style: "align-items:center" }, el("label", { for: "d-keep" }, "Each group"), keepSelect),
    canEdit && s.groups ? saveForm(run) : null);
  clear(result, head, s.groups ? groups : emptyState("No duplicates", "No two samples lie within the threshold."), more);
  if (s.groups) loadPage();
}

const round = (v) => String(Math.round(v * 10000) / 10000);

function groupRow(g) {
  const row = el("div", { class: "panel", "data-group": g.group, "data-keep-first": g.keep_first, "data-keep-largest": g.keep_largest, "data-keep-sharpest": g.keep_sharpest, "data-testid": "dup-group" },
    el("p", { class: "small", style: "margin-top:0" }, el("strong", {}, "Group " + (g.group + 1)), " · " + g.size + " samples",
      g.exact ? [" ", el("span", { class: "badge amber" }, "exact")] : null,
      g.size > g.members.length ? el("span", { class: "muted" }, " · showing " + g.members.length) : null),
    el("div", { class: "grid" }, g.members.map((m) =>
      el("div", { class: "tile" + (m.thumbnail_url ? "" : " noimg"), "data-idx": m.idx, title: m.file_name, "data-testid": "dup-member" },
        m.thumbnail_url ? el("img", { src: m.thumbnail_url, alt: m.file_name, loading: "lazy" }) : el("div", { class: "ph" }, m.file_name),
        el("span", { class: "rank" }, round(m.distance)),
        el("div", { class: "cap" }, m.file_name + (m.width ? " · " + m.width + "×" + m.height : ""))))));
  markKeeper(row);
  return row;
}

function markKeeper(row) {
  const keeper = row.dataset["keep" + keep[0].toUpperCase() + keep.slice(1)];
  row.querySelectorAll("[data-idx]").forEach((tile) => {
    const kept = tile.dataset.idx === keeper;
    tile.classList.toggle("selected", kept);
    tile.dataset.kept = kept ? "1" : "0";
  });
}

function saveForm(run) {
  const name = el("input", { type: "text", name: "name", placeholder: "new tag name", required: true, maxlength: 200, "aria-label": "New tag name" });
  const mode = el("select", { name: "mode", "aria-label": "What the tag holds" },
    el("option", { value: "deduplicated" }, "every sample but the extra copies (for sampling)"),
    el("option", { value: "keepers" }, "one sample per group"),
    el("option", { value: "duplicates" }, "the extra copies"));
  const submit = el("button", { type: "submit", class: "primary", "data-testid": "dup-save" }, "Save as tag");
  const save = el("form", { class: "row", style: "margin-top:10px;align-items:center" }, name, mode, submit);
  save.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(submit, async () => {
      const tag = await api(base + "/runs/" + encodeURIComponent(run.id) + "/tag",
        { method: "POST", body: { name: name.value.trim(), mode: mode.value, keep } });
      toast("Saved tag " + tag.name + " (" + fmtNum(tag.count) + " samples)");
    });
  });
  return save;
}

async function init() {
  if (form) {
    // Listening before the embeddings arrive: a click while they load must not submit the form natively
    // (a page reload); the button stays disabled until there is an embedding to choose.
    const run = document.getElementById("d-run");
    run.disabled = true;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (!run.disabled) busy(run, start);
    });
    const embeddings = list(await api("/datasets/" + encodeURIComponent(datasetId) + "/embeddings"));
    clear(form.elements.embedding, embeddings.map((e) => el("option", { value: e.id }, e.name)));
    run.disabled = embeddings.length === 0;
  }
  await showFromUrl();
}

async function showFromUrl() {
  readKeep();
  const wanted = new URLSearchParams(location.search).get("run");
  if (wanted) { follow(wanted); return; }
  const runs = await api(base + "/runs", { params: { kind: "duplicates" } });
  if (runs.length) {
    follow(runs[0].id);
    syncUrl(false);  // the newest run, named in the URL so the link shows this review
  } else {
    if (stopPoll) stopPoll();
    currentRun = null;
    clear(result, emptyState("No duplicate search yet", canEdit ? "Choose an embedding and press Find duplicates." : "An editor can start one."));
  }
}

window.addEventListener("popstate", () => { showFromUrl().catch((err) => clear(result, errorBox(err))); });

init().catch((err) => clear(result, errorBox(err)));
