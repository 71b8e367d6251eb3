// My Datasets: the caller's datasets as cards, and the create form.
import { api, clear, el, emptyState, errorBox, fmtDate, fmtCount, fmtNum, busy } from "../lib.js";

const list = document.getElementById("dataset-list");
const panel = document.getElementById("new-dataset");
const toggle = document.getElementById("new-dataset-toggle");
const form = document.getElementById("create-form");
const formError = document.getElementById("create-error");

const MODES = { full: "Full images", thumbnails: "Thumbnails", meta: "Metadata only" };

function showForm(show) {
  panel.classList.toggle("hidden", !show);
  toggle.setAttribute("aria-expanded", String(show));
  if (show) document.getElementById("ds-name").focus();
}
toggle.addEventListener("click", () => showForm(panel.classList.contains("hidden")));

form.addEventListener("submit", (event) => {
  event.preventDefault();
  clear(formError);
  const button = form.querySelector("button[type=submit]");
  busy(button, async () => {
    try {
      const ds = await api("/datasets", { method: "POST", body: {
        name: form.elements.name.value.trim(), upload_mode: form.elements.upload_mode.value } });
      window.location.href = "/datasets/" + encodeURIComponent(ds.id);
    } catch (err) {
      formError.appendChild(errorBox(err));
    }
  });
});

function sampleCount(ds) {
  for (const key of ["sample_count", "samples_count", "n_samples", "count"]) if (ds[key] !== undefined) return ds[key];
  return undefined;
}

async function thumbnails(ds, box) {
  // A few samples per card; meta datasets have no pixels, so they show file-name placeholders.
  try {
    const data = await api("/datasets/" + encodeURIComponent(ds.id) + "/samples", { params: { limit: 4 } });
    const samples = (data.results || data).slice(0, 4);
    clear(box, samples.map((s) => s.thumbnail_url
      ? el("img", { src: s.thumbnail_url, alt: "", loading: "lazy" })
      : el("div", { class: "ph" }, s.file_name)));
  } catch (_) {
    // Thumbnails are decoration: a card without them still works.
  }
}

function card(ds) {
  const thumbs = el("div", { class: "thumbs", "aria-hidden": "true" });
  const count = sampleCount(ds);
  const node = el("a", { class: "card", href: "/datasets/" + encodeURIComponent(ds.id), "data-testid": "dataset-card" },
    thumbs,
    el("div", { class: "body" },
      el("div", { class: "title" }, ds.name),
      el("div", { class: "meta" },
        el("span", { class: "badge blue" }, MODES[ds.upload_mode] || ds.upload_mode),
        count !== undefined ? el("span", {}, fmtCount(count, "sample")) : null,
        ds.role ? el("span", {}, ds.role) : null,
        el("span", {}, "created " + fmtDate(ds.created_at)))));
  if (count !== 0) thumbnails(ds, thumbs);
  return node;
}

async function load() {
  try {
    const data = await api("/datasets");
    const datasets = Array.isArray(data) ? data : data.results || [];
    if (!datasets.length) {
      clear(list, emptyState("No datasets yet",
        el("p", {}, "Create one with “New dataset”, or from a terminal:"),
        el("pre", { class: "cmd" }, "winnow magic --new-dataset-name \"my images\" --input-dir ./images")));
      return;
    }
    clear(list, el("div", { class: "cards" }, datasets.map(card)));
  } catch (err) {
    clear(list, errorBox(err));
  }
}

// Back from deleting a dataset on its Overview: say so once, then drop the note from the URL.
const deleted = new URLSearchParams(location.search).get("deleted");
if (deleted) {
  list.before(el("div", { class: "alert ok", role: "status", "data-testid": "deleted-note" }, "Dataset “" + deleted + "” deleted."));
  history.replaceState(null, "", location.pathname);
}

load();
