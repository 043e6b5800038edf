// covidct web page: token, upload, worklist, study viewer. No build step.
"use strict";
const REFRESH_MS = 2000;
const TOKEN_KEY = "covidct-token";
const state = { token: localStorage.getItem(TOKEN_KEY) || "", study: null, slice: 0, urls: {} };
const $ = (id) => document.getElementById(id);

function authHeaders() { return { Authorization: "Bearer " + state.token }; }

async function api(path, options = {}) {
  const resp = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  if (!resp.ok) {
    let msg = resp.status + " " + resp.statusText;
    try { msg = (await resp.json()).detail || msg; } catch (e) { /* not JSON */ }
    throw new Error(msg);
  }
  return resp;
}

async function imageInto(img, path, key) {
  try {
    const blob = await (await api(path)).blob();
    if (state.urls[key]) URL.revokeObjectURL(state.urls[key]);
    state.urls[key] = URL.createObjectURL(blob);
    img.src = state.urls[key];
    img.hidden = false;
  } catch (e) { img.hidden = true; img.removeAttribute("src"); }
}

function fmt(p) { return p === null || p === undefined ? "-" : Number(p).toFixed(3); }

async function refreshWorklist() {
  if (!state.token) return;
  const status = $("filter-status").value;
  try {
    const data = await (await api("/worklist" + (status ? "?status=" + status : ""))).json();
    $("auth-status").textContent = "token accepted";
    const body = $("worklist").querySelector("tbody");
    body.innerHTML = "";
    for (const j of data.items) {
      const tr = document.createElement("tr");
      tr.dataset.id = j.id;
      tr.className = state.study && state.study.id === j.id ? "selected" : "";
      tr.innerHTML = `<td class="prob">${fmt(j.covid_probability)}</td><td>${j.predicted_class || "-"}</td>` +
        `<td class="status-${j.status}">${j.status}</td><td>${(j.updated_at || "").replace("T", " ").slice(0, 19)}</td>` +
        `<td title="${j.series_uid || ""}">${(j.series_uid || j.id).slice(-16)}</td>`;
      if (j.error) tr.title = j.error;
      tr.addEventListener("click", () => openStudy(j.id));
      body.appendChild(tr);
    }
  } catch (e) { $("auth-status").textContent = e.message; }
}

async function upload() {
  const files = $("files").files;
  if (!files.length) { $("upload-status").textContent = "choose a file first"; return; }
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name);
  $("upload-status").textContent = "uploading...";
  try {
    const data = await (await api("/studies", { method: "POST", body: form })).json();
    $("upload-status").textContent = "accepted as " + data.id;
    refreshWorklist();
  } catch (e) { $("upload-status").textContent = "refused: " + e.message; }
}

async function openStudy(id) {
  const job = await (await api("/studies/" + id)).json();
  state.study = job;
  $("viewer").hidden = false;
  $("v-id").textContent = id;
  const r = job.result;
  if (!r) { $("v-summary").textContent = "status: " + job.status + (job.error ? " - " + job.error : ""); return; }
  $("v-summary").innerHTML = `<b>${r.predicted_class || "not classified (no model)"}</b> &middot; COVID-19 probability <span id="v-covid">${fmt(r.covid_probability)}</span>` +
    (r.fused ? ` &middot; fused score (model + quantitative CT, validation-fitted weights) <span id="v-fused">${fmt(r.fused.probability)}</span>` : "") +
    ` &middot; abnormal lung fraction <span id="v-abnormal">${r.abnormal_fraction === null ? "n/a" : (100 * r.abnormal_fraction).toFixed(1) + " %"}</span>` +
    ` &middot; ${r.model_name}`;
  $("v-validity").textContent = (r.validity || []).map((v) => v.statement).join(" ");
  $("v-quant").innerHTML = quantHtml(r.quantitative);
  $("v-probs").innerHTML = Object.entries(r.probabilities).map(([k, v]) => `<tr><th>${k}</th><td>${fmt(v)}</td></tr>`).join("");
  $("v-warnings").innerHTML = (r.warnings || []).map((w) => `<li>${w}</li>`).join("");
  $("slice").max = r.num_slices - 1;
  $("overlay-toggle").disabled = !r.has_heatmap;
  $("lesion-toggle").disabled = !r.has_lesions;
  showSlice(r.key_slices && r.key_slices.length ? r.key_slices[0] : Math.floor(r.num_slices / 2));
  drawStrip();
  refreshWorklist();
}

