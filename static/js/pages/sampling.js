// Sampling: start a run, follow its progress, then choose K with the slider (count and preview of
// the top K follow it live) and create the tag. Earlier runs stay listed.
import { adaptivePoll, api, busy, canEdit, clear, datasetId, el, emptyState, errorBox, fmtDate, fmtCount, fmtNum, page, pageUrl, toast } from "../lib.js";
import { SampleGrid } from "../grid.js";

const base = "/datasets/" + encodeURIComponent(datasetId);
const form = document.getElementById("run-form");
const runsBox = document.getElementById("runs");
const detail = document.getElementById("run-detail");
const keepsPixels = page.dataset.mode !== "meta";

const NEEDS = {
  auto: ["auto", "embedding", "n_samples"],
  coreset: ["embedding", "n_samples"], diversity: ["embedding", "min_distance", "n_samples"],
  typicality: ["embedding", "n_samples"], random: ["n_samples"], similarity: ["embedding", "query_tag", "n_samples"],
  weights: ["field", "n_samples"], threshold: ["field", "operation", "n_samples"], balance: ["field", "target", "n_samples"],
  uncertainty: ["task", "score", "n_samples"], coral: ["embedding", "task", "score", "weight", "n_samples"],
  predicted_balance: ["task", "target", "n_samples"],
};
// One line per strategy on what it is good for (measured in benchmarks/BENCHMARKS.md); a new strategy adds a line.
export const STRATEGY_HELP = {
  auto: "Recommended for what to label first: greedy picks maximising distance to the picks so far (squared at first, plain past 100 picks) times typicality (1 / mean distance to the 20 nearest samples); beats Lightly's diversity + typicality at every budget we measured (see the README).",
  coreset: "Covers the embedding space: rare kinds of sample show up early (on long-tailed Fashion-MNIST, 9.7 of 10 classes in 100 picks; random 8). Good first pick for an unlabeled pool.",
  diversity: "Coreset that stops once every sample is within the minimum distance of a pick: removes near-duplicates. Choose the distance from the scale shown below.",
  typicality: "The most typical sample of each cluster: best classifier accuracy at small budgets (0.60 vs 0.42 for coreset at 50 picks on Fashion-MNIST), weaker on rare classes.",
  random: "A seeded random draw: an unbiased baseline and a fair test set.",
  similarity: "Samples closest to a query tag: find more of a rare case you already have examples of.",
  weights: "Ranks by a numeric metadata field (e.g. model uncertainty): higher value, more important.",
  threshold: "Keeps samples whose metadata value passes a threshold, in random order.",
  balance: "Evens out a categorical field toward target proportions (e.g. as many rainy as sunny scenes).",
  uncertainty: "A model's least sure predictions first (a prediction task's score): on Fashion-MNIST it reached random's 1,000-label accuracy with 600 labels.",
  coral: "Uncertainty and coreset diversity together (weight 1 = uncertainty only): unsure samples, spread over the data rather than clustered in one confusing corner.",
  predicted_balance: "Evens out the model's predicted classes toward target proportions: rare predicted classes get their share.",
};
// Scores a prediction task of each type offers (winnow/client/predictions.py), the default first.
const TASK_SCORES = {
  classification: ["uncertainty_least_confidence", "uncertainty_margin", "uncertainty_entropy"],
  "object-detection": ["objectness_least_confidence", "object_count", "mean_confidence", "min_confidence"],
};
let predictionTasks = [];
const STATUS = { queued: "amber", running: "blue", succeeded: "green", failed: "red", cancelled: "" };
const PREVIEW = 60;
let runs = [];
let current = null;   // run id shown in the detail panel
let stopPoll = null;
let embeddings = [];
let savedViews = [];

const list = (data) => (Array.isArray(data) ? data : (data && data.results) || []);
const badge = (status) => el("span", { class: "badge " + (STATUS[status] || ""), "data-testid": "run-status" }, status);

