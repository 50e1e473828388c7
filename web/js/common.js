// common.js - what every page shares: the language (Simplified Chinese first, English
// second), the bearer token kept for the browser tab, calls to the API, and small DOM helpers.
// No framework and no build step: the browser loads this file as it is.
import { strings } from "./strings.js";

const LANG_KEY = "jk.lang";
const TOKEN_KEY = "jk.token";

// ---- language ----

export function lang() {
  const l = localStorage.getItem(LANG_KEY);
  return l === "en" ? "en" : "zh";
}

// The text of key in the current language; {0}, {1} ... are replaced by args.
export function t(key, ...args) {
  const table = strings[lang()];
  let s = key in table ? table[key] : key in strings.zh ? strings.zh[key] : key;
  args.forEach((a, i) => {
    s = s.split("{" + i + "}").join(String(a));
  });
  return s;
}

// Fills every element marked data-i18n (text), data-i18n-placeholder and data-i18n-label
// (aria-label) below root, and the page's language and title.
export function applyI18n(root = document) {
  document.documentElement.lang = lang() === "en" ? "en" : "zh-CN";
  for (const e of root.querySelectorAll("[data-i18n]")) e.textContent = t(e.dataset.i18n);
  for (const e of root.querySelectorAll("[data-i18n-placeholder]"))
    e.placeholder = t(e.dataset.i18nPlaceholder);
  for (const e of root.querySelectorAll("[data-i18n-label]"))
    e.setAttribute("aria-label", t(e.dataset.i18nLabel));
  const sw = document.getElementById("lang-switch");
  if (sw) {
    sw.textContent = lang() === "en" ? "中文" : "English";
    sw.setAttribute("lang", lang() === "en" ? "zh-CN" : "en");
  }
}

// Wires the language switch; onChange re-renders what the page drew itself.
export function initLang(onChange) {
  applyI18n();
  const sw = document.getElementById("lang-switch");
  if (!sw) return;
  sw.addEventListener("click", () => {
    localStorage.setItem(LANG_KEY, lang() === "en" ? "zh" : "en");
    applyI18n();
    if (onChange) onChange();
  });
}

// ---- the token: for this tab only, gone when it closes ----

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(tok) {
  if (tok) sessionStorage.setItem(TOKEN_KEY, tok);
  else sessionStorage.removeItem(TOKEN_KEY);
}

// ---- the API ----

export class ApiError extends Error {
  constructor(res) {
    super(errorText(res));
    this.res = res;
  }
}

// Calls the API. opts: json (a body sent as JSON), form (an object sent as a form),
// auth (false: no token). Resolves to {status, ok, body} with body the parsed JSON (or null);
// an answer 401 to a call with a token forgets the token and goes back to the log-in page.
export async function api(method, path, opts = {}) {
  const headers = { Accept: "application/json", "Accept-Language": lang() === "en" ? "en" : "zh-CN" };
  let body;
  if (opts.json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(opts.json);
  } else if (opts.form) {
    headers["Content-Type"] = "application/x-www-form-urlencoded";
    body = new URLSearchParams(opts.form).toString();
  }
  const tok = opts.auth === false ? null : token();
  if (tok) headers.Authorization = "Bearer " + tok;
  let resp;
  try {
    resp = await fetch(path, { method, headers, body, credentials: "omit", cache: "no-store" });
  } catch (e) {
    return { status: 0, ok: false, body: null, network: true };
  }
  let parsed = null;
  const text = await resp.text();
  if (text) {
    try {
      parsed = JSON.parse(text);
    } catch (e) {
      parsed = null;
    }
  }
  const res = { status: resp.status, ok: resp.ok, body: parsed };
  if (resp.status === 401 && tok && opts.auth !== false) {
    setToken(null);
    toLogin();
  }
  return res;
}

// Like api, but a failure is thrown as ApiError.
export async function call(method, path, opts) {
  const res = await api(method, path, opts);
  if (!res.ok) throw new ApiError(res);
  return res.body;
}

// What went wrong, for a person: the OperationOutcome's diagnostics (the server writes them
// in the language asked for), an OAuth error's description, or a generic message.
export function errorText(res) {
  if (!res || res.network) return t("err.network");
  const b = res.body;
  if (b && b.resourceType === "OperationOutcome" && Array.isArray(b.issue)) {
    const msgs = b.issue.map((i) => i.diagnostics || i.code).filter(Boolean);
    if (msgs.length) return msgs.join("; ");
  }
  if (b && typeof b.error_description === "string") return b.error_description;
  if (res.status === 403) return t("err.forbidden");
  if (res.status === 404) return t("err.notfound");
  if (res.status >= 500) return t("err.server");
  return t("err.generic", res.status);
}

