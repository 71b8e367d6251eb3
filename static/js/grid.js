// The thumbnail grid shared by Explore, the embedding map's selection and the sampling preview:
// tiles (image or, for metadata-only datasets, the file name), selection, infinite scrolling, sample view.
import { api, clear, datasetId, el, fmtNum, fmtValue } from "./lib.js";
import { showPredictions } from "./predictions.js";

// Tiles are at least this wide (px), with this gap between them; rows are square tiles plus the gap.
const MIN_TILE = 132;
const GAP = 8;

// A windowed grid: every loaded sample lives in `samples` (and selection in `selected`), but only the
// rows near the viewport exist in the DOM, so scrolling through 100,000 samples keeps the page light.
export class SampleGrid {
  constructor(container, { selectable = false, onSelectionChange = () => {}, showRank = false } = {}) {
    this.container = container;
    this.selectable = selectable;
    this.onSelectionChange = onSelectionChange;
    this.showRank = showRank;
    this.samples = [];
    this.selected = new Set();   // sample ids: the selection never depends on which tiles exist
    this.allInFilter = false;
    this.lastClicked = -1;
    this.tiles = new Map();      // position -> tile node, for the rendered window only
    this.first = 0;              // the rendered window is positions [first, last)
    this.last = 0;
    this.cols = 0;
    this.tileSize = 0;
    this.rowHeight = MIN_TILE + GAP;
    this.pending = false;
    this.spacer = el("div", { class: "vgrid" });
    this.grid = el("div", { class: "grid", role: "list" });
    this.spacer.appendChild(this.grid);
    container.appendChild(this.spacer);
    const schedule = () => this.schedule();
    // Capture: scrolling of any ancestor (the window or a scrolling panel) moves the window.
    document.addEventListener("scroll", schedule, { capture: true, passive: true });
    window.addEventListener("resize", schedule);
    if (window.ResizeObserver) new ResizeObserver(schedule).observe(this.spacer);
  }

  reset() {
    this.samples = [];
    this.tiles.clear();
    this.first = this.last = 0;
    this.lastClicked = -1;
    clear(this.grid);
    this.render();
  }

  clearSelection() {
    this.selected.clear();
    this.allInFilter = false;
    this.refreshSelection();
  }

  selectAllInFilter() {
    this.allInFilter = true;
    this.refreshSelection();
  }

  isSelected(sample) {
    return this.allInFilter || this.selected.has(sample.id);
  }

  refreshSelection() {
    for (const [position, tile] of this.tiles) this.paint(tile, this.isSelected(this.samples[position]));
    this.onSelectionChange();
  }

  paint(tile, on) {
    tile.classList.toggle("selected", on);
    const pick = tile.querySelector(".pick");
    if (pick && this.selectable) pick.setAttribute("aria-pressed", String(on));
  }

