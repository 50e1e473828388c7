// visit.js - a resident's internet-hospital page: starts a follow-up visit (复诊) with a doctor
// of an institution for a condition among their diagnoses (or with an uploaded record the
// doctor confirms), for themself or a ward (POST /api/ih/visits; a refusal as the server
// words it, with the way to booking for a first visit); their visits (GET /api/ih/visits) and
// the chat of one (text and images); their prescriptions (GET /api/rx/prescriptions): state,
// drugs, amount, the pharmacist's decision, the redemption code and its QR once approved
// (GET /api/rx/prescriptions/{id}), the choice of pharmacy, pickup or delivery with an address
// (POST .../pharmacy), and the delivery order as it goes.
import { api, drawSvg, el, errorText, initLang, logout, patientName, requireLogin, say, t } from "./common.js";
import { entries, fillSelect, fmtWhen, label, rememberName } from "./bookutil.js";
import {
  Chat, KIND_SYSTEM, PHARMACY_KINDS, deliveryBlock, fileBase64, findingsList,
  itemsList, money, refNames, refusalCodes, reviewBlock,
} from "./ihutil.js";

const $ = (id) => document.getElementById(id);
const RECORD = "record"; // the condition option "another, with a record"
const LIVE = new Set(["pending", "open"]);
const REFRESH_MS = 5000;

const state = {
  me: null,
  patients: [], // me first, then my wards
  diagnoses: {}, // Patient ref -> [{key, system, code, display, basis, org}]
  roles: [], // PractitionerRole resources of doctors
  orgs: [], // [ref, name] of institutions with doctors
  pharmacies: [], // [ref, name]
  names: {},
  visits: null,
  current: null, // the visit id whose chat is open
  rx: null, // prescriptions (list form)
  details: {}, // id -> the full form
  choice: {}, // id -> {pharmacy, mode, address}: the form as the resident fills it
  msgs: {},
  timer: null,
};
let chat;

function msg(id, m) {
  state.msgs[id] = m;
  say($(id), m ? (m.key ? t(m.key, ...(m.args || [])) : m.text) : "", m ? m.kind : "");
}

function patientRef() {
  return $("who").value || "Patient/" + state.me.patient;
}

// ---- the directory: my patients, their diagnoses, the doctors ----

function codingOf(cc) {
  return ((cc && cc.coding) || []).find((c) => c.code) || null;
}

async function loadDiagnoses(pref) {
  if (state.diagnoses[pref]) return;
  const [conds, encs] = await Promise.all([
    api("GET", "/fhir/R4/Condition?patient=" + encodeURIComponent(pref) + "&_count=100"),
    api("GET", "/fhir/R4/Encounter?patient=" + encodeURIComponent(pref) + "&_count=100"),
  ]);
  const out = new Map();
  for (const c of entries(conds.body, "Condition")) {
    const cd = codingOf(c.code);
    const ver = codingOf(c.verificationStatus);
    if (!cd || (ver && ["refuted", "entered-in-error"].includes(ver.code))) continue;
    const role = c.recorder && c.recorder.reference;
    const org = (state.roles.find((r) => "PractitionerRole/" + r.id === role) || {}).organization;
    out.set(cd.system + "|" + cd.code, { system: cd.system, code: cd.code, display: (c.code && c.code.text) || cd.display || cd.code,
      basis: "Condition/" + c.id, org: org && org.reference, when: c.recordedDate || "" });
  }
  for (const e of entries(encs.body, "Encounter")) {
    if (e.class && e.class.code === "VR") continue;
    for (const rc of e.reasonCode || []) {
      const cd = codingOf(rc);
      if (!cd || out.has(cd.system + "|" + cd.code)) continue;
      out.set(cd.system + "|" + cd.code, { system: cd.system, code: cd.code, display: rc.text || cd.display || cd.code,
        basis: "Encounter/" + e.id, org: e.serviceProvider && e.serviceProvider.reference, when: (e.period && (e.period.end || e.period.start)) || "" });
    }
  }
  state.diagnoses[pref] = [...out.values()].map((d) => ({ ...d, key: d.system + "|" + d.code }));
}

