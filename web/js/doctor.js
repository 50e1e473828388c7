// doctor.js - a doctor's internet-hospital room: the queue of their open and pending follow-up
// visits (GET /api/ih/visits), one visit with the patient, the condition and its basis (an
// uploaded record is shown and confirmed: POST .../confirm), the chat, the end of the visit or
// the patient sent to in-person care (POST .../end); a prescription from the institution's
// formulary, checked against the rules as it changes (POST /api/rx/check: refusals and
// warnings shown at once), signed (POST /api/rx/prescriptions); the visit's prescriptions with
// the pharmacist's decision and reasons (GET /api/rx/prescriptions?patient=).
import { api, el, errorText, initLang, lang, logout, requireLogin, say, t } from "./common.js";
import { fmtWhen, label, nameOf } from "./bookutil.js";
import { Chat, age, findingsList, itemsList, money, refNames, reviewBlock } from "./ihutil.js";

const $ = (id) => document.getElementById(id);
const CHECK_DELAY_MS = 350;
const REFRESH_MS = 8000;
const FIELDS = ["drug", "dose", "timesPerDay", "days", "quantity"];

const state = {
  me: null,
  visits: null, // the queue
  visit: null, // the open visit
  encounter: {}, // visit id -> Encounter
  patients: {}, // Patient ref -> Patient
  names: {},
  formulary: new Map(), // code -> drug of the formulary, when the server lists it
  items: [], // the prescription being written: [{drug, dose, timesPerDay, days, quantity}]
  check: null, // the last answer of /api/rx/check: {refused, findings, amountFen}
  checkSeq: 0,
  checkTimer: null,
  vrx: null, // the visit's prescriptions
  msgs: {},
  timer: null,
};
let chat;

function msg(id, m) {
  state.msgs[id] = m;
  say($(id), m ? (m.key ? t(m.key, ...(m.args || [])) : m.text) : "", m ? m.kind : "");
}

// ---- the queue ----

function conditionOf(v) {
  const enc = state.encounter[v.id];
  for (const rc of (enc && enc.reasonCode) || [])
    for (const c of rc.coding || []) {
      const name = rc.text || c.display;
      if (c.code === v.condition.code) return name && name !== c.code ? name + " (" + c.code + ")" : c.code;
    }
  return (v.condition && v.condition.code) || "";
}

function patientText(ref) {
  const p = state.patients[ref];
  if (!p) return ref;
  const a = age(p.birthDate);
  return [state.names[ref] || ref, p.gender ? t("gender." + p.gender) : "", a === null ? "" : t("ih.age", a)].filter(Boolean).join(" · ");
}

async function loadPatients(refs) {
  const todo = [...new Set(refs)].filter((r) => r && !state.patients[r]);
  const got = await Promise.all(todo.map((r) => api("GET", "/fhir/R4/" + r)));
  todo.forEach((r, i) => { if (got[i].ok) state.patients[r] = got[i].body; });
  for (const r of todo) state.names[r] = await nameOf(r);
}

async function loadEncounters(vs) {
  const todo = vs.filter((v) => !state.encounter[v.id]);
  const got = await Promise.all(todo.map((v) => api("GET", "/fhir/R4/" + v.encounter)));
  todo.forEach((v, i) => { if (got[i].ok) state.encounter[v.id] = got[i].body; });
}

function queueItem(v) {
  return el("li", { "data-visit": v.id, "data-status": v.status, class: state.visit && state.visit.id === v.id ? "current" : "" },
    el("div", { class: "slot-head" }, el("strong", {}, patientText(v.patient)),
      el("span", { class: "state", "data-state": v.status }, label("ih.visit.", v.status))),
    el("div", {}, conditionOf(v)),
    el("div", { class: "muted small" }, [t("dv.since", fmtWhen(v.started)), v.replyBy ? t("dv.reply.by", fmtWhen(v.replyBy)) : ""].filter(Boolean).join(" · ")),
    el("div", { class: "actions" }, el("button", { type: "button", "data-act": "open" }, t("dv.open"))));
}

function renderQueue() {
  const vs = state.visits;
  $("queue-none").hidden = !vs || vs.length > 0;
  $("queue-list").replaceChildren(...(vs || []).map(queueItem));
}

async function loadQueue() {
  const res = await api("GET", "/api/ih/visits");
  if (!res.ok || !res.body) return msg("queue-status", { text: errorText(res), kind: "error" });
  msg("queue-status", null);
  const vs = res.body.visits || [];
  await Promise.all([loadPatients(vs.map((v) => v.patient)), loadEncounters(vs)]);
  state.visits = vs;
  renderQueue();
  const cur = state.visit && vs.find((v) => v.id === state.visit.id);
  if (cur && cur.status !== state.visit.status) await openVisit(cur.id, false);
}

