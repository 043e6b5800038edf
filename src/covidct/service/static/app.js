// covidct web page: sign-in (HttpOnly session cookie), upload, worklist, and a URL per study
// (#/study/<id>/<slice number 1-based>). No build step; server data is shown as text only.
"use strict";
import { $, api, el, fmt, shorten } from "./dom.js";
import { loadPresets, onSliceChange, openStudy, showSlice, wireViewer } from "./viewer.js";

const REFRESH_MS = 2000;
const ROUTE = /^#\/study\/([0-9a-f]{1,64})(?:\/(\d+))?$/;
const page = { signedIn: false, openId: null, timer: null };

function setSignedIn(name) {
  page.signedIn = Boolean(name);
  $("auth-status").textContent = name ? "signed in as " + name : "not signed in";
  $("login-form").hidden = page.signedIn;
  $("logout-btn").hidden = !page.signedIn;
}

async function checkSession() {
  try {
    const s = await (await api("/session")).json();
    setSignedIn(s.name);
    await loadPresets();
    return true;
  } catch (e) { setSignedIn(null); return false; }
}

async function login(ev) {
  ev.preventDefault();
  const token = $("token").value.trim();
  $("token").value = "";  // the token lives only in the HttpOnly cookie from here on
  try {
    await api("/login", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ token }) });
    if (await checkSession()) { refreshWorklist(); route(); }
  } catch (e) { $("auth-status").textContent = "sign-in refused: " + e.message; }
}

async function logout() {
  await fetch("/logout", { method: "POST", credentials: "same-origin" });
  setSignedIn(null);
  $("worklist").querySelector("tbody").replaceChildren();
  $("viewer").hidden = true;
}

function worklistRow(j) {
  const tr = el("tr", "", { "data-id": j.id });
  if (page.openId === j.id) tr.className = "selected";
  const anonymous = j.patient_id === "anonymous";
  const severity = j.severity_score === null || j.severity_score === undefined ? "-"
    : j.severity_score + (j.severity_max ? " / " + j.severity_max : "");
  const cls = j.predicted_class ? `${j.predicted_class}${j.model_name ? " (" + j.model_name + ")" : ""}` : "no model";
  tr.append(
    el("td", shorten(j.patient_id, 16), { title: j.patient_id, class: "patient" + (anonymous ? " anonymous" : "") }),
    el("td", j.study_date || "-", { class: "date" }),
    el("td", shorten(j.description || "-", 28), { title: j.description, class: "description" }),
    el("td", j.involvement_pct === null || j.involvement_pct === undefined ? "-" : j.involvement_pct.toFixed(1) + " %", { class: "involvement" }),
    el("td", severity, { class: "severity" }),
    el("td", j.pattern || "-", { class: "pattern" }),
    el("td", cls, { class: "class" }),
    el("td", fmt(j.covid_probability), { class: "prob" }),
    el("td", j.status + (j.error ? ": " + shorten(j.error, 60) : ""), { class: "status status-" + j.status, title: j.error }),
  );
  const open = el("td", "", { class: "open" });
  open.append(el("a", "view", { href: j.links.viewer, class: "viewer-link", title: "series " + (j.series_uid || j.id) }));
  if (j.status === "done") {
    open.append(" ", el("a", "report", { href: j.links.report, class: "report-link", target: "_blank", rel: "noopener" }));
  }
  if (j.ohif_url && /^(https?:\/\/|\/[^/])/.test(j.ohif_url)) {
    open.append(" ", el("a", "OHIF", { href: j.ohif_url, class: "ohif-link", target: "_blank", rel: "noopener" }));
  }
  tr.appendChild(open);
  return tr;
}

async function refreshWorklist() {
  if (!page.signedIn) return;
  const params = new URLSearchParams({ sort: $("sort").value, order: "desc" });
  if ($("filter-status").value) params.set("status", $("filter-status").value);
  try {
    const data = await (await api("/worklist?" + params)).json();
    $("worklist").querySelector("tbody").replaceChildren(...data.items.map(worklistRow));
    $("worklist").dataset.sort = $("sort").value;
    if (page.openId) {
      const item = data.items.find((j) => j.id === page.openId);
      if (item && item.status !== page.openStatus) openFromRoute(page.openId, null);
    }
  } catch (e) {
    if (e.status === 401) setSignedIn(null);
    else $("auth-status").textContent = e.message;
  }
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

/** Open the study the address names (#/study/<id>/<n>, n = 1-based slice position). */
async function openFromRoute(id, n) {
  try {
    const job = await (await api("/studies/" + encodeURIComponent(id))).json();
    page.openId = id;
    page.openStatus = job.status;
    openStudy(job, n === null ? null : n - 1);
  } catch (e) {
    $("viewer").hidden = false;
    $("v-summary").replaceChildren(el("p", "cannot open study " + id + ": " + e.message, { class: "error", id: "v-error" }));
  }
}

function route() {
  const m = ROUTE.exec(location.hash);
  if (!m || !page.signedIn) return;
  const n = m[2] === undefined ? null : Number(m[2]);
  if (m[1] === page.openId && n !== null) showSlice(n - 1);
  else if (m[1] !== page.openId) openFromRoute(m[1], n);
}

function wire() {
  $("login-form").addEventListener("submit", login);
  $("logout-btn").addEventListener("click", logout);
  $("upload-btn").addEventListener("click", upload);
  $("filter-status").addEventListener("change", refreshWorklist);
  $("sort").addEventListener("change", refreshWorklist);
  for (const th of document.querySelectorAll("#worklist th.sortable")) {
    th.addEventListener("click", () => { $("sort").value = th.dataset.sort; refreshWorklist(); });
  }
  wireViewer();
  onSliceChange((id, k) => {  // keep the address in step, without a history entry per slice
    const hash = `#/study/${id}/${k + 1}`;
    if (location.hash !== hash) history.replaceState(null, "", hash);
  });
  window.addEventListener("hashchange", route);
  checkSession().then((ok) => { if (ok) { refreshWorklist(); route(); } });
  page.timer = setInterval(refreshWorklist, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", wire);
