// Shared helpers for every page: the JSON API with session auth and CSRF, safe DOM building, toasts.
// Data from the server only ever reaches the page through textContent / attributes, never innerHTML.

export const page = document.getElementById("page");
export const apiRoot = (page && page.dataset.api) || "/api/v1";
export const datasetId = page ? page.dataset.datasetId : undefined;
export const canEdit = page ? page.dataset.canEdit === "1" : false;

export function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

export class ApiError extends Error {
  constructor(message, status, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

function messageFor(status, body) {
  if (body && typeof body === "object" && body.detail) return String(body.detail);
  if (status === 404) return "Not found: it may have been deleted, or you are not a member of this dataset.";
  if (status === 403) return "You are not allowed to do this in this dataset.";
  if (status === 401) return "Your session has ended. Please sign in again.";
  if (status >= 500) return "The server had a problem (" + status + "). Please try again.";
  return "Request failed (" + status + ").";
}

// Call the API. `path` is relative to /api/v1 unless it is an absolute URL (a cursor's `next`).
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export async function api(path, { method = "GET", body, raw = false, params } = {}) {
  let url = /^https?:/.test(path) ? path : apiRoot + path;
  if (params) {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) {
      if (v === undefined || v === null || v === "") continue;
      if (Array.isArray(v)) v.forEach((x) => qs.append(k, x));
      else qs.append(k, v);
    }
    const s = qs.toString();
    if (s) url += (url.includes("?") ? "&" : "?") + s;
  }
  const headers = { "X-CSRFToken": csrfToken(), Accept: raw ? "*/*" : "application/json" };
  let payload = body;
  if (body !== undefined && !(body instanceof FormData)) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  // A GET changes nothing, so a dropped connection or a busy gateway is tried again, twice, with a pause.
  const tries = method === "GET" ? 3 : 1;
  let response;
  for (let attempt = 1; ; attempt++) {
    try {
      response = await fetch(url, { method, headers, body: payload, credentials: "same-origin" });
    } catch (err) {
      if (attempt < tries) { await sleep(400 * attempt); continue; }
      throw new ApiError("Could not reach the server: " + err.message, 0, null);
    }
    if (attempt < tries && [502, 503, 504].includes(response.status)) { await sleep(400 * attempt); continue; }
    break;
  }
  if (!response.ok) {
    let data = null;
    try { data = await response.json(); } catch (_) { /* not JSON: keep the status message */ }
    throw new ApiError(messageFor(response.status, data), response.status, data);
  }
  if (raw) return response;
  if (response.status === 204) return null;
  const type = response.headers.get("Content-Type") || "";
  return type.includes("json") ? response.json() : response.text();
}

// Every page of a cursor-paginated list, up to `limit` items.
export async function fetchAll(path, { params, limit = 100000 } = {}) {
  const out = [];
  let data = await api(path, { params });
  if (Array.isArray(data)) return data;
  for (;;) {
    out.push(...(data.results || []));
    if (!data.next || out.length >= limit) return out;
    data = await api(data.next);
  }
}

// Build an element. Strings and numbers among children become text nodes: data is never parsed as HTML.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElementNS(
    attrs && attrs.svg ? "http://www.w3.org/2000/svg" : "http://www.w3.org/1999/xhtml", tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false || key === "svg") continue;
    if (key === "class") node.setAttribute("class", value);
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (key === "value") node.value = value;
    else if (key === "checked" || key === "disabled" || key === "selected") node[key] = !!value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

export function toast(message, kind = "ok") {
  const box = document.getElementById("toasts");
  const item = el("div", { class: "toast " + kind, role: kind === "error" ? "alert" : "status" }, message);
  box.appendChild(item);
  setTimeout(() => item.remove(), kind === "error" ? 8000 : 4000);
}

export function errorBox(err) {
  return el("div", { class: "alert error", role: "alert" }, err instanceof Error ? err.message : String(err));
}

export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (_) {
    // Clipboard API needs a secure context; fall back to a hidden textarea.
    const area = el("textarea", { style: "position:fixed;opacity:0" });
    area.value = text;
    document.body.appendChild(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  toast("Copied to the clipboard");
}

export function copyButton(getText, label = "Copy") {
  return el("button", { type: "button", class: "small", onclick: () => copyText(typeof getText === "function" ? getText() : getText) }, label);
}

export function fmtNum(n) {
  return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US");
}

export function fmtDate(iso) {
  if (!iso) return "never";
  const d = new Date(iso);
  return d.toLocaleString("en-GB", { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

export function getPath(obj, path) {
  let cur = obj;
  for (const part of path.split(".")) {
    if (cur === null || typeof cur !== "object" || !(part in cur)) return undefined;
    cur = cur[part];
  }
  return cur;
}

export function fmtValue(v) {
  if (v === undefined) return "–";
  if (v === null) return "null";
  if (typeof v === "object") return JSON.stringify(v);
  if (typeof v === "number" && !Number.isInteger(v)) return String(Math.round(v * 1000) / 1000);
  return String(v);
}

// Disable a button while an async action runs, and show the action's error as a toast.
export async function busy(button, action) {
  if (button) button.disabled = true;
  try {
    return await action();
  } catch (err) {
    toast(err.message || String(err), "error");
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

export function emptyState(title, ...rest) {
  return el("div", { class: "empty" }, el("strong", {}, title), ...rest);
}

export function pageUrl(sub = "") {
  return "/datasets/" + datasetId + (sub ? "/" + sub : "");
}

// Poll `fn` every `fast` ms while the tab is visible and every `slow` ms while hidden, until it returns false.
export function adaptivePoll(fn, fast = 1000, slow = 5000) {
  let timer = null;
  let stopped = false;
  const schedule = () => {
    if (stopped) return;
    timer = setTimeout(tick, document.visibilityState === "visible" ? fast : slow);
  };
  const tick = async () => {
    let more = true;
    try { more = await fn(); } catch (err) { toast(err.message, "error"); }
    if (more === false) stopped = true; else schedule();
  };
  const onVisible = () => {
    if (document.visibilityState === "visible" && !stopped) { clearTimeout(timer); tick(); }
  };
  document.addEventListener("visibilitychange", onVisible);
  tick();
  return () => { stopped = true; clearTimeout(timer); document.removeEventListener("visibilitychange", onVisible); };
}

// Follow the run at `url` into `node` until it ends: an error is said once (a link to a run that is gone is not
// polled again), a failed run says why (else `failedText`), a running one shows `working(pct)` over a progress bar
// (`barAttrs` added to it), a finished one is handed to `done(run)`. Returns the stop function.
export function followRun(url, node, { working, failedText, done, barAttrs = {} }) {
  return adaptivePoll(async () => {
    let run;
    try {
      run = await api(url);
    } catch (err) {
      clear(node, errorBox(err));
      return false;
    }
    if (run.status === "failed") { clear(node, errorBox(new Error(run.error || failedText))); return false; }
    if (run.status !== "succeeded") {
      const pct = Math.round(run.progress * 100);
      clear(node, el("p", {}, working(pct)),
        el("div", { class: "progress", role: "progressbar", "aria-valuenow": pct, ...barAttrs },
          el("div", { style: "width:" + pct + "%" })));
      return true;
    }
    done(run);
    return false;
  });
}

// "1 sample", "2 samples": a count with its noun in the right number.
export function fmtCount(n, one, many = one + "s") {
  return fmtNum(n) + " " + (Number(n) === 1 ? one : many);
}