function showFields() {
  if (!form) return;
  const strategy = form.elements.strategy.value;
  const needs = NEEDS[strategy] || [];
  form.querySelectorAll("[data-for]").forEach((node) => node.classList.toggle("hidden", !needs.includes(node.dataset.for)));
  document.getElementById("r-strategy-help").textContent = STRATEGY_HELP[strategy] || "";
  if (needs.includes("min_distance")) showScale();
}

// The distance scale of the chosen embedding (percentiles from a sample of its rows), cached per embedding.
const scales = new Map();
async function showScale() {
  const box = document.getElementById("r-scale");
  const id = form.elements.embedding.value;
  if (!id) { clear(box); return; }
  if (!scales.has(id)) {
    box.textContent = "Measuring distances in this embedding…";
    try { scales.set(id, await api(base + "/embeddings/" + encodeURIComponent(id) + "/distance-scale")); } catch (err) {
      clear(box, errorBox(err));
      return;
    }
  }
  if (form.elements.embedding.value !== id) return;
  const s = scales.get(id);
  if (!s.nearest_neighbour) { box.textContent = "Too few samples to measure distances."; return; }
  const f = (v) => String(Number(v.toPrecision(3)));
  const nn = s.nearest_neighbour, pw = s.pairwise;
  clear(box,
    el("span", {}, "Scale (Euclidean, from " + fmtNum(s.sampled) + " samples): nearest neighbour p5 " + f(nn.p5) + ", median " + f(nn.p50) + ", p95 " + f(nn.p95) +
      "; between two samples median " + f(pw.p50) + ". "),
    el("span", {}, "A minimum distance below the nearest-neighbour median keeps near-duplicates; near the pairwise median it keeps only a few picks."));
}

function requestBody() {
  const f = form.elements;
  const chosen = f.strategy.value;
  const needs = NEEDS[chosen];
  const strategy = chosen === "predicted_balance" ? "balance" : chosen;
  const body = { name: f.name.value.trim(), strategy };
  pick_prediction_fields(body, needs, f);
  const pick = (key, value) => { if (needs.includes(key) && value !== "" && value !== null) body[key] = value; };
  pick("embedding", f.embedding.value);
  pick("n_samples", f.n_samples.value === "" ? "" : Number(f.n_samples.value));
  pick("min_distance", f.min_distance.value === "" ? "" : Number(f.min_distance.value));
  pick("query_tag", f.query_tag.value);
  pick("field", f.field.value);
  if (needs.includes("operation")) {
    body.operation = f.operation.value;
    if (f.value.value !== "") body.value = Number(f.value.value);
  }
  if (needs.includes("target") && f.target.value.trim()) {
    const text = f.target.value.trim();
    try { body.target = text === "uniform" ? "uniform" : JSON.parse(text); } catch (_) {
      throw new Error("Target proportions: write JSON such as {\"rainy\": 0.5, \"sunny\": 0.5}, or uniform");
    }
  }
  if (f.input_tag.value) body.input_tag = f.input_tag.value;
  if (f.preselected_tag.value) body.preselected_tag = f.preselected_tag.value;
  return body;
}

function pick_prediction_fields(body, needs, f) {
  if (needs.includes("task")) body.task = f.task.value;
  if (needs.includes("score") && f.score.value) body.score = f.score.value;
  if (needs.includes("weight") && f.weight.value !== "") body.weight = Number(f.weight.value);
}

function fillScores() {
  const f = form.elements;
  const task = predictionTasks.find((t) => t.name === f.task.value);
  const scores = task ? TASK_SCORES[task.type] || [] : [];
  clear(f.score, scores.map((s) => el("option", { value: s }, s.replace(/_/g, " "))));
}

async function loadPredictionTasks() {
  predictionTasks = list(await api(base + "/predictions")).filter((t) => !t.is_labels);
  const f = form.elements;
  clear(f.task, predictionTasks.length ? predictionTasks.map((t) => el("option", { value: t.name }, t.name + " (" + t.type + ", " + fmtNum(t.count) + ")"))
    : el("option", { value: "" }, "no prediction tasks yet"));
  fillScores();
  f.task.addEventListener("change", fillScores);
}

