// Tags: the tree by parent, arithmetic into a new tag, export and delete.
import { api, apiRoot, busy, canEdit, clear, datasetId, el, emptyState, errorBox, fmtDate, fmtCount, fmtNum, pageUrl, toast } from "../lib.js";

const treeBox = document.getElementById("tag-tree");
const opForm = document.getElementById("op-form");
const operandsBox = document.getElementById("op-operands");
const exportTag = document.getElementById("export-tag");
const exportFormat = document.getElementById("export-format");
const exportLink = document.getElementById("export-link");
const base = "/datasets/" + encodeURIComponent(datasetId) + "/tags";

const ORIGINS = { upload: "upload", selection: "selection", filter: "filter", sampling: "sampling run", arithmetic: "arithmetic" };
let tags = [];
let ticked = []; // tag ids in the order they were ticked: difference depends on it

function describe(tag) {
  const d = tag.origin_detail || {};
  if (tag.origin === "arithmetic" && d.operation) return d.operation + " of " + (d.tag_names || []).join(", ");
  if (tag.origin === "sampling" && d.run_name) return "top " + fmtNum(d.top_k) + " of run " + d.run_name;
  return "";
}

function node(tag, childrenOf) {
  const box = el("input", { type: "checkbox", "aria-label": "Select " + tag.name, checked: ticked.includes(tag.id) });
  box.addEventListener("change", () => {
    ticked = box.checked ? [...ticked, tag.id] : ticked.filter((id) => id !== tag.id);
    renderOperands();
  });
  const del = canEdit && tag.name !== "initial-tag"
    ? el("button", { type: "button", class: "small danger", "aria-label": "Delete tag " + tag.name }, "Delete") : null;
  if (del) del.addEventListener("click", () => {
    if (!window.confirm("Delete tag “" + tag.name + "”? Its samples stay in the dataset.")) return;
    busy(del, async () => {
      await api(base + "/" + encodeURIComponent(tag.id), { method: "DELETE" });
      toast("Tag “" + tag.name + "” deleted");
      ticked = ticked.filter((id) => id !== tag.id);
      await load();
    });
  });
  const explore = el("a", { href: pageUrl("explore") + "?tag=" + encodeURIComponent(tag.id), class: "small" }, "explore");
  const children = childrenOf.get(tag.id) || [];
  return el("li", { "data-testid": "tag-node", "data-tag-id": tag.id },
    el("div", { class: "node" },
      canEdit ? box : null,
      el("span", { class: "name" }, tag.name),
      el("span", { class: "badge blue", "data-testid": "tag-count" }, fmtCount(tag.count, "sample")),
      el("span", { class: "badge" }, ORIGINS[tag.origin] || tag.origin),
      el("span", { class: "muted small" }, describe(tag)),
      el("span", { class: "muted small" }, fmtDate(tag.created_at) + (tag.creator ? " · " + tag.creator : "")),
      el("span", { class: "actions" }, explore, del)),
    children.length ? el("ul", {}, children.map((c) => node(c, childrenOf))) : null);
}

function renderTree() {
  if (!tags.length) {
    clear(treeBox, emptyState("No tags yet",
      el("p", {}, "Tags appear when samples are uploaded, and when you save a selection in Explore, a filter in Analyze & Filter or a sampling run's top K.")));
    return;
  }
  const ids = new Set(tags.map((t) => t.id));
  const childrenOf = new Map();
  const roots = [];
  for (const tag of tags) {
    if (tag.parent && ids.has(tag.parent)) {
      if (!childrenOf.has(tag.parent)) childrenOf.set(tag.parent, []);
      childrenOf.get(tag.parent).push(tag);
    } else roots.push(tag);
  }
  clear(treeBox, el("ul", { class: "tree" }, roots.map((t) => node(t, childrenOf))));
}

function renderOperands() {
  if (!operandsBox) return;
  const byId = new Map(tags.map((t) => [t.id, t]));
  ticked = ticked.filter((id) => byId.has(id));
  clear(operandsBox, ticked.length
    ? ticked.map((id, i) => el("span", { class: "badge blue" }, (i + 1) + ". " + byId.get(id).name))
    : el("span", { class: "muted small" }, "none ticked"));
}

function renderExport() {
  const current = exportTag.value;
  clear(exportTag, tags.map((t) => el("option", { value: t.id }, t.name + " (" + fmtNum(t.count) + ")")));
  if (current && tags.some((t) => t.id === current)) exportTag.value = current;
  updateExportLink();
}

function updateExportLink() {
  if (!exportTag.value) {
    exportLink.setAttribute("aria-disabled", "true");
    exportLink.removeAttribute("href");
    return;
  }
  exportLink.removeAttribute("aria-disabled");
  exportLink.href = apiRoot + base + "/" + encodeURIComponent(exportTag.value) + "/export?format=" + encodeURIComponent(exportFormat.value);
}
exportTag.addEventListener("change", updateExportLink);
exportFormat.addEventListener("change", updateExportLink);

if (opForm) {
  const errorArea = document.getElementById("op-error");
  opForm.addEventListener("submit", (event) => {
    event.preventDefault();
    clear(errorArea);
    if (ticked.length < 2) {
      errorArea.appendChild(errorBox("Tick at least two tags in the tree."));
      return;
    }
    busy(opForm.querySelector("button"), async () => {
      try {
        const tag = await api(base, { method: "POST", body: {
          name: opForm.elements.name.value.trim(), operation: opForm.elements.operation.value, tags: ticked } });
        toast("Tag “" + tag.name + "” created with " + fmtCount(tag.count, "sample"));
        opForm.reset();
        ticked = [];
        await load();
      } catch (err) {
        errorArea.appendChild(errorBox(err));
      }
    });
  });
}

async function load() {
  try {
    const data = await api(base);
    tags = Array.isArray(data) ? data : data.results || [];
    renderTree();
    renderOperands();
    renderExport();
  } catch (err) {
    clear(treeBox, errorBox(err));
  }
}

load();
