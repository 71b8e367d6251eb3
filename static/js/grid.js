// The thumbnail grid shared by Explore, the embedding map's selection and the sampling preview:
// tiles (image or, for metadata-only datasets, the file name), selection, infinite scrolling, sample view.
import { api, clear, datasetId, el, fmtNum, fmtValue } from "./lib.js";
import { moreLikeThisButton } from "./similar.js";
import { showPredictions } from "./predictions.js";

// Tiles are at least this wide (px), with this gap between them; rows are square tiles plus the gap.
const MIN_TILE = 132;
const GAP = 8;

// A windowed grid: every loaded sample lives in `samples` (and selection in `selected`), but only the
// rows near the viewport exist in the DOM, so scrolling through 100,000 samples keeps the page light.
export class SampleGrid {
  constructor(container, { selectable = false, onSelectionChange = () => {}, showRank = false, badge = null, overlay = null } = {}) {
    this.container = container;
    this.badge = badge;  // sample -> short text shown on its tile (e.g. the value sorted by), or null
    this.overlay = overlay;  // (sample, thumbnail img) -> nodes drawn over the thumbnail (e.g. detection boxes), or null
    this.selectable = selectable;
    this.onSelectionChange = onSelectionChange;
    this.showRank = showRank;
    this.samples = [];
    this.selected = new Set();   // sample ids: the selection never depends on which tiles exist
    this.allInFilter = false;
    this.excluded = new Set();   // with allInFilter: sample ids deselected since
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
    this.excluded.clear();
    this.allInFilter = false;
    this.refreshSelection();
  }

  selectAllInFilter() {
    this.allInFilter = true;
    this.excluded.clear();
    this.refreshSelection();
  }

