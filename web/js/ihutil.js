// ihutil.js - what the internet-hospital pages share (visit.html, doctor.html, review.html,
// pharmacy.html): names of doctors through their PractitionerRole, amounts in fen, the labels
// of visit, prescription and delivery states, the chat of a visit (Communications, text and
// images, read again while the page is open), the findings of the prescription checks and the
// drugs of a prescription as the lists show them.
import { api, el, errorText, lang, say, t } from "./common.js";
import { fmtWhen, label, nameOf, personName } from "./bookutil.js";

export const REFUSAL_SYSTEM = "https://jiankang.example/fhir/CodeSystem/internet-hospital-refusal";
export const KIND_SYSTEM = "https://jiankang.example/fhir/CodeSystem/institution-kind";
// Institution kinds a prescription may be filled at (rules/dispensing.json pharmacy.kinds):
// only to offer a choice; the server checks the Organization itself.
export const PHARMACY_KINDS = ["pharmacy", "hospital", "chc", "township"];
export const DELIVERY_STATES = ["accepted", "packed", "shipped", "delivered", "signed"];
// The reason codes of a rejection (医院处方点评管理规范（试行）: 1-x 不规范处方, 2-x 用药不适宜处方,
// 3-x 超常处方), as rules/dispensing.json review.reasons has them; their texts are in strings.js.
export const REVIEW_REASONS = [
  ...Array.from({ length: 15 }, (_, i) => "1-" + (i + 1)),
  ...Array.from({ length: 9 }, (_, i) => "2-" + (i + 1)),
  ...Array.from({ length: 4 }, (_, i) => "3-" + (i + 1)),
];
const POLL_MS = 4000;

// "¥15.00" of an amount in fen.
export function money(fen) {
  return typeof fen === "number" ? "¥" + (fen / 100).toFixed(2) : "";
}

// The stable refusal codes of an answer (issue.details.coding of the refusal system).
export function refusalCodes(res) {
  const b = (res && res.body) || {};
  return (b.issue || []).flatMap((i) => ((i.details && i.details.coding) || [])
    .filter((c) => c.system === REFUSAL_SYSTEM).map((c) => c.code));
}

// The name of a doctor or pharmacist of "PractitionerRole/x" (their Practitioner's), read once.
const roleNames = new Map();
export function roleName(ref) {
  if (!ref || !ref.startsWith("PractitionerRole/")) return nameOf(ref);
  if (!roleNames.has(ref)) {
    roleNames.set(ref, api("GET", "/fhir/R4/" + ref).then((res) => {
      const p = res.ok && res.body && res.body.practitioner && res.body.practitioner.reference;
      return p ? nameOf(p) : ref;
    }));
  }
  return roleNames.get(ref);
}

// Names of references into out (ref -> name): roles through their practitioner, the rest
// through nameOf.
export async function refNames(refs, out) {
  const uniq = [...new Set(refs.filter(Boolean))];
  const got = await Promise.all(uniq.map(roleName));
  uniq.forEach((r, i) => { out[r] = got[i]; });
  return out;
}

// Whole years of age at now of a birth date "YYYY-MM-DD".
export function age(birthDate, now = new Date()) {
  const m = /^(\d{4})-(\d{2})-(\d{2})/.exec(birthDate || "");
  if (!m) return null;
  let y = now.getFullYear() - Number(m[1]);
  if (now.getMonth() + 1 < Number(m[2]) || (now.getMonth() + 1 === Number(m[2]) && now.getDate() < Number(m[3]))) y--;
  return y;
}

// "王小明 · 男 · 41岁" of a summary's patient ({name, gender, birthDate}) or a Patient.
export function patientLine(p) {
  if (!p) return "";
  const a = age(p.birthDate);
  return [p.resourceType ? personName(p) : p.name, p.gender ? t("gender." + p.gender) : "",
    a === null ? "" : t("ih.age", a)].filter(Boolean).join(" · ");
}

// ---- prescriptions ----