async function loadDirectory() {
  const [pats, roles, orgs] = await Promise.all([
    api("GET", "/fhir/R4/Patient?_count=50"),
    api("GET", "/fhir/R4/PractitionerRole?_count=500"),
    api("GET", "/fhir/R4/Organization?_count=500"),
  ]);
  if (!roles.ok || !orgs.ok) throw new Error(errorText(roles.ok ? orgs : roles));
  const mine = "Patient/" + state.me.patient;
  state.patients = entries(pats.body, "Patient").sort((a, b) => ("Patient/" + b.id === mine) - ("Patient/" + a.id === mine));
  state.roles = entries(roles.body, "PractitionerRole").filter((r) => r.active !== false &&
    (r.code || []).some((c) => (c.coding || []).some((x) => x.code === "doctor")) && r.organization);
  const all = entries(orgs.body, "Organization").filter((o) => o.active !== false);
  for (const o of all) rememberName(o);
  const withDoctors = new Set(state.roles.map((r) => r.organization.reference));
  state.orgs = all.filter((o) => withDoctors.has("Organization/" + o.id)).map((o) => ["Organization/" + o.id, o.name || o.id]);
  state.pharmacies = all.filter((o) => (o.type || []).some((ty) => (ty.coding || [])
    .some((c) => c.system === KIND_SYSTEM && PHARMACY_KINDS.includes(c.code))))
    .map((o) => ["Organization/" + o.id, o.name || o.id]);
  for (const [ref, name] of [...state.orgs, ...state.pharmacies]) state.names[ref] = name;
  await refNames(state.roles.map((r) => "PractitionerRole/" + r.id), state.names);
}

// ---- starting a visit ----

function diagnosis() {
  return (state.diagnoses[patientRef()] || []).find((d) => d.key === $("condition").value) || null;
}

function renderDoctors() {
  const org = $("org").value;
  fillSelect($("doctor"), state.roles.filter((r) => r.organization.reference === org)
    .map((r) => ["PractitionerRole/" + r.id, state.names["PractitionerRole/" + r.id] || r.id]));
}

function renderStart() {
  const pats = state.patients.length ? state.patients : [{ id: state.me.patient, resourceType: "Patient" }];
  fillSelect($("who"), pats.map((p) => ["Patient/" + p.id,
    p.id === state.me.patient ? t("bk.who.self", patientName(p) || "") : patientName(p)]));
  const ds = state.diagnoses[patientRef()] || [];
  fillSelect($("condition"), [...ds.map((d) => [d.key, d.display + " (" + d.code + ")" + (d.when ? " · " + d.when : "")]),
    [RECORD, t("iv.cond.record")]]);
  $("record-fields").hidden = $("condition").value !== RECORD;
  fillSelect($("org"), state.orgs);
  renderDoctors();
}

async function whoChanged() {
  await loadDiagnoses(patientRef());
  renderStart();
  conditionChanged();
}

function conditionChanged() {
  const d = diagnosis();
  $("record-fields").hidden = $("condition").value !== RECORD;
  if (d && d.org && state.orgs.some(([r]) => r === d.org)) {
    $("org").value = d.org;
    renderDoctors();
  }
}

