// Dataset overview: id, counts, how to add data, embeddings, metadata status, tags, members.
import { api, busy, clear, copyText, datasetId, el, emptyState, errorBox, fmtDate, fmtNum, page, pageUrl, toast } from "../lib.js";

const base = "/datasets/" + encodeURIComponent(datasetId);
const isOwner = page.dataset.role === "owner";
const setText = (id, value) => { document.getElementById(id).textContent = value; };

document.getElementById("copy-id").addEventListener("click", () => copyText(datasetId));
document.getElementById("copy-cmd").addEventListener("click", () => copyText(document.getElementById("magic-cmd").textContent));

const PROJECTION = { ready: ["ready", "green"], partial: ["PCA ready, refining", "green"], pending: ["computing", "amber"], failed: ["failed", "red"] };
const list = (data) => (Array.isArray(data) ? data : (data && data.results) || []);

async function section(id, load) {
  const box = document.getElementById(id);
  try {
    await load(box);
  } catch (err) {
    clear(box, errorBox(err));
  }
}

function embeddings(box) {
  return api(base + "/embeddings").then((data) => {
    const items = list(data);
    setText("stat-embeddings", fmtNum(items.length));
    if (!items.length) {
      clear(box, emptyState("No embeddings yet",
        el("p", {}, "Embeddings place similar images near each other: the embedding map and the samplers need one. “winnow magic” computes one with the built-in embedder, or upload your own CSV (Lightly's format):"),
        el("pre", { class: "cmd" }, "winnow magic --dataset-id " + datasetId + " --input-dir ./images\n# or, with your own embeddings (Lightly CSV format):\nwinnow magic --dataset-id " + datasetId + " --input-dir ./images --embeddings embeddings.csv")));
      return;
    }
    clear(box, el("table", {},
      el("thead", {}, el("tr", {}, ["Name", "Dimension", "Samples", "Map", "Created"].map((h) => el("th", {}, h)))),
      el("tbody", {}, items.map((e) => el("tr", {},
        el("td", {}, el("a", { href: pageUrl("map") + "?embedding=" + encodeURIComponent(e.id) }, e.name)),
        el("td", { class: "num" }, fmtNum(e.dimension)),
        el("td", { class: "num" }, fmtNum(e.count)),
        el("td", {}, el("span", { class: "badge " + (PROJECTION[e.projection_status] || ["", ""])[1] },
          (PROJECTION[e.projection_status] || [e.projection_status || "–"])[0])),
        el("td", {}, fmtDate(e.created_at)))))));
  });
}

async function metadata(box) {
  const [configured, proposed] = await Promise.all([api(base + "/configurator"), api(base + "/metadata/fields")]);
  const fields = list(configured);
  const paths = proposed.fields || [];
  setText("stat-fields", fmtNum(fields.length));
  if (!paths.length) {
    clear(box, emptyState("No custom metadata yet",
      el("p", {}, "Upload metadata in Lightly's COCO-like JSON format to filter and sample by it:"),
      el("pre", { class: "cmd" }, "winnow magic --dataset-id " + datasetId + " --input-dir ./images --custom-metadata metadata.json")));
    return;
  }
  clear(box,
    el("p", {}, fmtNum(paths.length) + " metadata paths found; " + fmtNum(fields.length) + " configured."),
    fields.length
      ? el("div", { class: "chips" }, fields.map((f) => el("span", { class: "badge" }, (f.display_name || f.path) + " · " + f.type)))
      : el("div", { class: "alert warn" }, "No field is configured yet: Explore and Analyze & Filter offer configured fields only."),
    el("p", {}, el("a", { href: pageUrl("configurator") }, "Open the Configurator →")));
}

async function tags(box) {
  const items = list(await api(base + "/tags"));
  setText("stat-tags", fmtNum(items.length));
  if (!items.length) {
    clear(box, emptyState("No tags yet", el("p", {}, "The first upload creates “initial-tag”.")));
    return;
  }
  clear(box, el("ul", { class: "tree" }, items.slice(0, 12).map((t) => el("li", {}, el("div", { class: "node" },
    el("a", { class: "name", href: pageUrl("explore") + "?tag=" + encodeURIComponent(t.id) }, t.name),
    el("span", { class: "badge blue" }, fmtNum(t.count)))))),
    items.length > 12 ? el("p", {}, el("a", { href: pageUrl("tags") }, "All " + items.length + " tags →")) : null);
}

async function members(box) {
  const items = list(await api(base + "/members"));
  clear(box, el("table", {},
    el("thead", {}, el("tr", {}, ["User", "Role", "Since", ""].map((h) => el("th", {}, h)))),
    el("tbody", {}, items.map((m) => {
      let remove = null;
      if (isOwner) {
        remove = el("button", { type: "button", class: "small danger", "aria-label": "Remove " + m.username }, "Remove");
        remove.addEventListener("click", () => {
          if (!window.confirm("Remove " + m.username + " from this dataset?")) return;
          busy(remove, async () => {
            await api(base + "/members/" + encodeURIComponent(m.username), { method: "DELETE" });
            toast(m.username + " removed");
            await section("members", members);
          });
        });
      }
      return el("tr", {}, el("td", {}, m.username), el("td", {}, el("span", { class: "badge" }, m.role)),
        el("td", {}, fmtDate(m.created_at)), el("td", { class: "num" }, remove));
    }))));
}

const form = document.getElementById("member-form");
if (form) {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const errorArea = clear(document.getElementById("member-error"));
    busy(form.querySelector("button"), async () => {
      try {
        const m = await api(base + "/members", { method: "POST", body: {
          username: form.elements.username.value.trim(), role: form.elements.role.value } });
        toast(m.username + " is now " + m.role);
        form.reset();
        await section("members", members);
      } catch (err) {
        errorArea.appendChild(errorBox(err));
      }
    });
  });
}

api(base).then((ds) => setText("stat-samples", fmtNum(ds.sample_count))).catch((err) => toast(err.message, "error"));
section("embeddings", embeddings);
section("metadata", metadata);
section("tags", tags);
section("members", members);

// Rename (editor or owner) and delete (owner, after typing the name): the same API the CLI uses.
const renameForm = document.getElementById("rename-form");
if (renameForm) {
  renameForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const errorArea = clear(document.getElementById("rename-error"));
    busy(renameForm.querySelector("button"), async () => {
      try {
        const ds = await api(base, { method: "PATCH", body: { name: renameForm.elements.name.value } });
        setText("dataset-name-heading", ds.name);
        document.querySelector('[data-testid="sidebar-dataset-name"]').textContent = ds.name;
        document.title = ds.name + " · Winnow";
        errorArea.appendChild(el("div", { class: "alert ok", role: "status" }, "Renamed to “" + ds.name + "”."));
      } catch (err) {
        errorArea.appendChild(errorBox(err));
      }
    });
  });
}
const deleteForm = document.getElementById("delete-form");
if (deleteForm) {
  deleteForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const errorArea = clear(document.getElementById("delete-error"));
    const name = document.getElementById("dataset-name-heading").textContent;
    if (deleteForm.elements.confirm.value !== name) {
      errorArea.appendChild(errorBox("Type the dataset's name, “" + name + "”, exactly, to delete it."));
      deleteForm.elements.confirm.focus();
      return;
    }
    busy(deleteForm.querySelector("button"), async () => {
      try {
        await api(base, { method: "DELETE" });
        location.assign("/?deleted=" + encodeURIComponent(name));
      } catch (err) {
        errorArea.appendChild(errorBox(err));
      }
    });
  });
}