// One drug of a prescription's summary as a line: "苯磺酸氨氯地平片 5 mg × 1 次/日 · 7 天 · 1 盒".
export function itemLine(it) {
  const dose = it.dose !== undefined ? it.dose + (it.unit ? " " + it.unit : "") : "";
  return [[it.name || it.drug, dose, it.timesPerDay ? t("ih.times", it.timesPerDay) : ""].filter(Boolean).join(" "),
    it.days ? t("ih.days", it.days) : "", it.quantity ? t("ih.quantity", it.quantity) : ""].filter(Boolean).join(" · ");
}

export function itemsList(summary) {
  const items = (summary && summary.items) || [];
  return el("ul", { class: "drugs" }, items.map((it) => el("li", { "data-drug": it.drug || "" }, itemLine(it))));
}

// The findings of the checks ({code, severity, item?, message}) as a list, refusals first.
export function findingsList(findings, cls = "findings") {
  const list = [...(findings || [])].sort((a, b) => (a.severity === "refuse" ? 0 : 1) - (b.severity === "refuse" ? 0 : 1));
  return el("ul", { class: cls }, list.map((f) => el("li", { class: "finding", "data-severity": f.severity, "data-code": f.code },
    el("span", { class: "sev" }, label("rx.sev.", f.severity)), " ", f.message || f.code)));
}

// The pharmacist's decision of a prescription: who, when, the coded reasons and the text.
export function reviewBlock(p, names = {}) {
  const r = p.review;
  if (!r) return null;
  const codes = (r.codes || []).map((c) => el("li", { "data-reason": c.code }, c.code + " " + reasonText(c)));
  return el("div", { class: "review" },
    el("div", { class: "muted small" }, t("rx.reviewed", names[r.reviewer] || "", fmtWhen(r.at))),
    codes.length ? el("ul", { class: "reasons" }, codes) : null,
    r.text ? el("p", { class: "review-text" }, r.text) : null);
}

// A reason code's text: the page's own in English, else the server's display, else ours.
export function reasonText(c) {
  const key = "rx.reason." + c.code;
  if (lang() === "en" && t(key) !== key) return t(key);
  return c.display || (t(key) !== key ? t(key) : "");
}

// The delivery order's history ({status, at, carrier?, waybill?} ...) as a list.
export function deliveryBlock(d) {
  if (!d) return null;
  const hist = Array.isArray(d.history) ? d.history : [];
  return el("div", { class: "delivery", "data-delivery": d.status },
    el("div", {}, el("strong", {}, t("rx.delivery.now")), " ", el("span", { class: "state", "data-state": d.status }, label("rx.delivery.", d.status))),
    d.carrier || d.waybill ? el("div", { class: "small" }, t("rx.waybill", d.carrier || "", d.waybill || "")) : null,
    d.address ? el("div", { class: "small muted" }, t("rx.address.to", d.address)) : null,
    hist.length ? el("ol", { class: "history small" }, hist.map((h) => el("li", { "data-state": h.status || h.to || "" },
      [label("rx.delivery.", h.status || h.to || ""), fmtWhen(h.at || h.time || h.when || ""),
        [h.carrier, h.waybill].filter(Boolean).join(" ")].filter(Boolean).join(" · ")))) : null);
}

// ---- the chat of a visit ----

// A chat bound to the elements of a page: list (ul), form (with a textarea named text and a
// file input named image), status (p). me: the reference that is "mine" (Patient/x or
// PractitionerRole/x). Open a visit with open(visit); messages are read again every few
// seconds while the page is visible.
export class Chat {
  constructor({ list, form, status, me, names = {} }) {
    Object.assign(this, { list, form, status, me, names, visit: null, msgs: [], timer: null, busy: false });
    form.addEventListener("submit", (ev) => this.sendText(ev));
    form.elements.image.addEventListener("change", () => this.sendImage());
    document.addEventListener("visibilitychange", () => this.schedule());
  }

