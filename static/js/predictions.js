// Predictions on screen: detection boxes drawn over an image where `bbox` says (image pixels, scaled and cropped
// as the shown image is), coloured by class, toggled per task; used by the sample view and by Explore's tiles.
import { api, el } from "./lib.js";

const COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324", "#469990", "#808000"];
const SVG = "http://www.w3.org/2000/svg";
// How the image fills its box (CSS object-fit) is how the boxes' viewBox must fill the layer over it.
const ASPECT = { cover: "xMidYMid slice", contain: "xMidYMid meet", "scale-down": "xMidYMid meet", fill: "none" };

export function colour(task, categoryId) {
  const i = task.categories.findIndex((c) => c.id === categoryId);
  return COLOURS[(i < 0 ? 0 : i) % COLOURS.length];
}

export function categoryName(task, categoryId) {
  const cat = task.categories.find((c) => c.id === categoryId);
  return cat ? cat.name : String(categoryId);
}

// An SVG layer over `img` with one rectangle per prediction of `task` ({name, categories}); `width` x `height`
// is the image's size in pixels (the boxes' units), whatever size the picture is shown at (a thumbnail too).
export function boxLayer(task, predictions, img, width, height) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 " + width + " " + height);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("data-testid", "prediction-layer");
  svg.setAttribute("data-task", task.name);
  svg.style.cssText = "position:absolute;pointer-events:none;overflow:visible";
  const place = () => {
    const fit = getComputedStyle(img).objectFit;
    svg.setAttribute("preserveAspectRatio", ASPECT[fit] || "none");
    svg.style.overflow = fit === "cover" ? "hidden" : "visible";  // a cropped picture crops its boxes too
    svg.style.left = img.offsetLeft + "px";
    svg.style.top = img.offsetTop + "px";
    svg.style.width = img.offsetWidth + "px";
    svg.style.height = img.offsetHeight + "px";
  };
  if (img.complete && img.isConnected) place(); else img.addEventListener("load", place);
  // The image moves and resizes while its view lays out (the sample view's details, a grid's columns, the
  // picture loading): follow it, not only the window.
  if (window.ResizeObserver) {
    const observer = new ResizeObserver(place);
    observer.observe(img);
    if (img.parentElement) observer.observe(img.parentElement);
  } else {
    window.addEventListener("resize", place);
  }
  for (const p of predictions) {
    const [x, y, w, h] = p.bbox;
    const rect = document.createElementNS(SVG, "rect");
    Object.entries({ x, y, width: w, height: h, fill: "none", stroke: colour(task, p.category_id),
      "stroke-width": 2, "vector-effect": "non-scaling-stroke", "data-testid": "prediction-box",
      "data-category": categoryName(task, p.category_id) }).forEach(([k, v]) => rect.setAttribute(k, v));
    const label = document.createElementNS(SVG, "title");
    label.textContent = categoryName(task, p.category_id) + " " + p.score.toFixed(2);
    rect.appendChild(label);
    svg.appendChild(rect);
  }
  return svg;
}

// Adds a "Predictions" section to the sample view's details (and boxes over its image, if it has one).
export async function showPredictions(body, sampleUrl) {
  let data;
  try { data = await api(sampleUrl + "/predictions"); } catch (_) { return; }
  if (!data.tasks.length) return;
  const imgBox = body.querySelector(".imgbox");
  const img = imgBox && imgBox.querySelector("img");
  if (imgBox) imgBox.style.position = "relative";
  const list = el("div", { "data-testid": "sample-predictions" });
  for (const task of data.tasks) {
    const kind = task.is_labels ? "labels" : "predictions";
    const toggle = el("input", { type: "checkbox", checked: true });
    const items = task.predictions.map((p) => el("span", { class: "badge", style: "border-left:4px solid " + colour(task, p.category_id) },
      categoryName(task, p.category_id) + (task.is_labels ? "" : " " + p.score.toFixed(2))));
    list.appendChild(el("div", { style: "margin:4px 0" },
      el("label", {}, toggle, " " + task.name + " (" + kind + ")"), " ",
      items.length ? el("span", { class: "chips" }, items) : el("span", { class: "muted" }, "nothing detected")));
    if (task.type === "object-detection" && img && data.width && data.height) {
      const layer = boxLayer(task, task.predictions, img, data.width, data.height);
      imgBox.appendChild(layer);
      toggle.addEventListener("change", () => { layer.style.display = toggle.checked ? "" : "none"; });
    }
  }
  const details = body.lastElementChild || body;
  details.appendChild(el("h3", { style: "margin-top:14px" }, "Predictions"));
  details.appendChild(list);
}
