// Preferences: the caller's API tokens. A new token's secret is shown once; the list shows prefixes only.
import { api, busy, clear, copyText, el, emptyState, errorBox, fmtDate, toast } from "../lib.js";

const form = document.getElementById("token-form");
const formError = document.getElementById("token-error");
const list = document.getElementById("token-list");
const newBox = document.getElementById("new-token");
const newKey = document.getElementById("new-token-key");

let newTokenId = null;  // the token whose secret is on screen

document.getElementById("copy-token").addEventListener("click", () => copyText(newKey.textContent));

form.addEventListener("submit", (event) => {
  event.preventDefault();
  clear(formError);
  busy(form.querySelector("button"), async () => {
    try {
      const token = await api("/tokens", { method: "POST", body: { name: form.elements.name.value.trim() } });
      newKey.textContent = token.key;
      newTokenId = token.id;
      newBox.classList.remove("hidden");
      form.reset();
      await load();
    } catch (err) {
      formError.appendChild(errorBox(err));
    }
  });
});

function row(token) {
  // Two tokens may share a name: the prefix and creation time tell them apart, in the label too.
  const which = token.name + " (" + token.prefix + "…, created " + fmtDate(token.created_at) + ")";
  const revoke = el("button", { type: "button", class: "small danger", "aria-label": "Revoke token " + which },
    "Revoke");
  revoke.addEventListener("click", () => {
    if (!window.confirm("Revoke “" + which + "”? Programs using it stop working at once.")) return;
    busy(revoke, async () => {
      await api("/tokens/" + token.id + "/revoke", { method: "POST" });
      if (token.id === newTokenId) {
        // The secret just shown no longer works: take it off the screen.
        newBox.classList.add("hidden");
        newKey.textContent = "";
        newTokenId = null;
      }
      toast("Token “" + which + "” revoked");
      await load();
    });
  });
  return el("tr", { "data-testid": "token-row" },
    el("td", {}, token.name),
    el("td", {}, el("code", {}, token.prefix + "…")),
    el("td", {}, fmtDate(token.created_at)),
    el("td", {}, fmtDate(token.last_used_at)),
    el("td", {}, token.active ? el("span", { class: "badge green" }, "active")
      : el("span", { class: "badge red" }, "revoked " + fmtDate(token.revoked_at))),
    el("td", { class: "num" }, token.active ? revoke : null));
}

async function load() {
  try {
    const data = await api("/tokens");
    const tokens = Array.isArray(data) ? data : data.results || [];
    if (!tokens.length) {
      clear(list, emptyState("No tokens yet", el("p", {}, "Create one above to use the CLI or the Python client.")));
      return;
    }
    clear(list, el("table", {},
      el("thead", {}, el("tr", {}, ["Name", "Prefix", "Created", "Last used", "Status", ""].map((h) => el("th", {}, h)))),
      el("tbody", {}, tokens.map(row))));
  } catch (err) {
    clear(list, errorBox(err));
  }
}

load();
