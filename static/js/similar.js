// "More like this": a button for the sample view that searches for the samples nearest to one sample and
// opens the Similar page on the result. Kept apart from grid.js so pages share it without growing the grid.
import { api, busy, datasetId, el, toast } from "./lib.js";

export function moreLikeThisButton(sampleId) {
  const button = el("button", { type: "button", class: "small", "data-testid": "more-like-this" }, "More like this");
  button.addEventListener("click", () => busy(button, async () => {
    try {
      const run = await api("/datasets/" + encodeURIComponent(datasetId) + "/similarity/search",
        { method: "POST", body: { sample: sampleId, k: 100 } });
      window.location.href = "/datasets/" + encodeURIComponent(datasetId) + "/similar?run=" + encodeURIComponent(run.id);
    } catch (err) {
      toast(err.message, "error");
    }
  }));
  return button;
}
