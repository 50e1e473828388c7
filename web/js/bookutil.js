// bookutil.js - what the booking pages share: the region's local time (slots, sessions and
// release waves are local to UTC+8 whatever the browser's zone), names of the directory's
// resources (institutions, departments, doctors), FHIR Parameters bodies, and the labels of
// channels, states and fee levels.
import { api, lang, t } from "./common.js";

export const TZ = "Asia/Shanghai";
export const CHANNELS = ["window", "online", "phone", "referral", "family"];
export const FEE_SYSTEM = "https://jiankang.example/fhir/CodeSystem/fee-level";
export const PRICE_URL = "https://jiankang.example/fhir/StructureDefinition/price";
export const SESSION_URL = "https://jiankang.example/fhir/StructureDefinition/schedule-session";
export const EXCEPTION_URL = "https://jiankang.example/fhir/StructureDefinition/schedule-exception";
export const WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

function locale() {
  return lang() === "en" ? "en-GB" : "zh-CN";
}

// "YYYY-MM-DD" of an instant (default now) in the region's time.
export function localDay(at = Date.now()) {
  const d = new Date(at);
  const parts = new Intl.DateTimeFormat("en-CA", { timeZone: TZ, year: "numeric", month: "2-digit", day: "2-digit" })
    .formatToParts(d);
  const get = (k) => parts.find((p) => p.type === k).value;
  return get("year") + "-" + get("month") + "-" + get("day");
}

// "11月25日 周三" / "Wed 25 Nov" of an instant, in the region's time.
export function fmtDay(iso) {
  const d = new Date(iso);
  if (isNaN(d)) return iso || "";
  return d.toLocaleDateString(locale(), { timeZone: TZ, month: "short", day: "numeric", weekday: "short" });
}

// "08:15" of an instant, in the region's time.
export function fmtHm(iso) {
  const d = new Date(iso);
  if (isNaN(d)) return iso || "";
  return d.toLocaleTimeString(locale(), { timeZone: TZ, hour: "2-digit", minute: "2-digit", hour12: false });
}

// "11月25日 周三 08:15" of an instant.
export function fmtWhen(iso) {
  return fmtDay(iso) + " " + fmtHm(iso);
}

// "4:59": minutes and seconds left until iso.
export function countdown(iso, now = Date.now()) {
  const s = Math.max(0, Math.round((Date.parse(iso) - now) / 1000));
  return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
}

// The text of key+value when strings has one, else the value itself.
export function label(prefix, v) {
  const k = prefix + v;
  return v && t(k) !== k ? t(k) : v || "";
}

// A Parameters resource of name -> value (references as valueReference, the rest as valueString).
export function parameters(obj) {
  const parameter = [];
  for (const [name, v] of Object.entries(obj)) {
    if (v === undefined || v === null || v === "") continue;
    if (/^[A-Z][A-Za-z]+\/[A-Za-z0-9.-]+$/.test(v)) parameter.push({ name, valueReference: { reference: v } });
    else parameter.push({ name, valueString: String(v) });
  }
  return { resourceType: "Parameters", parameter };
}

// The value of a Parameters resource's parameter name.
export function paramValue(p, name) {
  const x = ((p && p.parameter) || []).find((e) => e.name === name);
  if (!x) return undefined;
  for (const [k, v] of Object.entries(x)) if (k.startsWith("value")) return v;
  return undefined;
}

// The entries of a search Bundle, of resourceType type.
export function entries(bundle, type) {
  return ((bundle && bundle.entry) || []).map((e) => e.resource).filter((r) => r && (!type || r.resourceType === type));
}

// The name of a Practitioner or Patient as a person reads it.
export function personName(r) {
  const n = (r && r.name && (r.name.find((x) => x.use === "official") || r.name[0])) || null;
  if (!n) return "";
  if (n.text) return n.text;
  const given = (n.given || []).join("");
  return /[\u4e00-\u9fff]/.test((n.family || "") + given) ? (n.family || "") + given
    : [given, n.family].filter(Boolean).join(" ");
}

// The display name of a directory resource.
export function resourceName(r) {
  if (!r) return "";
  if (r.resourceType === "Practitioner" || r.resourceType === "Patient") return personName(r);
  return r.name || r.id || "";
}

// The fee level code (general, expert, special) of a HealthcareService.
export function feeLevel(hs) {
  for (const c of (hs && hs.characteristic) || [])
    for (const cd of c.coding || []) if (cd.system === FEE_SYSTEM) return cd.code;
  return "";
}

// The price of a HealthcareService as text ("¥10"), or "".
export function price(hs) {
  const e = ((hs && hs.extension) || []).find((x) => x.url === PRICE_URL);
  const m = e && e.valueMoney;
  return m && typeof m.value === "number" ? t("bk.price", m.value) : "";
}

// Names of references ("Organization/x"), read once per page.
const names = new Map();
export function nameOf(ref) {
  if (!ref || !/^[A-Z][A-Za-z]+\/[A-Za-z0-9.-]+$/.test(ref)) return Promise.resolve(ref || "");
  if (!names.has(ref)) {
    names.set(ref, api("GET", "/fhir/R4/" + ref).then((res) => (res.ok ? resourceName(res.body) || ref : ref)));
  }
  return names.get(ref);
}

// Remembers a resource already read, so that nameOf does not read it again.
export function rememberName(r) {
  if (r && r.resourceType && r.id) names.set(r.resourceType + "/" + r.id, Promise.resolve(resourceName(r)));
}

// Resolves the names of refs into the object out (ref -> name).
export async function namesOf(refs, out) {
  const uniq = [...new Set(refs.filter(Boolean))];
  const got = await Promise.all(uniq.map(nameOf));
  uniq.forEach((r, i) => { out[r] = got[i]; });
  return out;
}

// The option elements of a select: [[value, text]...], keeping the value selected when it is
// still there.
export function fillSelect(sel, options, keep = true) {
  const before = sel.value;
  sel.replaceChildren(...options.map(([v, text]) => {
    const o = document.createElement("option");
    o.value = v;
    o.textContent = text;
    return o;
  }));
  if (keep && options.some(([v]) => v === before)) sel.value = before;
}