async function start(ev) {
  ev.preventDefault();
  msg("start-status", null);
  $("start-book").hidden = true;
  const body = { doctor: $("doctor").value };
  if (!body.doctor) return msg("start-status", { key: "iv.need.doctor", kind: "error" });
  if (patientRef() !== "Patient/" + state.me.patient) body.patient = patientRef();
  if ($("condition").value === RECORD) {
    const code = $("cond-code").value.trim(), name = $("cond-name").value.trim();
    const f = $("record").files[0];
    if (!code || !f) return msg("start-status", { key: "iv.need.record", kind: "error" });
    body.condition = { system: "http://hl7.org/fhir/sid/icd-10", code, display: name || code };
    body.record = { contentType: f.type || "application/pdf", data: await fileBase64(f), title: f.name };
  } else {
    const d = diagnosis();
    if (!d) return msg("start-status", { key: "iv.need.condition", kind: "error" });
    body.condition = { system: d.system, code: d.code, display: d.display };
  }
  $("start-submit").disabled = true;
  const res = await api("POST", "/api/ih/visits", { json: body });
  $("start-submit").disabled = false;
  if (!res.ok) {
    msg("start-status", { text: errorText(res), kind: "error" });
    const codes = refusalCodes(res);
    $("start-book").hidden = !codes.some((c) => c === "first-visit" || c === "no-diagnosis");
    return;
  }
  const v = res.body;
  msg("start-status", { key: v.status === "pending" ? "iv.started.pending" : "iv.started", kind: "ok" });
  $("cond-code").value = $("cond-name").value = "";
  $("record").value = "";
  await loadVisits();
  await openVisit(v.id);
}

// ---- my visits and the chat ----

function conditionText(v) {
  const code = v.condition && v.condition.code;
  const d = (state.diagnoses[v.patient] || []).find((x) => x.code === code);
  return d ? d.display : code || "";
}

function visitItem(v) {
  const who = state.patients.find((p) => "Patient/" + p.id === v.patient);
  return el("li", { "data-visit": v.id, "data-status": v.status },
    el("div", { class: "slot-head" }, el("strong", {}, conditionText(v) + " · " + (state.names[v.doctor] || "")),
      el("span", { class: "state", "data-state": v.status }, label("ih.visit.", v.status))),
    el("div", { class: "muted small" }, [state.names[v.org], fmtWhen(v.started), money(v.amountFen),
      v.patient !== "Patient/" + state.me.patient && who ? t("bk.for", patientName(who)) : ""].filter(Boolean).join(" · ")),
    v.endReason ? el("div", { class: "small" }, t("iv.end.reason", v.endReason)) : null,
    el("div", { class: "actions" }, el("button", { type: "button", class: state.current === v.id ? "" : "secondary", "data-act": "open" },
      LIVE.has(v.status) ? t("iv.open.chat") : t("iv.open.record"))));
}

function renderVisits() {
  const vs = state.visits;
  $("visits-none").hidden = !vs || vs.length > 0;
  $("visit-list").replaceChildren(...(vs || []).map(visitItem));
  const v = (vs || []).find((x) => x.id === state.current);
  $("chat").hidden = !v;
  if (!v) return;
  $("chat-with").textContent = conditionText(v) + " · " + (state.names[v.doctor] || "");
  const m = v.status === "pending" ? { key: "iv.state.pending" }
    : v.status === "finished" ? { key: "iv.state.finished" }
      : v.status === "redirected" ? { key: "iv.state.redirected", args: [v.endReason || ""] }
        : v.replyBy ? { key: "iv.state.open", args: [fmtWhen(v.replyBy)] } : null;
  msg("chat-state", m && { ...m, kind: v.status === "redirected" ? "error" : "" });
}

async function loadVisits() {
  const res = await api("GET", "/api/ih/visits");
  if (!res.ok || !res.body) return msg("visits-status", { text: errorText(res), kind: "error" });
  msg("visits-status", null);
  state.visits = res.body.visits || [];
  await Promise.all([...new Set(state.visits.map((v) => v.patient))].map(loadDiagnoses));
  await refNames(state.visits.flatMap((v) => [v.doctor, v.org]), state.names);
  renderVisits();
  const v = state.visits.find((x) => x.id === state.current);
  if (v) await chat.open(v);
}

async function openVisit(id) {
  state.current = id;
  renderVisits();
  const v = state.visits.find((x) => x.id === id);
  if (v) await chat.open(v);
  $("chat").scrollIntoView({ block: "start" });
}

// ---- my prescriptions ----

function choiceOf(id) {
  if (!state.choice[id]) state.choice[id] = { pharmacy: (state.pharmacies[0] || [""])[0], mode: "pickup", address: "" };
  return state.choice[id];
}