// ---- one visit ----

async function showRecord(v) {
  const box = $("record-box");
  box.hidden = !(v.basis || "").startsWith("DocumentReference/");
  $("confirm").hidden = v.status !== "pending";
  if (box.hidden) return;
  const res = await api("GET", "/fhir/R4/" + v.basis);
  const att = res.ok && res.body && ((res.body.content || [])[0] || {}).attachment;
  const view = $("record-view");
  if (!att) return view.replaceChildren(el("p", { class: "status", "data-kind": "error" }, errorText(res)));
  if (/^image\/(png|jpeg)$/.test(att.contentType || "") && att.data)
    return view.replaceChildren(el("img", { class: "record", src: "data:" + att.contentType + ";base64," + att.data, alt: att.title || t("dv.record") }));
  const bytes = Uint8Array.from(atob(att.data || ""), (c) => c.charCodeAt(0));
  const url = URL.createObjectURL(new Blob([bytes], { type: att.contentType || "application/octet-stream" }));
  view.replaceChildren(el("a", { href: url, download: att.title || "record" }, att.title || t("dv.record.download")));
}

function renderVisit() {
  const v = state.visit;
  $("visit").hidden = $("prescribe").hidden = !v;
  if (!v) return;
  $("visit-who").textContent = state.names[v.patient] || "";
  $("visit-patient").textContent = patientText(v.patient);
  $("visit-condition").textContent = conditionOf(v);
  $("visit-basis").textContent = (v.basis || "") + (v.status === "pending" ? " · " + t("dv.basis.pending") : "");
  $("visit-status").textContent = label("ih.visit.", v.status) + (v.endReason ? " · " + v.endReason : "");
  $("visit-status").dataset.state = v.status;
  $("visit-started").textContent = fmtWhen(v.started) + (v.replyBy ? " · " + t("dv.reply.by", fmtWhen(v.replyBy)) : "");
  const live = v.status === "open" || v.status === "pending";
  for (const e of $("end-form").elements) e.disabled = !live;
  for (const e of $("rx-form").elements) e.disabled = v.status !== "open";
  if (v.status === "open") updateSign();
}

async function openVisit(id, scroll = true) {
  const res = await api("GET", "/api/ih/visits/" + encodeURIComponent(id));
  if (!res.ok || !res.body) return msg("queue-status", { text: errorText(res), kind: "error" });
  const v = res.body;
  const changed = !state.visit || state.visit.id !== v.id;
  state.visit = v;
  await Promise.all([loadPatients([v.patient]), loadEncounters([v])]);
  if (changed) {
    state.items = [blankItem()];
    state.check = null;
    $("rx-longterm").value = "";
    $("end-reason").value = "";
    msg("rx-status", null);
    msg("end-status", null);
    await loadFormulary(v.org);
    renderItems();
  }
  renderQueue();
  renderVisit();
  await showRecord(v);
  await chat.open(v);
  await loadVisitRx();
  if (scroll) $("visit").scrollIntoView({ block: "start" });
}

async function confirmRecord() {
  const v = state.visit;
  const res = await api("POST", "/api/ih/visits/" + encodeURIComponent(v.id) + "/confirm", { json: {} });
  msg("end-status", res.ok ? { key: "dv.confirmed", kind: "ok" } : { text: errorText(res), kind: "error" });
  await openVisit(v.id, false);
  await loadQueue();
}

async function endVisit(ev) {
  ev.preventDefault();
  const f = $("end-form");
  const outcome = f.elements.outcome.value;
  const reason = $("end-reason").value.trim();
  if (outcome === "redirect" && !reason) {
    $("end-reason").setAttribute("aria-invalid", "true");
    return msg("end-status", { key: "dv.end.need.reason", kind: "error" });
  }
  $("end-reason").removeAttribute("aria-invalid");
  const body = { outcome };
  if (reason) body.reason = reason;
  const res = await api("POST", "/api/ih/visits/" + encodeURIComponent(state.visit.id) + "/end", { json: body });
  msg("end-status", res.ok ? { key: outcome === "redirect" ? "dv.ended.redirect" : "dv.ended", kind: "ok" } : { text: errorText(res), kind: "error" });
  await openVisit(state.visit.id, false);
  await loadQueue();
}

// ---- the prescription being written ----

function blankItem() {
  return { drug: "", dose: "", timesPerDay: "1", days: "7", quantity: "1" };
}

