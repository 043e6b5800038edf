// The study viewer: raw HU slices windowed in the browser, window/level drag and presets, HU under
// the cursor, wheel/arrow/page scrolling, zoom and pan, lesion and heatmap overlays, zone table.
"use strict";
import { $, api, el, fmt, pct } from "./dom.js";

const VIEWPORT_PX = 512;
const WL_HU_PER_PX = 4;          // window/level drag: HU per screen pixel (x: width, y: level)
const MIN_WIDTH_HU = 1;
const PAGE_STEP_FRACTION = 0.1;  // PageUp/PageDown move a tenth of the series (at least one slice)
const ZOOM_STEP = 1.25;
const ZOOM_MIN = 0.25;
const ZOOM_MAX = 16;
const GREY_WINDOW = { center: 127.5, width: 255 };  // 8-bit inputs: show the stored grey values

const v = {
  job: null, r: null, slice: 0, rows: 0, cols: 0, cache: new Map(), presets: {},
  center: -600, width: 1500, zoom: 1, panX: 0, panY: 0, drag: null, urls: {}, onSlice: null,
};

export function currentSlice() { return v.slice; }

/** Fill the preset buttons from the server's window table (/windows). */
export async function loadPresets() {
  v.presets = await (await api("/windows")).json();
  const box = $("presets");
  box.replaceChildren();
  for (const [name, w] of Object.entries(v.presets)) {
    const b = el("button", name, { type: "button", id: "preset-" + name, title: `W ${w.width} L ${w.center}` });
    b.addEventListener("click", () => setWindow(w.center, w.width));
    box.appendChild(b);
  }
}

function setWindow(center, width) {
  v.center = Math.round(center);
  v.width = Math.max(MIN_WIDTH_HU, Math.round(width));
  $("wl-label").textContent = `W ${v.width} L ${v.center}`;
  draw();
}

/** Open a study (the job as GET /studies/{id} returns it) at slice ``k`` (0-based, or its key slice). */
export function openStudy(job, k = null) {
  const changed = !v.job || v.job.id !== job.id;
  v.job = job;
  v.r = job.result;
  $("viewer").hidden = false;
  $("v-id").textContent = job.id;
  $("v-report").href = "/studies/" + encodeURIComponent(job.id) + "/report.html";
  $("v-report").hidden = job.status !== "done";
  const ohif = v.r && v.r.ohif_url;
  $("v-ohif").hidden = !(ohif && /^(https?:\/\/|\/[^/])/.test(ohif));
  if (!$("v-ohif").hidden) $("v-ohif").href = ohif;
  if (changed) { v.cache.clear(); v.zoom = 1; v.panX = 0; v.panY = 0; applyTransform(); }
  showSummary(job);
  if (!v.r) { clearImage(); return; }
  const d = v.r.display || {};
  $("marker-left").textContent = (d.orientation || {}).left || "";
  $("marker-right").textContent = (d.orientation || {}).right || "";
  $("slice-numbering").textContent = "slice numbers: " +
    (d.slice_numbering === "InstanceNumber" ? "InstanceNumber" : "1-based position from the top");
  $("slice").max = v.r.num_slices - 1;
  $("overlay-toggle").disabled = !v.r.has_heatmap;
  if (!v.r.has_heatmap) $("overlay-toggle").checked = false;
  else if (changed) $("overlay-toggle").checked = true;
  $("lesion-toggle").disabled = !v.r.has_lesions;
  if (changed) {
    const w = v.r.is_hu ? (v.presets.lung || { center: -600, width: 1500 }) : GREY_WINDOW;
    for (const b of $("presets").querySelectorAll("button")) b.disabled = !v.r.is_hu;
    setWindow(w.center, w.width);
  }
  const start = k !== null ? k : (v.r.key_slices && v.r.key_slices.length ? v.r.key_slices[0] : Math.floor(v.r.num_slices / 2));
  showSlice(start);
}

function clearImage() {
  const c = $("ct");
  c.getContext("2d").clearRect(0, 0, c.width, c.height);
  $("lesion-img").hidden = true;
  $("overlay-img").hidden = true;
  $("slice-label").textContent = "-";
}