function choiceForm(p) {
  const c = choiceOf(p.id);
  const sel = el("select", { id: "ph-" + p.id, name: "pharmacy" });
  fillSelect(sel, state.pharmacies, false);
  sel.value = c.pharmacy;
  const radio = (mode) => el("label", { class: "check" },
    el("input", { type: "radio", name: "mode-" + p.id, value: mode, checked: c.mode === mode, "data-mode": mode }), t("rx.mode." + mode));
  return el("form", { class: "choose", "data-rx": p.id, novalidate: true },
    el("h3", {}, t("rx.choose")),
    el("label", { for: "ph-" + p.id }, t("rx.pharmacy")), sel,
    el("fieldset", {}, el("legend", {}, t("rx.mode")), el("div", { class: "checks" }, radio("pickup"), radio("delivery"))),
    el("div", { hidden: c.mode !== "delivery" },
      el("label", { for: "addr-" + p.id }, t("rx.address")),
      el("textarea", { id: "addr-" + p.id, name: "address", rows: 2, autocomplete: "street-address" }, c.address)),
    el("button", { type: "submit" }, t("rx.choose.submit")));
}

function codeBlock(d) {
  if (!d || !d.code) return null;
  const qr = el("div", { class: "qr", "data-code": d.code });
  drawSvg(qr, d.qrSvg, t("rx.code.qr"));
  return el("div", { class: "code" },
    el("h3", { class: "center" }, t("rx.code")),
    qr,
    el("p", { class: "center redeem-code" }, d.code),
    d.validUntil ? el("p", { class: "center muted small" }, t("rx.valid.until", fmtWhen(d.validUntil))) : null);
}

function rxItem(p) {
  const d = state.details[p.id] || p;
  const order = d.deliveryOrder;
  const presented = !!(d.presented || order);
  const lines = [
    el("div", { class: "slot-head" }, el("strong", {}, fmtWhen(p.created) + " · " + (state.names[p.doctor] || "")),
      el("span", { class: "state", "data-state": d.status }, label("rx.status.", d.status))),
    itemsList(d.summary),
    el("div", { class: "small" }, [t("rx.amount", money(d.amountFen)), d.payment ? label("rx.pay.", d.payment) : ""].filter(Boolean).join(" · ")),
  ];
  if (d.status === "pending") lines.push(el("p", { class: "muted small" }, t("rx.wait.review")));
  if (d.status === "rejected") lines.push(el("p", { class: "small" }, t("rx.rejected.hint")));
  lines.push(reviewBlock(d, state.names));
  const warns = (d.warnings || []).filter((f) => f.severity === "warn");
  if (warns.length) lines.push(el("details", { class: "small" }, el("summary", {}, t("rx.warnings.patient", warns.length)), findingsList(warns)));
  if (d.status === "approved" && !presented) lines.push(codeBlock(d), choiceForm(p));
  else if (d.status === "approved") lines.push(codeBlock(d));
  if (d.pharmacy) lines.push(el("div", { class: "small" }, t("rx.at", state.names[d.pharmacy] || d.pharmacy, label("rx.mode.", d.delivery || "pickup"))));
  if (d.dispensed) lines.push(el("div", { class: "small" }, t("rx.dispensed.at", fmtWhen(d.dispensed))));
  if (order) lines.push(deliveryBlock(order));
  return el("li", { "data-rx": p.id, "data-status": d.status, "data-delivery": order ? order.status : "" }, ...lines);
}

function renderRx() {
  const list = state.rx;
  $("rx-none").hidden = !list || list.length > 0;
  const active = document.activeElement && $("rx-list").contains(document.activeElement) ? document.activeElement.id : null;
  $("rx-list").replaceChildren(...(list || []).map(rxItem));
  if (active && $(active)) $(active).focus();
}