function showSlice(k) {
  const r = state.study && state.study.result;
  if (!r) return;
  k = Math.max(0, Math.min(r.num_slices - 1, k));
  state.slice = k;
  $("slice").value = k;
  $("slice-label").textContent = k + " / " + (r.num_slices - 1);
  const base = "/studies/" + state.study.id;
  imageInto($("slice-img"), `${base}/slices/${k}.png?window=${$("window").value}`, "slice");
  if ($("overlay-toggle").checked && r.has_heatmap) imageInto($("overlay-img"), `${base}/overlay/${k}.png`, "overlay");
  else $("overlay-img").hidden = true;
  if ($("lesion-toggle").checked && r.has_lesions) imageInto($("lesion-img"), `${base}/lesions/${k}.png`, "lesions");
  else $("lesion-img").hidden = true;
  drawStrip();
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function quantHtml(q) {
  if (!q) return "";
  if (!q.available) return `<p class="quant">Quantitative CT: ${escapeHtml(q.reason)}</p>`;
  const pct = (v) => (100 * v).toFixed(1) + " %";
  const zones = Object.entries(q.zones).map(([name, z]) =>
    `<tr><td>${escapeHtml(name)}</td><td>${pct(z.involvement)}</td><td>${z.score}</td></tr>`).join("");
  return `<h3>Quantitative CT (HU, no trained weights)</h3>` +
    `<p id="v-quant-summary">${escapeHtml(q.summary)}</p>` +
    `<p>Lungs right ${q.lung_ml.right.toFixed(0)} ml, left ${q.lung_ml.left.toFixed(0)} ml; ground glass ` +
    `${q.ggo_ml.toFixed(1)} ml, consolidation ${q.consolidation_ml.toFixed(1)} ml; involvement right ` +
    `${pct(q.involvement.right)}, left ${pct(q.involvement.left)}, total ${pct(q.involvement.total)}</p>` +
    `<table class="zones"><tr><th>zone</th><th>involvement</th><th>score 0-5</th></tr>${zones}` +
    `<tr><th>CT severity score</th><td></td><th id="v-severity">${q.severity_total} / ${q.severity_max}</th></tr></table>` +
    `<p>Pattern: <b id="v-pattern">${escapeHtml(q.pattern.category)}</b> (${escapeHtml(q.pattern.rule)}) &mdash; ${escapeHtml(q.pattern.label)}</p>`;
}

function drawStrip() {
  const r = state.study && state.study.result;
  const c = $("strip"), ctx = c.getContext("2d");
  ctx.clearRect(0, 0, c.width, c.height);
  const q = r && r.quantitative;
  let scores = r && r.slice_scores;
  if (r && !scores && q && q.available) {  // no model: per-slice involvement, scaled to the most involved slice
    const top = Math.max(...q.slice_involvement, 1e-6);
    scores = q.slice_involvement.map((v) => v / top);
  }
  if (!scores) { ctx.fillText("no per-slice scores for this model", 6, 28); return; }
  const w = c.width / scores.length;
  scores.forEach((s, i) => {
    ctx.fillStyle = i === state.slice ? "#1a237e" : "#e57373";
    ctx.fillRect(i * w, c.height * (1 - s), Math.max(1, w - 0.5), c.height * s);
  });
}

function wire() {
  $("token").value = state.token;
  $("save-token").addEventListener("click", () => {
    state.token = $("token").value.trim(); localStorage.setItem(TOKEN_KEY, state.token); refreshWorklist();
  });
  $("upload-btn").addEventListener("click", upload);
  $("filter-status").addEventListener("change", refreshWorklist);
  $("slice").addEventListener("input", (e) => showSlice(Number(e.target.value)));
  $("window").addEventListener("change", () => showSlice(state.slice));
  $("overlay-toggle").addEventListener("change", () => showSlice(state.slice));
  $("lesion-toggle").addEventListener("change", () => showSlice(state.slice));
  $("opacity").addEventListener("input", (e) => { $("overlay-img").style.opacity = e.target.value / 100; });
  $("overlay-img").style.opacity = $("opacity").value / 100;
  $("stack").addEventListener("wheel", (e) => { e.preventDefault(); showSlice(state.slice + (e.deltaY > 0 ? 1 : -1)); }, { passive: false });
  $("strip").addEventListener("click", (e) => {
    const r = state.study && state.study.result; if (!r) return;
    const rect = e.target.getBoundingClientRect();
    showSlice(Math.floor((e.clientX - rect.left) / rect.width * r.num_slices));
  });
  refreshWorklist();
  setInterval(refreshWorklist, REFRESH_MS);
}
document.addEventListener("DOMContentLoaded", wire);