function showSummary(job) {
  const r = job.result;
  const d = (r && r.display) || {};
  $("v-patient").textContent = [d.patient_name, d.patient_id ? "ID " + d.patient_id : "anonymous",
    d.study_date, d.series_description].filter(Boolean).join(" \u00b7 ");
  const box = $("v-summary");
  box.replaceChildren();
  if (!r) {
    box.appendChild(el("span", "status: " + job.status, { id: "v-status", class: "status-" + job.status }));
    if (job.error) box.appendChild(el("p", job.error, { id: "v-error", class: "error" }));
    for (const id of ["v-validity", "v-quant", "v-probs", "v-warnings"]) $(id).replaceChildren();
    return;
  }
  box.appendChild(el("b", r.predicted_class || "not classified (no model)", { id: "v-class" }));
  box.append(" \u00b7 COVID-19 probability ", el("span", fmt(r.covid_probability), { id: "v-covid" }));
  if (r.fused) {
    box.append(" \u00b7 fused score (model + quantitative CT, validation-fitted weights) ",
      el("span", fmt(r.fused.probability), { id: "v-fused" }));
  }
  box.append(" \u00b7 abnormal lung fraction ",
    el("span", r.abnormal_fraction === null ? "n/a" : pct(r.abnormal_fraction), { id: "v-abnormal" }),
    " \u00b7 " + (r.model_name || ""));
  $("v-validity").textContent = (r.validity || []).map((x) => x.statement).join(" ");
  showQuant(r.quantitative);
  const probs = $("v-probs");
  probs.replaceChildren();
  for (const [name, p] of Object.entries(r.probabilities || {})) {
    const tr = el("tr");
    tr.append(el("th", name), el("td", fmt(p)));
    probs.appendChild(tr);
  }
  const warn = $("v-warnings");
  warn.replaceChildren();
  for (const w of r.warnings || []) warn.appendChild(el("li", w));
}

function showQuant(q) {
  const box = $("v-quant");
  box.replaceChildren();
  if (!q) return;
  if (!q.available) { box.appendChild(el("p", "Quantitative CT: " + q.reason, { class: "quant" })); return; }
  box.appendChild(el("h3", "Quantitative CT (HU, no trained weights)"));
  box.appendChild(el("p", q.summary, { id: "v-quant-summary" }));
  box.appendChild(el("p", `Lungs right ${q.lung_ml.right.toFixed(0)} ml, left ${q.lung_ml.left.toFixed(0)} ml; ` +
    `ground glass ${q.ggo_ml.toFixed(1)} ml, consolidation ${q.consolidation_ml.toFixed(1)} ml; involvement ` +
    `right ${pct(q.involvement.right)}, left ${pct(q.involvement.left)}, total ${pct(q.involvement.total)}`));
  const table = el("table", "", { class: "zones", id: "v-zones" });
  const head = el("tr");
  head.append(el("th", "zone"), el("th", "involvement"), el("th", "score 0-5"));
  table.appendChild(head);
  for (const [name, z] of Object.entries(q.zones)) {
    const tr = el("tr");
    tr.append(el("td", name), el("td", pct(z.involvement)), el("td", z.score));
    table.appendChild(tr);
  }
  const total = el("tr");
  total.append(el("th", "CT severity score"), el("td"), el("th", `${q.severity_total} / ${q.severity_max}`, { id: "v-severity" }));
  table.appendChild(total);
  box.appendChild(table);
  const pattern = el("p", "Pattern: ");
  pattern.append(el("b", q.pattern.category, { id: "v-pattern" }), ` (${q.pattern.rule}) \u2014 ${q.pattern.label}`);
  box.appendChild(pattern);
}

/** Slice number as a PACS shows it (InstanceNumber where known, else 1-based). */
function sliceNumber(k) {
  const numbers = v.r && v.r.display && v.r.display.slice_numbers;
  return numbers && numbers.length === v.r.num_slices ? numbers[k] : k + 1;
}

export function showSlice(k) {
  if (!v.r) return;
  k = Math.max(0, Math.min(v.r.num_slices - 1, Math.round(k)));
  v.slice = k;
  $("slice").value = k;
  const label = `Im ${sliceNumber(k)} (${k + 1} of ${v.r.num_slices})`;
  $("slice-label").textContent = label;
  $("vp-slice").textContent = label;
  loadSlice(k);
  loadLayers(k);
  drawStrip();
  if (v.onSlice) v.onSlice(v.job.id, k);
}