function renderRuns() {
  if (!runs.length) {
    clear(runsBox, emptyState("No runs yet", el("p", {}, canEdit ? "Start one with the form above." : "An editor of this dataset can start one.")));
    return;
  }
  clear(runsBox, el("table", {},
    el("thead", {}, el("tr", {}, ["Run", "Strategy", "Status", "Created"].map((h) => el("th", {}, h)))),
    el("tbody", {}, runs.map((r) => {
      const open = el("a", { href: runUrl(r.id), "data-testid": "run-link", "aria-current": r.id === current ? "true" : null }, r.name);
      open.addEventListener("click", (event) => {
        if (event.metaKey || event.ctrlKey || event.shiftKey) return;  // a new tab opens the link itself
        event.preventDefault();
        if (r.id !== current) history.pushState({ run: r.id }, "", runUrl(r.id));
        show(r.id);
      });
      return el("tr", { style: r.id === current ? "background:var(--accent-soft)" : null },
        el("td", {}, open), el("td", {}, r.strategy),
        el("td", {}, badge(r.status), r.status === "running" ? " " + r.progress + "%" : null),
        el("td", { class: "small" }, fmtDate(r.created_at)));
    }))));
}

async function loadRuns() {
  runs = list(await api(base + "/sampling-runs", { params: { page_size: 50 } }));
  renderRuns();
}

