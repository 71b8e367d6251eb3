// Similar: start a "more like this" search (from a tag or an image file; a sample's button in Explore lands
// here with ?run=), follow it while a worker runs it, then page through the ranked results and save a tag.
import { api, busy, canEdit, clear, datasetId, el, emptyState, errorBox, fmtNum, followRun, toast } from "../lib.js";

const base = "/datasets/" + encodeURIComponent(datasetId) + "/similarity";
const form = document.getElementById("search-form");
const result = document.getElementById("result");
const drop = document.getElementById("drop");
const PAGE = 100;
let stopPoll = null;

const list = (data) => (Array.isArray(data) ? data : (data && data.results) || []);

async function loadChoices() {
  const [embeddings, tags] = await Promise.all([
    api("/datasets/" + encodeURIComponent(datasetId) + "/embeddings"),
    api("/datasets/" + encodeURIComponent(datasetId) + "/tags"),
  ]);
  clear(form.elements.embedding, list(embeddings).map((e) => el("option", { value: e.id }, e.name)));
  const tagSelect = form.elements.tag;
  list(tags).forEach((t) => tagSelect.appendChild(el("option", { value: t.id }, t.name + " (" + fmtNum(t.count) + ")")));
}

async function search(image) {
  const f = form.elements;
  let body;
  if (image) {
    body = new FormData();
    body.append("image", image);
    body.append("embedding", f.embedding.value);
    body.append("k", f.k.value || "100");
  } else {
    if (!f.tag.value) { toast("Choose a tag or an image file", "error"); return; }
    body = { embedding: f.embedding.value, tag: f.tag.value, mode: f.mode.value, k: Number(f.k.value || 100) };
  }
  const run = await api(base + "/search", { method: "POST", body });
  // A new entry: back returns to the search shown before, forward to this one.
  history.pushState(null, "", location.pathname + "?run=" + encodeURIComponent(run.id));
  show(run.id);
}

function show(runId) {
  if (stopPoll) stopPoll();
  clear(result, el("p", { class: "muted" }, "Searching…"));
  stopPoll = followRun(base + "/runs/" + encodeURIComponent(runId), result, {
    working: () => "Searching on a worker…",
    failedText: "the search failed",
    done: renderRun,
  });
}

function describe(run) {
  const q = run.params.query || {};
  if (q.kind === "sample") return "like one sample";
  if (q.kind === "tag") return "like a tag (" + (q.mode === "each" ? "nearest member" : "centroid") + ")";
  if (q.kind === "samples") {
    return "like " + fmtNum(q.idx.length) + " selected samples (" + (q.mode === "each" ? "nearest member" : "centroid") + ")";
  }
  if (q.kind === "image") return "like the image " + (q.name || "");
  return "like a vector";
}

function renderRun(run) {
  const grid = el("div", { class: "grid", "data-testid": "similar-results" });
  const more = el("button", { type: "button", class: "small hidden" }, "Load more");
  let offset = 0;
  const loadPage = () => busy(more, async () => {
    const page = await api(base + "/runs/" + encodeURIComponent(run.id) + "/results", { params: { offset, limit: PAGE } });
    page.results.forEach((r) => grid.appendChild(tile(r)));
    offset = page.next_offset;
    more.classList.toggle("hidden", offset === null);
  });
  more.addEventListener("click", loadPage);
  const head = el("p", {}, el("strong", {}, fmtNum(run.summary.count) + " samples " + describe(run)),
    el("span", { class: "muted" }, " · searched " + fmtNum(run.summary.searched) + " · " + run.params.metric + " distance"));
  clear(result, head, canEdit ? saveForm(run) : null, run.summary.count ? grid : emptyState("No results"), more);
  loadPage();
  if (run.params.query.kind === "sample") showQuery(head, run.params.query.sample);
}

// The sample the search started from, beside the heading.
async function showQuery(head, sampleId) {
  const sample = await api("/datasets/" + encodeURIComponent(datasetId) + "/samples/" + encodeURIComponent(sampleId)).catch(() => null);
  if (!sample) return;
  head.prepend(el("span", { class: "row", style: "align-items:center;margin-bottom:8px", "data-testid": "similar-query" },
    sample.thumbnail_url ? el("img", { src: sample.thumbnail_url, alt: sample.file_name, style: "width:64px;height:64px;object-fit:cover;border-radius:6px" }) : null,
    el("span", {}, "Query: " + sample.file_name)));
}

function tile(r) {
  const label = "#" + r.rank + " · " + (Math.round(r.distance * 1000) / 1000);
  return el("div", { class: "tile" + (r.thumbnail_url ? "" : " noimg"), title: r.file_name, "data-testid": "similar-tile" },
    r.thumbnail_url ? el("img", { src: r.thumbnail_url, alt: r.file_name, loading: "lazy" }) : el("div", { class: "ph" }, r.file_name),
    el("span", { class: "rank" }, label),
    el("div", { class: "cap" }, r.file_name));
}

function saveForm(run) {
  const name = el("input", { type: "text", name: "name", placeholder: "new tag name", required: true, maxlength: 200 });
  const topK = el("input", { type: "number", name: "top_k", min: 1, max: run.summary.count, value: Math.min(run.summary.count, 20), style: "width:90px", "aria-label": "How many of the first results" });
  const submit = el("button", { type: "submit", class: "primary" }, "Save the first as tag");
  const save = el("form", { class: "row", style: "margin-bottom:12px;align-items:center" }, name, topK, submit);
  save.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(submit, async () => {
      const tag = await api(base + "/runs/" + encodeURIComponent(run.id) + "/tag",
        { method: "POST", body: { name: name.value.trim(), top_k: Number(topK.value) } });
      toast("Saved tag " + tag.name + " (" + fmtNum(tag.count) + " samples)");
    });
  });
  return save;
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const file = form.elements.image.files[0];
  busy(document.getElementById("s-run"), () => search(file));
});
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  const file = event.dataTransfer.files[0];
  if (file) busy(null, () => search(file));
});

loadChoices().catch((err) => toast(err.message, "error"));
function showFromUrl() {
  const wanted = new URLSearchParams(window.location.search).get("run");
  if (wanted) show(wanted);
  else {
    if (stopPoll) stopPoll();
    clear(result);
  }
}
window.addEventListener("popstate", showFromUrl);
showFromUrl();