export function onSliceChange(fn) { v.onSlice = fn; }

async function loadSlice(k) {
  const id = v.job.id;
  let entry = v.cache.get(k);
  if (!entry) {
    const resp = await api(`/studies/${encodeURIComponent(id)}/hu/${k}`);
    const rows = Number(resp.headers.get("X-Rows")), cols = Number(resp.headers.get("X-Columns"));
    entry = { rows, cols, values: new Int16Array(await resp.arrayBuffer()) };
    v.cache.set(k, entry);
  }
  if (!v.job || v.job.id !== id || v.slice !== k) return;  // the user moved on meanwhile
  v.rows = entry.rows; v.cols = entry.cols;
  draw();
}

/** Window the current slice's HU into the canvas (grey = clip((hu - low) / width) * 255). */
function draw() {
  const entry = v.cache.get(v.slice);
  if (!entry || !v.r) return;
  const c = $("ct");
  if (c.width !== entry.cols || c.height !== entry.rows) { c.width = entry.cols; c.height = entry.rows; fitWrap(); }
  const ctx = c.getContext("2d");
  const img = ctx.createImageData(entry.cols, entry.rows);
  const low = v.center - v.width / 2, scale = 255 / v.width, px = img.data, vals = entry.values;
  for (let i = 0; i < vals.length; i++) {
    const g = Math.min(255, Math.max(0, Math.round((vals[i] - low) * scale)));
    px[4 * i] = px[4 * i + 1] = px[4 * i + 2] = g;
    px[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  $("ct").dataset.slice = String(v.slice);
}

/** Size the image box to the slice's physical aspect (pixel spacing), fitted into the viewport. */
function fitWrap() {
  const [, sy, sx] = v.r.spacing_mm || [1, 1, 1];
  const w = v.cols * sx, h = v.rows * sy, s = VIEWPORT_PX / Math.max(w, h);
  const wrap = $("canvas-wrap");
  wrap.style.width = Math.round(w * s) + "px";
  wrap.style.height = Math.round(h * s) + "px";
  wrap.style.left = Math.round((VIEWPORT_PX - w * s) / 2) + "px";
  wrap.style.top = Math.round((VIEWPORT_PX - h * s) / 2) + "px";
}

async function layerInto(img, path, key) {
  try {
    const blob = await (await api(path)).blob();
    if (v.urls[key]) URL.revokeObjectURL(v.urls[key]);
    v.urls[key] = URL.createObjectURL(blob);
    img.src = v.urls[key];
    img.hidden = false;
  } catch (e) { img.hidden = true; img.removeAttribute("src"); }
}

function loadLayers(k) {
  const base = "/studies/" + encodeURIComponent(v.job.id);
  if ($("lesion-toggle").checked && v.r.has_lesions) layerInto($("lesion-img"), `${base}/lesions/${k}.png`, "lesions");
  else $("lesion-img").hidden = true;
  if ($("overlay-toggle").checked && v.r.has_heatmap) layerInto($("overlay-img"), `${base}/overlay/${k}.png`, "heat");
  else $("overlay-img").hidden = true;
}

function applyOpacity() { $("lesion-img").style.opacity = String($("opacity").value / 100); }

function applyTransform() {
  $("canvas-wrap").style.transform = `translate(${v.panX}px, ${v.panY}px) scale(${v.zoom})`;
  $("zoom-label").textContent = Math.round(v.zoom * 100) + " %";
}

function zoomBy(factor) {
  v.zoom = Math.min(ZOOM_MAX, Math.max(ZOOM_MIN, v.zoom * factor));
  applyTransform();
}

/** The voxel under a mouse event: {x, y} in image columns/rows, or null outside the image. */
function voxelAt(e) {
  const rect = $("ct").getBoundingClientRect();
  if (!v.cols || !rect.width) return null;
  const x = Math.floor((e.clientX - rect.left) / rect.width * v.cols);
  const y = Math.floor((e.clientY - rect.top) / rect.height * v.rows);
  return x >= 0 && y >= 0 && x < v.cols && y < v.rows ? { x, y } : null;
}

function showValue(e) {
  const entry = v.cache.get(v.slice), p = voxelAt(e);
  if (!entry || !p) { $("hu-readout").textContent = ""; return; }
  const value = entry.values[p.y * entry.cols + p.x];
  $("hu-readout").textContent = `${v.r.is_hu ? "HU" : "grey"} ${value} (x ${p.x}, y ${p.y})`;
  $("hu-readout").dataset.value = String(value);
}

function onKey(e) {
  if (!v.r || $("viewer").hidden) return;
  const tag = (e.target && e.target.tagName) || "";
  if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA") return;
  const page = Math.max(1, Math.round(v.r.num_slices * PAGE_STEP_FRACTION));
  const moves = { ArrowUp: -1, ArrowDown: 1, PageUp: -page, PageDown: page };
  if (e.key in moves) { e.preventDefault(); showSlice(v.slice + moves[e.key]); }
  else if (e.key === "Home") { e.preventDefault(); showSlice(0); }
  else if (e.key === "End") { e.preventDefault(); showSlice(v.r.num_slices - 1); }
  else if (e.key === "+" || e.key === "=") zoomBy(ZOOM_STEP);
  else if (e.key === "-") zoomBy(1 / ZOOM_STEP);
  else if (e.key === "0") { v.zoom = 1; v.panX = 0; v.panY = 0; applyTransform(); }
}

function startDrag(e) {
  if (e.button !== 0 || !v.r) return;
  e.preventDefault();
  const pan = e.shiftKey || $("tool").value === "pan";
  v.drag = { pan, x: e.clientX, y: e.clientY, center: v.center, width: v.width, panX: v.panX, panY: v.panY };
}

function moveDrag(e) {
  if (!v.drag) return;
  const dx = e.clientX - v.drag.x, dy = e.clientY - v.drag.y;
  if (v.drag.pan) { v.panX = v.drag.panX + dx; v.panY = v.drag.panY + dy; applyTransform(); }
  else setWindow(v.drag.center + dy * WL_HU_PER_PX, v.drag.width + dx * WL_HU_PER_PX);
}

function drawStrip() {
  const r = v.r, c = $("strip"), ctx = c.getContext("2d");
  ctx.clearRect(0, 0, c.width, c.height);
  const q = r && r.quantitative;
  let scores = r && r.slice_scores;
  if (r && !scores && q && q.available) {  // no model: per-slice involvement, scaled to the most involved slice
    const top = Math.max(...q.slice_involvement, 1e-6);
    scores = q.slice_involvement.map((x) => x / top);
  }
  if (!scores) { ctx.fillText("no per-slice scores for this model", 6, 28); return; }
  const w = c.width / scores.length;
  scores.forEach((s, i) => {
    ctx.fillStyle = i === v.slice ? "#1a237e" : "#e57373";
    ctx.fillRect(i * w, c.height * (1 - s), Math.max(1, w - 0.5), c.height * s);
  });
}

export function wireViewer() {
  const vp = $("viewport");
  vp.addEventListener("wheel", (e) => {
    e.preventDefault();
    if (e.ctrlKey) zoomBy(e.deltaY < 0 ? ZOOM_STEP : 1 / ZOOM_STEP);
    else showSlice(v.slice + (e.deltaY > 0 ? 1 : -1));
  }, { passive: false });
  vp.addEventListener("mousedown", startDrag);
  vp.addEventListener("mousemove", showValue);
  vp.addEventListener("mouseleave", () => { $("hu-readout").textContent = ""; });
  window.addEventListener("mousemove", moveDrag);
  window.addEventListener("mouseup", () => { v.drag = null; });
  document.addEventListener("keydown", onKey);
  $("slice").addEventListener("input", (e) => showSlice(Number(e.target.value)));
  $("zoom-in").addEventListener("click", () => zoomBy(ZOOM_STEP));
  $("zoom-out").addEventListener("click", () => zoomBy(1 / ZOOM_STEP));
  $("zoom-reset").addEventListener("click", () => { v.zoom = 1; v.panX = 0; v.panY = 0; applyTransform(); });
  $("overlay-toggle").addEventListener("change", () => loadLayers(v.slice));
  $("lesion-toggle").addEventListener("change", () => loadLayers(v.slice));
  $("opacity").addEventListener("input", applyOpacity);
  applyOpacity();
  $("strip").addEventListener("click", (e) => {
    if (!v.r) return;
    const rect = e.target.getBoundingClientRect();
    showSlice(Math.floor((e.clientX - rect.left) / rect.width * v.r.num_slices));
  });
}