async function loadRx() {
  const res = await api("GET", "/api/rx/prescriptions");
  if (!res.ok || !res.body) {
    if (res.status === 404 || res.status === 405) return; // not in this build yet
    return msg("rx-status", { text: errorText(res), kind: "error" });
  }
  const list = res.body.prescriptions || [];
  const wanted = list.filter((p) => p.status !== "pending" && p.status !== "rejected");
  const got = await Promise.all(wanted.map((p) => api("GET", "/api/rx/prescriptions/" + encodeURIComponent(p.id))));
  wanted.forEach((p, i) => { if (got[i].ok && got[i].body) state.details[p.id] = got[i].body; });
  await refNames(list.flatMap((p) => [p.doctor, p.pharmacy, p.review && p.review.reviewer]), state.names);
  const before = JSON.stringify([state.rx, wanted.map((p) => state.details[p.id])]);
  state.rx = list;
  if (JSON.stringify([state.rx, wanted.map((p) => state.details[p.id])]) !== before || !$("rx-list").children.length) renderRx();
}

function rxInput(ev) {
  const form = ev.target.closest("form.choose");
  if (!form) return;
  const c = choiceOf(form.dataset.rx);
  if (ev.target.name === "pharmacy") c.pharmacy = ev.target.value;
  if (ev.target.dataset.mode) {
    c.mode = ev.target.dataset.mode;
    form.querySelector("textarea").parentElement.hidden = c.mode !== "delivery";
  }
  if (ev.target.name === "address") c.address = ev.target.value;
}

async function choose(ev) {
  const form = ev.target.closest("form.choose");
  if (!form) return;
  ev.preventDefault();
  const id = form.dataset.rx;
  const c = choiceOf(id);
  if (c.mode === "delivery" && !c.address.trim()) return msg("rx-status", { key: "rx.need.address", kind: "error" });
  const body = { pharmacy: c.pharmacy, delivery: c.mode };
  if (c.mode === "delivery") body.address = c.address.trim();
  form.querySelector("button[type=submit]").disabled = true;
  const res = await api("POST", "/api/rx/prescriptions/" + encodeURIComponent(id) + "/pharmacy", { json: body });
  if (!res.ok) {
    form.querySelector("button[type=submit]").disabled = false;
    return msg("rx-status", { text: errorText(res), kind: "error" });
  }
  msg("rx-status", { key: c.mode === "delivery" ? "rx.chosen.delivery" : "rx.chosen.pickup", args: [state.names[c.pharmacy] || ""], kind: "ok" });
  await loadRx();
  renderRx();
}

// ---- the page ----

function renderAll() {
  renderStart();
  renderVisits();
  renderRx();
  if (chat && chat.visit) chat.render();
  for (const [id, m] of Object.entries(state.msgs)) msg(id, m);
}

function schedule() {
  clearTimeout(state.timer);
  if (document.hidden) return;
  state.timer = setTimeout(async () => {
    await Promise.all([loadVisits(), loadRx()]);
    schedule();
  }, REFRESH_MS);
}

async function main() {
  initLang(renderAll);
  $("logout").addEventListener("click", logout);
  state.me = await requireLogin();
  if (state.me.role !== "resident" || !state.me.patient) {
    location.replace("/web/staff.html");
    return;
  }
  chat = new Chat({ list: $("chat-list"), form: $("chat-form"), status: $("chat-status"), me: "Patient/" + state.me.patient, names: state.names });
  try {
    await loadDirectory();
    await loadDiagnoses(patientRef());
  } catch (e) {
    msg("page-status", { text: e.message, kind: "error" });
  }
  renderStart();
  conditionChanged();
  $("who").addEventListener("change", whoChanged);
  $("condition").addEventListener("change", conditionChanged);
  $("org").addEventListener("change", renderDoctors);
  $("start-form").addEventListener("submit", start);
  $("visit-list").addEventListener("click", (ev) => {
    const btn = ev.target.closest("button[data-act=open]");
    if (btn) openVisit(btn.closest("li").dataset.visit);
  });
  $("rx-list").addEventListener("input", rxInput);
  $("rx-list").addEventListener("change", rxInput);
  $("rx-list").addEventListener("submit", choose);
  $("rx-reload").addEventListener("click", async () => { await loadRx(); renderRx(); });
  document.addEventListener("visibilitychange", schedule);
  await Promise.all([loadVisits(), loadRx()]);
  renderRx();
  schedule();
}

main();
