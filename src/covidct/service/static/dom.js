// Small helpers shared by the page's modules. Server data reaches the DOM only as text
// (textContent, attributes set one by one): never as HTML.
"use strict";

export const $ = (id) => document.getElementById(id);

/** An element with text and attributes: el("td", "text", {title: "..."}). */
export function el(tag, text = "", attrs = {}) {
  const node = document.createElement(tag);
  if (text !== null && text !== undefined && text !== "") node.textContent = String(text);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) node.setAttribute(name, String(value));
  }
  return node;
}

/** fetch() with the session cookie; throws Error(detail) on a non-2xx answer (401 -> err.status). */
export async function api(path, options = {}) {
  const resp = await fetch(path, { credentials: "same-origin", ...options });
  if (!resp.ok) {
    let msg = resp.status + " " + resp.statusText;
    try { msg = (await resp.json()).detail || msg; } catch (e) { /* not JSON */ }
    const err = new Error(String(msg));
    err.status = resp.status;
    throw err;
  }
  return resp;
}

export function fmt(p, digits = 3) { return p === null || p === undefined ? "-" : Number(p).toFixed(digits); }

export function pct(fraction) { return fraction === null || fraction === undefined ? "-" : (100 * fraction).toFixed(1) + " %"; }

/** The last ``n`` characters of a long value (UIDs, paths), the full value for a title. */
export function shorten(value, n = 20) {
  const text = value === null || value === undefined ? "" : String(value);
  return text.length <= n ? text : "\u2026" + text.slice(-(n - 1));
}