  append(samples) {
    this.samples.push(...samples);
    this.render();  // at once, so the page height (and the scroll sentinel below it) follows
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => { this.pending = false; this.render(); });
  }

  // Lay out the columns for the current width, size the spacer for every loaded row, and keep in the
  // DOM only the rows within one screen height above and below the viewport.
  render() {
    const width = this.spacer.clientWidth;
    const cols = Math.max(1, Math.floor((width + GAP) / (MIN_TILE + GAP)));
    const tileSize = Math.max(0, (width - GAP * (cols - 1)) / cols);
    const relayout = cols !== this.cols || tileSize !== this.tileSize;
    if (relayout) {
      this.cols = cols;
      this.tileSize = tileSize;
      this.rowHeight = tileSize + GAP;
      this.grid.style.gridTemplateColumns = `repeat(${cols}, minmax(0, 1fr))`;
      this.grid.style.gridAutoRows = tileSize + "px";
    }
    const n = this.samples.length;
    const rows = Math.ceil(n / cols);
    this.spacer.style.height = (rows ? rows * this.rowHeight - GAP : 0) + "px";
    const top = this.spacer.getBoundingClientRect().top;
    const view = window.innerHeight || 800;
    const fromRow = Math.max(0, Math.floor((-top - view) / this.rowHeight));
    const toRow = Math.max(fromRow, Math.min(rows, Math.ceil((2 * view - top) / this.rowHeight)));
    const first = Math.min(n, fromRow * cols);
    const last = Math.min(n, toRow * cols);
    this.grid.style.top = fromRow * this.rowHeight + "px";
    if (!relayout && first === this.first && last === this.last) return;
    for (const [position, node] of this.tiles) {
      if (position < first || position >= last) { node.remove(); this.tiles.delete(position); }
    }
    // Tiles still in the window stay where they are (a focused tile keeps its focus); new ones go around them.
    const keptFrom = Math.max(first, this.first);
    const keptTo = Math.min(last, this.last);
    const make = (a, b) => {
      const nodes = [];
      for (let i = a; i < b; i++) nodes.push(this.tile(this.samples[i], i));
      return nodes;
    };
    if (keptFrom < keptTo && this.tiles.size) {
      this.grid.prepend(...make(first, keptFrom));
      this.grid.append(...make(keptTo, last));
    } else {
      this.tiles.clear();
      this.grid.replaceChildren(...make(first, last));
    }
    this.first = first;
    this.last = last;
  }

  tile(sample, position) {
    const picture = sample.thumbnail_url
      ? el("img", { src: sample.thumbnail_url, alt: "", loading: "lazy", decoding: "async" })
      : el("div", { class: "ph" }, sample.file_name);
    const pick = el("button", {
      type: "button", class: "pick", "aria-label": (this.selectable ? "Select " : "View ") + sample.file_name,
      title: sample.file_name,
    });
    const view = this.selectable ? el("button", { type: "button", class: "view", "aria-label": "View " + sample.file_name, title: "Open" }, "⤢") : null;
    const node = el("div", { class: sample.thumbnail_url ? "tile" : "tile noimg", role: "listitem", "data-testid": "tile",
      "data-sample-id": sample.id, "data-idx": sample.idx, "aria-posinset": position + 1, "aria-setsize": -1 },
      picture,
      this.selectable ? el("span", { class: "check", "aria-hidden": "true" }) : null,
      this.showRank && sample.rank !== undefined ? el("span", { class: "rank" }, "#" + fmtNum(sample.rank)) : null,
      el("span", { class: "cap" }, sample.file_name),
      pick, view);
    if (this.selectable) {
      pick.addEventListener("click", (event) => this.toggle(sample, position, event.shiftKey));
      pick.addEventListener("dblclick", () => openSample(sample.id));
      view.addEventListener("click", () => openSample(sample.id));
      pick.addEventListener("keydown", (event) => {
        if (event.key === "o" || event.key === "O") openSample(sample.id);
      });
    } else {
      pick.addEventListener("click", () => openSample(sample.id));
    }
    this.tiles.set(position, node);
    this.paint(node, this.isSelected(sample));
    return node;
  }

  toggle(sample, position, range) {
    if (this.allInFilter) {
      // Leaving "all in filter": keep what is loaded selected, then toggle as usual.
      this.allInFilter = false;
      this.samples.forEach((s) => this.selected.add(s.id));
    }
    if (range && this.lastClicked >= 0) {
      const [a, b] = [Math.min(this.lastClicked, position), Math.max(this.lastClicked, position)];
      for (let i = a; i <= b; i++) this.selected.add(this.samples[i].id);
    } else if (this.selected.has(sample.id)) {
      this.selected.delete(sample.id);
    } else {
      this.selected.add(sample.id);
    }
    this.lastClicked = position;
    this.refreshSelection();
  }
}