  async open(visit) {
    const changed = !this.visit || this.visit.id !== visit.id;
    this.visit = visit;
    if (changed) {
      this.msgs = [];
      this.list.replaceChildren();
      say(this.status, "");
    }
    const live = visit.status === "open" || visit.status === "pending";
    for (const e of this.form.elements) e.disabled = !live;
    await this.load();
    this.schedule();
  }

  close() {
    this.visit = null;
    clearTimeout(this.timer);
  }

  schedule() {
    clearTimeout(this.timer);
    if (!this.visit || document.hidden) return;
    this.timer = setTimeout(async () => {
      await this.load();
      this.schedule();
    }, POLL_MS);
  }

  async load() {
    if (!this.visit) return;
    const id = this.visit.id;
    const res = await api("GET", "/api/ih/visits/" + encodeURIComponent(id) + "/messages");
    if (!this.visit || this.visit.id !== id) return;
    if (!res.ok) return say(this.status, errorText(res), "error");
    const msgs = ((res.body && res.body.entry) || []).map((e) => e.resource).filter(Boolean);
    if (msgs.length === this.msgs.length && msgs.every((m, i) => m.id === this.msgs[i].id)) return;
    await refNames(msgs.map((m) => m.sender && m.sender.reference), this.names);
    this.msgs = msgs;
    this.render();
  }

  render() {
    const atEnd = this.list.scrollTop + this.list.clientHeight >= this.list.scrollHeight - 8;
    this.list.replaceChildren(...this.msgs.map((m) => this.item(m)));
    if (atEnd || this.list.dataset.fresh !== this.visit.id) this.list.scrollTop = this.list.scrollHeight;
    this.list.dataset.fresh = this.visit.id;
  }

  item(m) {
    const from = (m.sender && m.sender.reference) || "";
    const mine = from === this.me;
    const parts = [];
    for (const p of m.payload || []) {
      if (typeof p.contentString === "string") parts.push(el("p", { class: "text" }, p.contentString));
      const a = p.contentAttachment;
      if (a && a.data && /^image\/(png|jpeg)$/.test(a.contentType || ""))
        parts.push(el("img", { src: "data:" + a.contentType + ";base64," + a.data, alt: a.title || t("ih.chat.image") }));
      else if (a && a.url && /^https?:\/\//.test(a.url))
        parts.push(el("a", { href: a.url, target: "_blank", rel: "noopener noreferrer" }, t("ih.chat.video")));
    }
    return el("li", { class: mine ? "msg mine" : "msg theirs", "data-from": from },
      el("div", { class: "who small muted" }, (mine ? t("ih.chat.me") : this.names[from] || from) + " · " + fmtWhen(m.sent)),
      ...parts);
  }

  async post(body) {
    if (!this.visit || this.busy) return false;
    this.busy = true;
    const res = await api("POST", "/api/ih/visits/" + encodeURIComponent(this.visit.id) + "/messages", { json: body });
    this.busy = false;
    if (!res.ok) {
      say(this.status, errorText(res), "error");
      return false;
    }
    say(this.status, "");
    await this.load();
    this.list.scrollTop = this.list.scrollHeight;
    return true;
  }

  async sendText(ev) {
    ev.preventDefault();
    const box = this.form.elements.text;
    const text = box.value.trim();
    if (!text) return box.focus();
    if (await this.post({ text })) box.value = "";
  }

  async sendImage() {
    const input = this.form.elements.image;
    const f = input.files && input.files[0];
    if (!f) return;
    if (!/^image\/(png|jpeg)$/.test(f.type)) {
      input.value = "";
      return say(this.status, t("ih.chat.image.kind"), "error");
    }
    const data = await fileBase64(f);
    await this.post({ image: { contentType: f.type, data, title: f.name } });
    input.value = "";
  }
}

// The bytes of a File as base64.
export async function fileBase64(f) {
  const bytes = new Uint8Array(await f.arrayBuffer());
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(bin);
}