// The formulary of the institution, when the server lists it (GET /api/rx/formulary); else the
// doctor types the national drug code and the check names a code that is not in it.
async function loadFormulary(org) {
  state.formulary = new Map();
  const res = await api("GET", "/api/rx/formulary?org=" + encodeURIComponent(org || ""));
  const drugs = (res.ok && res.body && (res.body.drugs || res.body.formulary)) || [];
  for (const d of drugs) if (d && d.code) state.formulary.set(d.code, d);
  $("formulary").replaceChildren(...[...state.formulary.values()].map((d) =>
    el("option", { value: d.code, label: drugName(d) + (d.package ? " " + d.package : "") })));
}

function drugName(d) {
  return (lang() === "en" && d.nameEn) || d.name || d.code;
}

function drugHint(code) {
  const d = state.formulary.get(code);
  if (!d) return "";
  return [drugName(d), d.package, d.doseMin !== undefined ? t("dv.rx.range", d.doseMin, d.doseMax, d.unit || "") : "",
    d.priceFen !== undefined ? money(d.priceFen) : ""].filter(Boolean).join(" · ");
}

function itemRow(it, i) {
  const field = (name, type, attrs = {}) => el("div", { class: "field" },
    el("label", { for: "rx-" + name + "-" + i }, t("dv.rx." + name)),
    el("input", { id: "rx-" + name + "-" + i, name, "data-i": i, type, value: it[name], autocomplete: "off", ...attrs }));
  return el("fieldset", { class: "rx-item", "data-i": i },
    el("legend", {}, t("dv.rx.item", i + 1)),
    field("drug", "text", { list: "formulary", spellcheck: "false" }),
    el("p", { class: "hint drug-hint", id: "rx-hint-" + i }, drugHint(it.drug)),
    el("div", { class: "row4" },
      field("dose", "number", { min: "0", step: "any", inputmode: "decimal" }),
      field("timesPerDay", "number", { min: "1", step: "1", inputmode: "numeric" }),
      field("days", "number", { min: "1", step: "1", inputmode: "numeric" }),
      field("quantity", "number", { min: "1", step: "1", inputmode: "numeric" })),
    state.items.length > 1 ? el("div", { class: "actions" }, el("button", { type: "button", class: "link", "data-remove": i }, t("dv.rx.remove"))) : null);
}

function renderItems() {
  $("rx-items").replaceChildren(...state.items.map(itemRow));
  renderCheck();
}

// The items as the API takes them, or null while one is incomplete.
function requestItems() {
  const out = [];
  for (const it of state.items) {
    const dose = Number(it.dose), tpd = Number(it.timesPerDay), days = Number(it.days), q = Number(it.quantity);
    if (!it.drug.trim() || !(dose > 0) || !Number.isInteger(tpd) || tpd < 1 || !Number.isInteger(days) || days < 1 ||
      !Number.isInteger(q) || q < 1) return null;
    out.push({ drug: it.drug.trim(), dose, timesPerDay: tpd, days, quantity: q });
  }
  return out.length ? out : null;
}

function requestBody() {
  const items = requestItems();
  if (!items || !state.visit) return null;
  const body = { visit: state.visit.encounter, items };
  const lt = $("rx-longterm").value.trim();
  if (lt) body.longTermReason = lt;
  return body;
}

function renderCheck() {
  const c = state.check;
  const body = requestBody();
  $("rx-check-state").textContent = !body ? t("dv.rx.incomplete") : !c ? t("dv.rx.checking")
    : c.refused ? t("dv.rx.refused") : c.findings.length ? t("dv.rx.warned") : t("dv.rx.clean");
  $("rx-check-state").dataset.kind = !c || !body ? "" : c.refused ? "error" : c.findings.length ? "warn" : "ok";
  $("rx-findings").replaceWith(Object.assign(findingsList(body && c ? c.findings : []), { id: "rx-findings" }));
  $("rx-amount").textContent = body && c && typeof c.amountFen === "number" ? t("rx.amount", money(c.amountFen)) : "";
  updateSign();
}

function updateSign() {
  const c = state.check;
  $("rx-sign").disabled = !state.visit || state.visit.status !== "open" || !requestBody() || !c || c.refused;
}

function scheduleCheck() {
  state.check = null;
  clearTimeout(state.checkTimer);
  renderCheck();
  if (!requestBody()) return;
  state.checkTimer = setTimeout(runCheck, CHECK_DELAY_MS);
}

async function runCheck() {
  const body = requestBody();
  if (!body) return;
  const seq = ++state.checkSeq;
  const res = await api("POST", "/api/rx/check", { json: body });
  if (seq !== state.checkSeq) return; // a later change has its own check
  if (!res.ok || !res.body) {
    state.check = { refused: true, findings: [{ severity: "refuse", code: "request", message: errorText(res) }] };
  } else {
    state.check = { refused: !!res.body.refused, findings: res.body.findings || [], amountFen: res.body.amountFen };
  }
  renderCheck();
}