// Load pages while a sentinel below the grid is in view. `loadMore` returns false when nothing is left.
export function infiniteScroll(container, loadMore) {
  const sentinel = el("div", { class: "sentinel", "data-testid": "sentinel" });
  container.appendChild(sentinel);
  let loading = false;
  let done = true;      // nothing loads until the first restart()
  let again = false;    // a restart() arrived while a page was loading
  const observer = new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting) && !loading && !done) pump();
  }, { rootMargin: "800px 0px" });
  async function pump() {
    loading = true;
    sentinel.textContent = "Loading…";
    try {
      const more = await loadMore();
      done = more === false;
    } catch (_) {
      done = true;
    } finally {
      loading = false;
      sentinel.textContent = "";
    }
    if (again) { again = false; done = false; }
    // Still in view (a short page on a tall screen)? Keep going.
    if (!done && sentinel.getBoundingClientRect().top < window.innerHeight + 800) pump();
  }
  observer.observe(sentinel);
  return {
    restart() { done = false; if (loading) again = true; else pump(); },
    stop() { done = true; observer.disconnect(); },
  };
}

// --- the sample view ---------------------------------------------------------------------------------

function flatten(obj, prefix = "", out = []) {
  for (const [key, value] of Object.entries(obj || {})) {
    const path = prefix ? prefix + "." + key : key;
    if (value && typeof value === "object" && !Array.isArray(value)) flatten(value, path, out);
    else out.push([path, value]);
  }
  return out;
}

let dialog = null;

export async function openSample(sampleId) {
  if (!dialog) {
    dialog = el("dialog", { "aria-labelledby": "sample-title", "data-testid": "sample-view" });
    dialog.addEventListener("click", (event) => { if (event.target === dialog) dialog.close(); });
    document.body.appendChild(dialog);
  }
  const title = el("h2", { id: "sample-title" }, "Loading…");
  const close = el("button", { type: "button", "aria-label": "Close" }, "Close");
  close.addEventListener("click", () => dialog.close());
  const body = el("div", { class: "dialog-body" }, el("p", { class: "muted" }, "Loading…"));
  clear(dialog, el("div", { class: "dialog-head" }, title, close), body);
  if (!dialog.open) dialog.showModal();
  close.focus();
  const base = "/datasets/" + encodeURIComponent(datasetId) + "/samples/" + encodeURIComponent(sampleId);
  try {
    const [sample, tags] = await Promise.all([api(base), api(base + "/tags").catch(() => null)]);
    title.textContent = sample.file_name;
    const src = sample.image_url || sample.thumbnail_url;
    const meta = flatten(sample.metadata);
    clear(body,
      el("div", { class: "imgbox" }, src ? el("img", { src, alt: sample.file_name })
        : el("p", { class: "muted", style: "padding:20px;text-align:center" }, "No pixels are kept for this sample (metadata-only dataset).")),
      el("div", {},
        el("h3", {}, "Sample"),
        el("dl", { class: "kv" },
          el("dt", {}, "File name"), el("dd", { "data-testid": "sample-file-name" }, sample.file_name),
          el("dt", {}, "ID"), el("dd", { class: "mono" }, sample.id),
          el("dt", {}, "idx"), el("dd", {}, String(sample.idx)),
          el("dt", {}, "Size"), el("dd", {}, sample.width && sample.height ? sample.width + " × " + sample.height : "–"),
          sample.size_bytes ? [el("dt", {}, "Bytes"), el("dd", {}, fmtNum(sample.size_bytes))] : null),
        el("h3", { style: "margin-top:14px" }, "Tags"),
        tags ? (tags.length ? el("div", { class: "chips" }, tags.map((t) => el("span", { class: "badge blue" }, t.name)))
          : el("p", { class: "muted" }, "In no tag.")) : el("p", { class: "muted" }, "–"),
        el("h3", { style: "margin-top:14px" }, "Metadata"),
        meta.length ? el("dl", { class: "kv" }, meta.map(([k, v]) => [el("dt", {}, k), el("dd", {}, fmtValue(v))]))
          : el("p", { class: "muted" }, "No metadata.")));
    showPredictions(body, base);
  } catch (err) {
    clear(body, el("div", { class: "alert error", role: "alert" }, err.message));
  }
}