// The FHIR expressions an OperationOutcome names ("document.number"), for marking fields.
export function errorFields(res) {
  const b = res && res.body;
  if (!b || !Array.isArray(b.issue)) return [];
  return b.issue.flatMap((i) => i.expression || []);
}

export function toLogin() {
  const here = location.pathname + location.search;
  location.assign("/?next=" + encodeURIComponent(here));
}

// Who is logged in (GET /auth/me), or a trip to the log-in page.
export async function requireLogin() {
  if (!token()) {
    toLogin();
    return new Promise(() => {});
  }
  const res = await api("GET", "/auth/me");
  if (!res.ok) {
    setToken(null);
    toLogin();
    return new Promise(() => {});
  }
  return res.body;
}

export async function logout() {
  if (token()) await api("POST", "/auth/revoke", { form: { token: token() } });
  setToken(null);
  location.assign("/");
}

// ---- DOM ----

// A new element: attrs are attributes (class, id, ...; on* are not allowed); children are
// nodes or text (text is never parsed as HTML).
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false || k.startsWith("on")) continue;
    e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

// Shows text in a status element (role=status or role=alert); kind: "ok", "error" or "".
export function say(node, text, kind = "") {
  node.textContent = text || "";
  node.dataset.kind = kind;
  node.hidden = !text;
}

export function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (isNaN(d)) return iso;
  return d.toLocaleString(lang() === "en" ? "en-GB" : "zh-CN", { hour12: false });
}

export function fmtClock(iso) {
  const d = new Date(iso);
  if (isNaN(d)) return iso || "";
  return d.toLocaleTimeString(lang() === "en" ? "en-GB" : "zh-CN", { hour12: false });
}

export function genderText(g) {
  return g ? t("gender." + g) : "";
}

// The name of a FHIR Patient as a person reads it.
export function patientName(p) {
  const n = (p && p.name && (p.name.find((x) => x.use === "official") || p.name[0])) || null;
  if (!n) return "";
  if (n.text) return n.text;
  const given = (n.given || []).join("");
  return /[\u4e00-\u9fff]/.test((n.family || "") + given)
    ? (n.family || "") + given
    : [given, n.family].filter(Boolean).join(" ");
}

// The identity document of a Patient (masked by the server unless the reader may see it).
export function patientIdentity(p) {
  const ids = (p && p.identifier) || [];
  const id = ids.find((i) => i.use === "official") || ids.find((i) => i.type) || null;
  if (!id) return "";
  const kind = (id.type && (id.type.text || (id.type.coding || [])[0]?.display)) || "";
  return (kind ? kind + " " : "") + (id.value || "");
}

// Draws the SVG text svg (from our own API) inside container, keeping only plain shapes:
// no script, no event handler, no link, no foreign content. Inline style declarations become
// presentation attributes, because the page's Content-Security-Policy allows no inline style.
const SVG_ELEMENTS = new Set(["svg", "g", "path", "rect", "polygon", "circle", "title", "desc"]);
const SVG_STYLE_PROPS = new Set(["fill", "stroke", "stroke-width", "fill-opacity", "fill-rule",
  "shape-rendering", "opacity", "stroke-opacity"]);
export function drawSvg(container, svg, label) {
  const doc = new DOMParser().parseFromString(svg || "", "image/svg+xml");
  const root = doc.documentElement;
  if (!root || root.localName !== "svg" || doc.getElementsByTagName("parsererror").length) {
    container.replaceChildren();
    return false;
  }
  for (const e of [root, ...root.querySelectorAll("*")]) {
    if (!SVG_ELEMENTS.has(e.localName)) {
      e.remove();
      continue;
    }
    for (const a of [...e.attributes]) {
      const name = a.name.toLowerCase();
      if (name === "style") {
        for (const decl of a.value.split(";")) {
          const [k, v] = decl.split(":").map((s) => s && s.trim());
          if (k && v && SVG_STYLE_PROPS.has(k.toLowerCase())) e.setAttribute(k.toLowerCase(), v);
        }
        e.removeAttribute(a.name);
      } else if (name.startsWith("on") || name.includes("href") || name === "class") {
        e.removeAttribute(a.name);
      }
    }
  }
  root.setAttribute("role", "img");
  if (label) root.setAttribute("aria-label", label);
  container.replaceChildren(document.importNode(root, true));
  return true;
}