function itemInput(ev) {
  const i = Number(ev.target.dataset.i);
  if (ev.target.id === "rx-longterm") return scheduleCheck();
  if (!Number.isInteger(i) || !FIELDS.includes(ev.target.name)) return;
  state.items[i][ev.target.name] = ev.target.value;
  if (ev.target.name === "drug") $("rx-hint-" + i).textContent = drugHint(ev.target.value.trim());
  scheduleCheck();
}

function itemClick(ev) {
  const rm = ev.target.closest("button[data-remove]");
  if (!rm) return;
  state.items.splice(Number(rm.dataset.remove), 1);
  renderItems();
  scheduleCheck();
}

function addItem() {
  state.items.push(blankItem());
  renderItems();
  scheduleCheck();
  $("rx-drug-" + (state.items.length - 1)).focus();
}

async function sign(ev) {
  ev.preventDefault();
  const body = requestBody();
  if (!body) return msg("rx-status", { key: "dv.rx.incomplete", kind: "error" });
  $("rx-sign").disabled = true;
  const res = await api("POST", "/api/rx/prescriptions", { json: body });
  if (!res.ok || !res.body) {
    msg("rx-status", { text: errorText(res), kind: "error" });
    return scheduleCheck();
  }
  msg("rx-status", { key: "dv.rx.signed", args: [res.body.prescription || ""], kind: "ok" });
  state.items = [blankItem()];
  state.check = null;
  $("rx-longterm").value = "";
  renderItems();
  await loadVisitRx();
}

// ---- the visit's prescriptions ----

function vrxItem(p) {
  return el("li", { "data-rx": p.id, "data-status": p.status },
    el("div", { class: "slot-head" }, el("strong", {}, fmtWhen(p.created)),
      el("span", { class: "state", "data-state": p.status }, label("rx.status.", p.status))),
    itemsList(p.summary),
    el("div", { class: "small" }, t("rx.amount", money(p.amountFen))),
    (p.warnings || []).length ? findingsList(p.warnings) : null,
    reviewBlock(p, state.names));
}

async function loadVisitRx() {
  const v = state.visit;
  if (!v) return;
  const res = await api("GET", "/api/rx/prescriptions?patient=" + encodeURIComponent(v.patient));
  if (!res.ok || !res.body) {
    state.vrx = null;
  } else {
    state.vrx = (res.body.prescriptions || []).filter((p) => p.visit === v.encounter || p.visit === "Encounter/" + v.id);
    await refNames(state.vrx.map((p) => p.review && p.review.reviewer), state.names);
  }
  $("vrx-none").hidden = !state.vrx || state.vrx.length > 0;
  $("vrx-list").replaceChildren(...(state.vrx || []).map(vrxItem));
}

// ---- the page ----

function renderAll() {
  renderQueue();
  renderVisit();
  if (state.visit) {
    renderItems();
    $("vrx-list").replaceChildren(...(state.vrx || []).map(vrxItem));
    chat.render();
  }
  for (const [id, m] of Object.entries(state.msgs)) msg(id, m);
}

function schedule() {
  clearTimeout(state.timer);
  if (document.hidden) return;
  state.timer = setTimeout(async () => {
    await loadQueue();
    await loadVisitRx();
    schedule();
  }, REFRESH_MS);
}

async function main() {
  initLang(renderAll);
  $("logout").addEventListener("click", logout);
  state.me = await requireLogin();
  $("who").textContent = state.me.username;
  if (state.me.role === "resident") {
    location.replace("/web/visit.html");
    return;
  }
  chat = new Chat({ list: $("chat-list"), form: $("chat-form"), status: $("chat-status"), me: state.me.link || "", names: state.names });
  $("queue-list").addEventListener("click", (ev) => {
    const btn = ev.target.closest("button[data-act=open]");
    if (btn) openVisit(btn.closest("li").dataset.visit);
  });
  $("queue-reload").addEventListener("click", loadQueue);
  $("confirm").addEventListener("click", confirmRecord);
  $("end-form").addEventListener("submit", endVisit);
  $("rx-form").addEventListener("input", itemInput);
  $("rx-items").addEventListener("click", itemClick);
  $("rx-add").addEventListener("click", addItem);
  $("rx-form").addEventListener("submit", sign);
  document.addEventListener("visibilitychange", schedule);
  await loadQueue();
  const want = new URLSearchParams(location.search).get("visit");
  if (want) await openVisit(want);
  schedule();
}

main();