  isSelected(sample) {
    return this.allInFilter ? !this.excluded.has(sample.id) : this.selected.has(sample.id);
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
    // One tab stop per tile: the ⤢ button is for the mouse; the keyboard opens with O (or Enter when not selecting).
    const view = this.selectable ? el("button", { type: "button", class: "view", tabindex: "-1", "aria-label": "View " + sample.file_name, title: "Open" }, "⤢") : null;
    const badgeText = this.badge ? this.badge(sample) : null;
    const over = this.overlay && sample.thumbnail_url ? this.overlay(sample, picture) : null;
    const node = el("div", { class: sample.thumbnail_url ? "tile" : "tile noimg", role: "listitem", "data-testid": "tile",
      "data-sample-id": sample.id, "data-idx": sample.idx, "aria-posinset": position + 1, "aria-setsize": -1 },
      picture, over,
      this.selectable ? el("span", { class: "check", "aria-hidden": "true" }) : null,
      this.showRank && sample.rank !== undefined ? el("span", { class: "rank" }, "#" + fmtNum(sample.rank)) : null,
      badgeText === null || badgeText === undefined ? null : el("span", { class: "vbadge", "data-testid": "tile-badge" }, badgeText),
      el("span", { class: "cap" }, sample.file_name),
      pick, view);
    if (this.selectable) {
      pick.addEventListener("click", (event) => this.toggle(sample, position, event.shiftKey));
      pick.addEventListener("dblclick", () => this.open(position));
      view.addEventListener("click", () => this.open(position));
    } else {
      pick.addEventListener("click", () => this.open(position));
    }
    pick.addEventListener("keydown", (event) => {
      if (event.key === "o" || event.key === "O") { this.open(position); return; }
      const step = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: this.cols, ArrowUp: -this.cols, Home: -position, End: this.samples.length - 1 - position }[event.key];
      if (step === undefined || event.altKey || event.ctrlKey || event.metaKey) return;
      event.preventDefault();
      this.focusTile(Math.max(0, Math.min(this.samples.length - 1, position + step)));
    });
    this.tiles.set(position, node);
    this.paint(node, this.isSelected(sample));
    return node;
  }

  // Move keyboard focus to the tile at `position`, scrolling it into view (and into the rendered window).
  focusTile(position) {
    const top = this.spacer.getBoundingClientRect().top + window.scrollY;
    const row = Math.floor(position / Math.max(1, this.cols));
    const y = top + row * this.rowHeight;
    if (y < window.scrollY + 60 || y + this.rowHeight > window.scrollY + window.innerHeight) {
      window.scrollTo(0, Math.max(0, y - window.innerHeight / 2));
    }
    this.render();
    const tile = this.tiles.get(position);
    if (tile) tile.querySelector(".pick").focus({ preventScroll: true });
  }

  // The sample view, with previous / next walking the grid's loaded samples.
  open(position) {
    const sample = this.samples[position];
    if (!sample) return;
    openSample(sample.id, {
      position, count: this.samples.length,
      go: (step) => { const to = position + step; if (to >= 0 && to < this.samples.length) { this.open(to); this.focusTile(to); } },
    });
  }

  toggle(sample, position, range) {
    if (this.allInFilter) {
      // Still "all in filter", less the samples deselected since: loaded or not, the rest stay selected.
      if (range && this.lastClicked >= 0) {
        const [a, b] = [Math.min(this.lastClicked, position), Math.max(this.lastClicked, position)];
        for (let i = a; i <= b; i++) this.excluded.delete(this.samples[i].id);
      } else if (this.excluded.has(sample.id)) this.excluded.delete(sample.id);
      else this.excluded.add(sample.id);
      this.lastClicked = position;
      this.refreshSelection();
      return;
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
  // The observer reports changes only: a page appended (sentinel pushed away) and a scroll back to the end within
  // one frame look like no change, and loading would stop. Scrolling near the end asks again.
  document.addEventListener("scroll", () => {
    if (!loading && !done && sentinel.getBoundingClientRect().top < window.innerHeight + 800) pump();
  }, { capture: true, passive: true });
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
let nav = null;          // { position, count, go(step) } of the sample on view, when opened from a grid
let fieldNames = null;   // a promise of path -> display name, from the Configurator

function displayNames() {
  if (!fieldNames) {
    fieldNames = api("/datasets/" + encodeURIComponent(datasetId) + "/configurator")
      .then((list) => new Map((Array.isArray(list) ? list : list.results || []).map((f) => [f.path, f.display_name || f.path])))
      .catch(() => new Map());
  }
  return fieldNames;
}

export async function openSample(sampleId, navigation = null) {
  if (!dialog) {
    dialog = el("dialog", { "aria-labelledby": "sample-title", "data-testid": "sample-view" });
    dialog.addEventListener("click", (event) => { if (event.target === dialog) dialog.close(); });
    // Left and right arrows walk through the grid's samples, as in a photo viewer.
    dialog.addEventListener("keydown", (event) => {
      if (!nav || event.altKey || event.ctrlKey || event.metaKey) return;
      if (event.target.matches && event.target.matches("input, textarea, select")) return;
      if (event.key === "ArrowRight") { event.preventDefault(); nav.go(1); }
      if (event.key === "ArrowLeft") { event.preventDefault(); nav.go(-1); }
    });
    document.body.appendChild(dialog);
  }
  nav = navigation;
  const title = el("h2", { id: "sample-title" }, "Loading…");
  const close = el("button", { type: "button", "aria-label": "Close" }, "Close");
  close.addEventListener("click", () => dialog.close());
  const prev = nav ? el("button", { type: "button", "aria-label": "Previous sample", "aria-keyshortcuts": "ArrowLeft", disabled: nav.position <= 0, onclick: () => nav.go(-1) }, "← Previous") : null;
  const next = nav ? el("button", { type: "button", "aria-label": "Next sample", "aria-keyshortcuts": "ArrowRight", disabled: nav.position >= nav.count - 1, onclick: () => nav.go(1) }, "Next →") : null;
  const where = nav ? el("span", { class: "muted small", "data-testid": "sample-position" }, fmtNum(nav.position + 1) + " of " + fmtNum(nav.count) + " loaded") : null;
  const body = el("div", { class: "dialog-body" }, el("p", { class: "muted" }, "Loading…"));
  clear(dialog, el("div", { class: "dialog-head" }, title, el("div", { class: "row", style: "align-items:center" }, where, prev, next, close)), body);
  if (!dialog.open) dialog.showModal();
  close.focus();
  const base = "/datasets/" + encodeURIComponent(datasetId) + "/samples/" + encodeURIComponent(sampleId);
  try {
    const [sample, tags, names] = await Promise.all([api(base), api(base + "/tags").catch(() => null), displayNames()]);
    title.textContent = sample.file_name;
    const src = sample.image_url || sample.thumbnail_url;
    // Configured fields first, under their display names; then the rest of the metadata by path.
    const meta = flatten(sample.metadata)
      .map(([k, v]) => [names.has(k) ? names.get(k) : k, v, names.has(k)])
      .sort((a, b) => (b[2] - a[2]));
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
        el("p", {}, moreLikeThisButton(sample.id)),
        el("h3", { style: "margin-top:14px" }, "Tags"),
        tags ? (tags.length ? el("div", { class: "chips" }, tags.map((t) => el("span", { class: "badge blue" }, t.name)))
          : el("p", { class: "muted" }, "In no tag.")) : el("p", { class: "muted" }, "–"),
        el("h3", { style: "margin-top:14px" }, "Metadata"),
        meta.length ? el("dl", { class: "kv", "data-testid": "sample-metadata" }, meta.map(([k, v]) => [el("dt", {}, k), el("dd", {}, fmtValue(v))]))
          : el("p", { class: "muted" }, "No metadata.")));
    showPredictions(body, base);
  } catch (err) {
    clear(body, el("div", { class: "alert error", role: "alert" }, err.message));
  }
}