function progressView(run) {
  const cancel = canEdit ? el("button", { type: "button", class: "small danger" }, "Cancel run") : null;
  if (cancel) cancel.addEventListener("click", () => busy(cancel, async () => {
    await api(base + "/sampling-runs/" + run.id + "/cancel", { method: "POST" });
    toast("Cancelling…");
  }));
  return el("div", {},
    el("p", {}, run.status === "queued" ? "Waiting for a worker…" : "Scoring samples…"),
    el("div", { class: "progress", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": String(run.progress), "aria-label": "Run progress" },
      el("div", { style: "width:" + run.progress + "%" })),
    el("p", { class: "small muted" }, run.progress + "% done"), cancel);
}

function describe(run) {
  const parts = [run.strategy];
  if (run.n_samples) parts.push("n = " + fmtNum(run.n_samples));
  if (run.min_distance !== null && run.min_distance !== undefined) parts.push("min distance " + run.min_distance);
  const emb = embeddings.find((e) => e.id === run.embedding);
  if (emb) parts.push("embedding " + emb.name);
  return parts.join(" · ");
}

// The run's picks: n_samples, or for diversity where the scores drop below min_distance (seen in the first page).
function picksOf(run, top) {
  let picks = Math.min(run.score_count, run.n_samples || run.score_count);
  if (run.min_distance !== null && run.min_distance !== undefined) {
    const below = top.findIndex((r) => r.score < run.min_distance);
    if (below >= 0) picks = Math.min(picks, Math.max(1, below));
  }
  return picks;
}

// The request that made `run`, with another n_samples: the same strategy, parameters, tags and seed.
function rerunBody(run, n) {
  const strategies = (run.parameters && run.parameters.strategies) || [];
  const body = { name: run.name + " (K=" + n + ")", n_samples: n, seed: (run.parameters && run.parameters.seed) || 0 };
  if (strategies.length === 1) Object.assign(body, strategies[0]);
  else body.strategies = strategies;
  for (const key of ["embedding", "min_distance", "input_tag", "preselected_tag", "query_tag"]) {
    if (run[key] !== null && run[key] !== undefined) body[key] = run[key];
  }
  return body;
}

async function startRun(body) {
  const run = await api(base + "/sampling-runs", { method: "POST", body });
  toast("Run “" + run.name + "” started");
  runs.unshift(run);
  history.pushState({ run: run.id }, "", runUrl(run.id));
  show(run.id);
}

async function scoresView(run) {
  if (!run.score_count) return el("div", { class: "alert warn" }, "The run finished without scoring any sample (no candidates?).");
  const first = await api(base + "/sampling-runs/" + run.id + "/scores", { params: { limit: Math.min(1000, run.score_count) } });
  const top = first.results;
  // The slider ends at the picks: past them the ranks order the rest by distance to the picks (near-duplicates).
  const max = picksOf(run, top);
  const start = Math.min(max, 20);
  const slider = el("input", { type: "range", min: "1", max: String(max), value: String(start), id: "k-slider", "aria-label": "How many samples to keep" });
  const number = el("input", { type: "number", min: "1", max: String(max), value: String(start), "aria-label": "Samples to keep", style: "width:110px" });
  const count = el("strong", { "data-testid": "k-count" });
  const note = el("p", { class: "small muted" });
  const curve = el("div");
  const previewBox = el("div");
  const grid = new SampleGrid(previewBox, { showRank: true });
  const nameInput = el("input", { type: "text", "aria-label": "Tag name", required: true, maxlength: "200" });
  const create = el("button", { type: "submit", class: "primary" }, "Create tag");
  const tagForm = el("form", { class: "row", style: "align-items:center" }, nameInput, create);
  const errorArea = el("div");
  let k = start;
  let autoName = true;
  nameInput.addEventListener("input", () => { autoName = false; });

  const sample = (row) => ({ id: row.sample_id, idx: row.idx, file_name: row.file_name, rank: row.rank,
    thumbnail_url: keepsPixels ? "/api/v1" + base + "/samples/" + encodeURIComponent(row.sample_id) + "/thumbnail" : null });
  function update(value) {
    k = Math.max(1, Math.min(max, Math.round(Number(value) || 1)));
    slider.value = String(k);
    number.value = String(k);
    count.textContent = fmtNum(k) + " of the run's " + fmtNum(max) + (max === 1 ? " pick" : " picks");
    if (autoName) nameInput.value = run.name + "-top" + k;
    const shown = Math.min(k, PREVIEW, top.length);
    if (grid.samples.length > shown) { grid.reset(); }
    if (grid.samples.length < shown) grid.append(top.slice(grid.samples.length, shown).map(sample));
    note.textContent = k > shown ? "Showing the " + fmtNum(shown) + " most important of the " + fmtNum(k) + "." : "";
    drawCurve();
  }
  function drawCurve() {
    // Score by rank over the first page: where the curve flattens, more samples add little.
    const n = top.length, w = 600, h = 90;
    if (n < 2) return;
    // The first pick's score can dwarf the rest (its distance to nothing): scale by ranks 2.. and clip it.
    const finite = top.slice(n > 2 ? 1 : 0).map((r) => r.score).filter(Number.isFinite);
    const maxS = Math.max(...finite), minS = Math.min(...finite);
    const y = (s) => Math.max(2, h - 6 - ((Math.min(s, maxS) - minS) / ((maxS - minS) || 1)) * (h - 12));
    const d = top.map((r, i) => (i ? "L" : "M") + ((i / (n - 1)) * w).toFixed(1) + " " + y(r.score).toFixed(1)).join("");
    const kx = k <= n ? ((k - 1) / (n - 1)) * w : w;
    const px = max < n ? ((max - 1) / (n - 1)) * w : null;  // where the run's picks end
    const svgEl = (t, a, ...c) => el(t, { ...a, svg: true }, ...c);
    // The label sits above the plot (not inside it): the SVG stretches to the card's width, text would too.
    clear(curve,
      el("div", { class: "muted small" }, "score by rank" + (n < max ? " (first " + fmtNum(n) + ")" : "")),
      svgEl("svg", { viewBox: `0 0 ${w} ${h}`, preserveAspectRatio: "none", style: "width:100%;height:90px", role: "img", "aria-label": "Importance score by rank" },
        svgEl("path", { d, fill: "none", stroke: "#2f6fed", "stroke-width": "2", "vector-effect": "non-scaling-stroke" }),
        px === null ? null : svgEl("line", { x1: px, x2: px, y1: 0, y2: h, stroke: "#d92d20", "vector-effect": "non-scaling-stroke" }),
        svgEl("line", { x1: kx, x2: kx, y1: 0, y2: h, stroke: "#101828", "stroke-dasharray": "4 3", "vector-effect": "non-scaling-stroke" })));
  }
  slider.addEventListener("input", () => update(slider.value));
  number.addEventListener("change", () => update(number.value));
  tagForm.addEventListener("submit", (event) => {
    event.preventDefault();
    clear(errorArea);
    busy(create, async () => {
      try {
        const tag = await api(base + "/tags", { method: "POST", body: { name: nameInput.value.trim(), sampling_run: run.id, top_k: k } });
        toast("Tag “" + tag.name + "” created with " + fmtCount(tag.count, "sample"));
        errorArea.appendChild(el("div", { class: "alert ok", role: "status" }, "Tag “", tag.name, "” created. ",
          el("a", { href: pageUrl("explore") + "?tag=" + encodeURIComponent(tag.id) }, "Explore it →")));
        autoName = true;
      } catch (err) {
        errorArea.appendChild(errorBox(err));
      }
    });
  });
  const larger = Math.min(run.score_count, Math.max(max * 2, max + 1));
  let more = null;
  if (canEdit && larger > max) {
    const again = el("button", { type: "button", class: "secondary small", "data-testid": "larger-run" }, "New run with K = " + fmtNum(larger));
    again.addEventListener("click", () => busy(again, () => startRun(rerunBody(run, larger))));
    more = again;
  }
  const end = el("p", { class: "small muted", "data-testid": "slider-end" },
    "The slider ends at this run's " + fmtNum(max) + (max === 1 ? " pick" : " picks") + " (n = " + fmtNum(max) + "). " +
    (run.score_count > max ? "Past them the ranks are not picks: they order the other " + fmtNum(run.score_count - max) +
      " samples by distance to the picks, so near-duplicates come next. For more picks, start a larger run. " : ""), more);
  const node = el("div", {},
    el("div", { class: "row", style: "align-items:center;margin-bottom:6px" }, el("label", { for: "k-slider", style: "margin:0" }, "Keep the top"), number, count),
    slider, end, curve,
    canEdit ? el("div", { style: "margin:10px 0" }, tagForm, errorArea) : null,
    el("h3", { style: "margin-top:12px" }, "Preview"), note, previewBox);
  update(start);
  return node;
}

async function renderDetail(run) {
  const headline = el("div", { class: "row", style: "justify-content:space-between;align-items:center;margin-bottom:8px" },
    el("h2", { style: "margin:0" }, run.name), badge(run.status));
  const info = el("p", { class: "muted small" }, describe(run), " · started by ", run.creator || "–", " · ", fmtDate(run.created_at));
  let body;
  if (run.status === "queued" || run.status === "running") body = progressView(run);
  else if (run.status === "failed") body = el("div", { class: "alert error", role: "alert", "data-testid": "run-error" }, "The run failed: ", run.error || "no reason was recorded.");
  else if (run.status === "cancelled") body = el("div", { class: "alert warn" }, "The run was cancelled.");
  else {
    try { body = await scoresView(run); } catch (err) { body = errorBox(err); }
  }
  if (current === run.id) clear(detail, headline, info, body);
}

function show(runId) {
  current = runId;
  renderRuns();
  if (stopPoll) stopPoll();
  let lastStatus = null;
  let lastProgress = -1;
  stopPoll = adaptivePoll(async () => {
    if (current !== runId) return false;
    const run = await api(base + "/sampling-runs/" + runId);
    const changed = run.status !== lastStatus || run.progress !== lastProgress;
    lastStatus = run.status;
    lastProgress = run.progress;
    if (changed) {
      const i = runs.findIndex((r) => r.id === run.id);
      if (i >= 0) runs[i] = run; else runs.unshift(run);
      renderRuns();
      await renderDetail(run);
    }
    return run.status === "queued" || run.status === "running";
  }, 700, 4000);
}

if (form) {
  form.elements.strategy.addEventListener("change", showFields);
  form.elements.embedding.addEventListener("change", showFields);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const errorArea = clear(document.getElementById("run-error"));
    busy(form.querySelector("button[type=submit]"), async () => {
      try {
        const body = requestBody();
        if (body.input_tag && body.input_tag.startsWith("view:")) {
          // A saved view as the candidates: its samples as of now become a tag, named after the view and the run.
          const view = savedViews.find((v) => v.id === body.input_tag.slice(5));
          const tag = await api(base + "/views/" + encodeURIComponent(view.id) + "/tag", { method: "POST",
            body: { name: (view.name + " · for " + body.name).slice(0, 200) } });
          body.input_tag = tag.id;
          toast("Tag “" + tag.name + "” made from the view with " + fmtCount(tag.count, "sample"));
        }
        await startRun(body);
      } catch (err) {
        errorArea.appendChild(errorBox(err));
      }
    });
  });
}

async function init() {
  showFields();
  // A default run name at once, before anything loads: set later, it would land in the middle of a name
  // being typed.
  if (form && !form.elements.name.value) form.elements.name.value = "run " + new Date().toISOString().slice(0, 16).replace("T", " ");
  try {
    const [embs, tags, fields, views] = await Promise.all([api(base + "/embeddings"), api(base + "/tags"), api(base + "/configurator"),
      api(base + "/views").catch(() => [])]);
    savedViews = list(views);
    embeddings = list(embs);
    const tagList = list(tags);
    if (form) {
      const f = form.elements;
      clear(f.embedding, embeddings.length ? embeddings.map((e) => el("option", { value: e.id }, e.name + " (" + e.dimension + "-d)"))
        : el("option", { value: "" }, "no embeddings yet"));
      if (!embeddings.length) {
        f.embedding.closest(".field").appendChild(el("p", { class: "small muted" },
          "No embeddings yet: upload one with “winnow magic --dataset-id " + datasetId + " --input-dir ./images”, or pick Random or a metadata strategy."));
      }
      const tagOptions = (none) => [el("option", { value: "" }, none), ...tagList.map((t) => el("option", { value: t.id }, t.name + " (" + fmtNum(t.count) + ")"))];
      clear(f.input_tag, tagOptions("all samples"), savedViews.length ? el("optgroup", { label: "Saved views (their samples now become a tag)" },
        savedViews.map((v) => el("option", { value: "view:" + v.id }, "view: " + v.name))) : null);
      clear(f.preselected_tag, tagOptions("none"));
      clear(f.query_tag, tagOptions("choose a tag"));
      clear(f.field, list(fields).map((x) => el("option", { value: x.path }, (x.display_name || x.path) + " (" + x.type + ")")));
      await loadPredictionTasks();
    }
    await loadRuns();
  } catch (err) {
    clear(runsBox, errorBox(err));
  }
  showFields();
  const wanted = runFromUrl() || (runs.length ? runs[0].id : null);
  if (wanted) {
    if (!runFromUrl()) history.replaceState({ run: wanted }, "", runUrl(wanted));
    show(wanted);
  } else clear(detail, emptyState("No run selected", el("p", {}, "Start a run, or pick one from the list.")));
}

// The run on screen lives in the URL (?run=), so a reload or a shared link shows it; back/forward walk the runs.
function runUrl(id) {
  const qs = new URLSearchParams(location.search);
  qs.set("run", id);
  return location.pathname + "?" + qs.toString();
}
function runFromUrl() {
  const id = new URLSearchParams(location.search).get("run");
  if (id) return id;
  return location.hash.startsWith("#run-") ? location.hash.slice(5) : null;  // links of older versions
}
window.addEventListener("popstate", () => {
  const id = runFromUrl();
  if (id && id !== current) show(id);
});

init();
