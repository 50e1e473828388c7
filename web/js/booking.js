// booking.js - a resident books: finds slots by institution, department, doctor and date
// (GET /api/slots, with the places the online channel can take now and when the next wave
// opens), books one directly ($book) or holds it first ($hold, with its countdown) and confirms,
// joins the waiting list of a full slot (POST /api/booking/waitlist), for themself or a ward;
// and sees their appointments (GET /api/booking/me): upcoming and past, each with its state,
// cancelled here ($cancel) with the deadline for a free cancellation shown, and a suspension of
// online booking with its reason and end. Refusals are shown as the server words them.
import { api, el, errorText, initLang, logout, patientName, requireLogin, say, t } from "./common.js";
import {
  entries, fillSelect, fmtDay, fmtHm, fmtWhen, countdown, feeLevel, label, localDay, namesOf,
  parameters, paramValue, price, rememberName,
} from "./bookutil.js";

const $ = (id) => document.getElementById(id);
const ACTIVE = new Set(["held", "booked", "arrived"]);

const state = {
  me: null,
  patients: [], // Patient resources: me first, then my wards
  orgs: [], // [ref, name] of institutions with departments
  services: [], // HealthcareService resources
  doctors: {}, // org ref -> [[practitioner ref, name]]
  names: {}, // ref -> name
  query: null, // the last search
  slots: null,
  holds: {}, // slot ref -> {hold, expires, patient}
  mine: null, // {bookings, suspensions}
  openDays: null, // the days shown open
  cancelling: null, // the appointment whose cancellation waits for a confirmation
  bookMsg: null,
  mineMsg: null,
  timer: null,
};

// A message: {key, args} (translated when shown) or {text} (the server's words), and a kind.
function show(node, msg) {
  say(node, msg ? (msg.key ? t(msg.key, ...(msg.args || [])) : msg.text) : "", msg ? msg.kind : "");
}

function bookMsg(msg) {
  state.bookMsg = msg;
  show($("book-status"), msg);
}

function mineMsg(msg) {
  state.mineMsg = msg;
  show($("mine-status"), msg);
}

function patientRef() {
  return $("who").value || (state.me.patient ? "Patient/" + state.me.patient : "");
}

function whoName(ref) {
  const p = state.patients.find((x) => "Patient/" + x.id === ref);
  return p ? patientName(p) : ref;
}

// ---- the search form ----

function renderForm() {
  fillSelect($("who"), state.patients.map((p) => ["Patient/" + p.id,
    p.id === state.me.patient ? t("bk.who.self", patientName(p)) : patientName(p)]));
  fillSelect($("org"), state.orgs);
  const org = $("org").value;
  const services = state.services.filter((s) => s.providedBy && s.providedBy.reference === org);
  fillSelect($("service"), [["", t("bk.service.any")], ...services.map((s) =>
    ["HealthcareService/" + s.id, [s.name, label("bk.fee.", feeLevel(s)), price(s)].filter(Boolean).join(" · ")])]);
  fillSelect($("doctor"), [["", t("bk.doctor.any")], ...(state.doctors[org] || [])]);
}

async function loadDoctors(org) {
  if (!org || state.doctors[org]) return;
  const res = await api("GET", "/fhir/R4/PractitionerRole?organization=" + encodeURIComponent(org) + "&_count=100");
  const refs = entries(res.body, "PractitionerRole").filter((r) => r.active !== false)
    .map((r) => r.practitioner && r.practitioner.reference).filter(Boolean);
  await namesOf(refs, state.names);
  state.doctors[org] = [...new Set(refs)].map((r) => [r, state.names[r]]);
}

async function loadDirectory() {
  const [pats, svcs, orgs] = await Promise.all([
    api("GET", "/fhir/R4/Patient?_count=50"),
    api("GET", "/fhir/R4/HealthcareService?_count=500"),
    api("GET", "/fhir/R4/Organization?_count=200"),
  ]);
  if (!svcs.ok || !orgs.ok) throw new Error(errorText(svcs.ok ? orgs : svcs));
  const mine = "Patient/" + state.me.patient;
  state.patients = entries(pats.body, "Patient").sort((a, b) => ("Patient/" + b.id === mine) - ("Patient/" + a.id === mine));
  state.services = entries(svcs.body, "HealthcareService").filter((s) => s.active !== false);
  for (const r of [...state.services, ...entries(orgs.body, "Organization")]) rememberName(r);
  const withServices = new Set(state.services.map((s) => s.providedBy && s.providedBy.reference));
  state.orgs = entries(orgs.body, "Organization").filter((o) => withServices.has("Organization/" + o.id))
    .map((o) => ["Organization/" + o.id, o.name || o.id]);
  for (const s of state.services) state.names["HealthcareService/" + s.id] = s.name;
  for (const [ref, name] of state.orgs) state.names[ref] = name;
}

// ---- slots ----

function slotStateText(s, now) {
  if (s.status !== "open") return t("bk.closed");
  if (Date.parse(s.start) <= now) return t("bk.started");
  if (s.remaining > 0) return t("bk.remaining", s.remaining);
  if (s.opens) return t("bk.opens", fmtWhen(s.opens));
  return t("bk.full");
}

function isFull(s, now) {
  return s.status === "open" && Date.parse(s.start) > now && !(s.remaining > 0) && !s.opens;
}

function slotItem(s, now) {
  const hold = state.holds[s.slot];
  const actions = [];
  if (hold && Date.parse(hold.expires) > now) {
    actions.push(el("span", { class: "countdown", "data-until": hold.expires }, t("bk.hold.left", countdown(hold.expires, now))),
      el("button", { type: "button", "data-act": "confirm" }, t("bk.confirm")));
  } else if (s.status === "open" && Date.parse(s.start) > now && s.remaining > 0) {
    actions.push(el("button", { type: "button", "data-act": "book" }, t("bk.book")),
      el("button", { type: "button", class: "secondary", "data-act": "hold" }, t("bk.hold")));
  } else if (isFull(s, now)) {
    actions.push(el("button", { type: "button", class: "secondary", "data-act": "wait" }, t("bk.wait")));
  }
  const who = [state.names[s.service], state.names[s.practitioner], label("bk.fee.", s.feeLevel)].filter(Boolean);
  return el("li", { "data-slot": s.slot, class: "slot" },
    el("div", {},
      el("div", {}, el("strong", {}, fmtHm(s.start) + "–" + fmtHm(s.end)), " ",
        el("span", { class: "remain", "data-remaining": s.remaining }, slotStateText(s, now))),
      el("div", { class: "muted small" }, who.join(" · "))),
    actions.length ? el("div", { class: "actions" }, actions) : null);
}

function renderSlots() {
  const box = $("slots");
  const slots = state.slots;
  $("slots-none").hidden = !slots || slots.length > 0;
  if (!slots) return box.replaceChildren();
  const now = Date.now();
  const days = new Map();
  for (const s of slots) {
    const d = localDay(Date.parse(s.start));
    if (!days.has(d)) days.set(d, []);
    days.get(d).push(s);
  }
  // One day at a time on a phone: the first day with a place (or a hold) is open.
  const open = [...days.keys()].find((d) => days.get(d).some((s) => s.remaining > 0 || state.holds[s.slot]))
    || [...days.keys()][0];
  if (!state.openDays) state.openDays = new Set([open]);
  box.replaceChildren(...[...days].map(([d, list]) => {
    const left = list.filter((s) => s.status === "open" && Date.parse(s.start) > now)
      .reduce((n, s) => n + (s.remaining > 0 ? s.remaining : 0), 0);
    const det = el("details", { class: "day", "data-day": d, open: state.openDays.has(d) },
      el("summary", {}, el("strong", {}, fmtDay(list[0].start)), " ", el("span", { class: "muted" }, left ? t("bk.remaining", left) : t("bk.day.none"))),
      el("ul", { class: "plain slots" }, list.map((s) => slotItem(s, now))));
    det.addEventListener("toggle", () => {
      if (det.open) state.openDays.add(d);
      else state.openDays.delete(d);
    });
    return det;
  }));
}

async function search(ev) {
  if (ev) ev.preventDefault();
  const q = { org: $("org").value, service: $("service").value, doctor: $("doctor").value, date: $("date").value || localDay() };
  let path = "/api/slots?days=7&date=" + encodeURIComponent(q.date);
  if (q.doctor) path += "&practitioner=" + encodeURIComponent(q.doctor);
  else if (q.service) path += "&service=" + encodeURIComponent(q.service);
  else if (q.org) path += "&org=" + encodeURIComponent(q.org);
  else return;
  if (ev) state.openDays = null;
  state.query = q;
  const res = await api("GET", path);
  if (!res.ok || !res.body) {
    state.slots = null;
    bookMsg({ text: errorText(res), kind: "error" });
    return renderSlots();
  }
  let slots = res.body.slots || [];
  if (q.doctor && q.service) slots = slots.filter((s) => s.service === q.service);
  await namesOf(slots.flatMap((s) => [s.service, s.practitioner]), state.names);
  state.slots = slots;
  if (ev) bookMsg(null);
  renderSlots();
}

async function refreshSlots() {
  if (state.query) await search();
}

function booked(appt, slot) {
  const s = (state.slots || []).find((x) => x.slot === slot) || {};
  const when = appt && appt.start ? fmtWhen(appt.start) : s.start ? fmtWhen(s.start) : "";
  bookMsg({ key: "bk.booked", args: [when, state.names[s.service] || ""], kind: "ok" });
}

async function slotAction(ev) {
  const btn = ev.target.closest("button[data-act]");
  if (!btn) return;
  const slot = btn.closest("li[data-slot]").dataset.slot;
  const act = btn.dataset.act;
  btn.disabled = true;
  let res;
  if (act === "book") {
    res = await api("POST", "/fhir/R4/Appointment/$book", { json: parameters({ slot, patient: patientRef() }) });
    if (res.ok) booked(res.body, slot);
  } else if (act === "hold") {
    res = await api("POST", "/fhir/R4/Appointment/$hold", { json: parameters({ slot, patient: patientRef() }) });
    if (res.ok) {
      state.holds[slot] = { hold: paramValue(res.body, "hold"), expires: paramValue(res.body, "expires") };
      bookMsg({ key: "bk.held", kind: "ok" });
    }
  } else if (act === "confirm") {
    const h = state.holds[slot];
    res = await api("POST", "/fhir/R4/Appointment/$book", { json: parameters({ hold: h && h.hold }) });
    delete state.holds[slot];
    if (res.ok) booked(res.body, slot);
  } else if (act === "wait") {
    res = await api("POST", "/api/booking/waitlist", { json: parameters({ slot, patient: patientRef() }) });
    if (res.ok) bookMsg({ key: "bk.waiting", kind: "ok" });
  }
  if (!res.ok) bookMsg({ text: errorText(res), kind: "error" });
  btn.disabled = false;
  await refreshSlots();
  if (act !== "wait") await loadMine();
}

// ---- my appointments ----

function bookingItem(b, now) {
  const upcoming = ACTIVE.has(b.state) && Date.parse(b.end) > now;
  const lines = [
    el("div", { class: "slot-head" }, el("strong", {}, fmtWhen(b.start) + "–" + fmtHm(b.end)),
      el("span", { class: "state", "data-state": b.state }, label("bk.state.", b.state))),
    el("div", {}, [state.names[b.org], state.names[b.service], state.names[b.practitioner]].filter(Boolean).join(" · ")),
    el("div", { class: "muted" }, [t("bk.for", whoName(b.patient)), label("bk.channel.", b.channel)].join(" · ")),
  ];
  if (b.late) lines.push(el("div", { class: "muted" }, t("bk.late")));
  const actions = [];
  if (upcoming && b.state === "booked" && b.appointment) {
    if (b.cancelBy)
      lines.push(el("div", { class: "muted deadline" },
        Date.parse(b.cancelBy) > now ? t("bk.cancel.by", fmtWhen(b.cancelBy)) : t("bk.cancel.late")));
    if (state.cancelling === b.appointment)
      actions.push(el("button", { type: "button", "data-act": "cancel-yes" }, t("bk.cancel.yes")),
        el("button", { type: "button", class: "secondary", "data-act": "cancel-no" }, t("bk.cancel.no")));
    else actions.push(el("button", { type: "button", class: "secondary", "data-act": "cancel" }, t("bk.cancel")));
  }
  if (upcoming && b.state === "held" && b.holdUntil && Date.parse(b.holdUntil) > now) {
    actions.push(el("span", { class: "countdown", "data-until": b.holdUntil }, t("bk.hold.left", countdown(b.holdUntil, now))),
      el("button", { type: "button", "data-act": "confirm-hold", "data-hold": b.hold }, t("bk.confirm")));
  }
  return el("li", { "data-appointment": b.appointment || "", "data-slot": b.slot, "data-state": b.state },
    ...lines, actions.length ? el("div", { class: "actions" }, actions) : null);
}

function renderMine() {
  const m = state.mine;
  const now = Date.now();
  const all = (m && m.bookings) || [];
  const upcoming = all.filter((b) => ACTIVE.has(b.state) && Date.parse(b.end) > now)
    .sort((a, b) => Date.parse(a.start) - Date.parse(b.start));
  const past = all.filter((b) => !upcoming.includes(b));
  $("upcoming").replaceChildren(...upcoming.map((b) => bookingItem(b, now)));
  $("past").replaceChildren(...past.map((b) => bookingItem(b, now)));
  $("upcoming-none").hidden = !m || upcoming.length > 0;
  $("past-none").hidden = !m || past.length > 0;
  $("suspensions").replaceChildren(...((m && m.suspensions) || []).map((s) =>
    el("p", { class: "status", "data-kind": "error", role: "alert" },
      t("bk.suspended", whoName(s.patient), fmtDay(s.until) + " " + fmtHm(s.until), s.reason || "", s.noShows ?? ""))));
}

async function loadMine() {
  const res = await api("GET", "/api/booking/me");
  if (!res.ok || !res.body) {
    mineMsg({ text: errorText(res), kind: "error" });
    return;
  }
  state.mine = res.body;
  await namesOf((res.body.bookings || []).flatMap((b) => [b.org, b.service, b.practitioner]), state.names);
  renderMine();
}

async function mineAction(ev) {
  const btn = ev.target.closest("button[data-act]");
  if (!btn) return;
  const li = btn.closest("li");
  const appt = li.dataset.appointment;
  const act = btn.dataset.act;
  if (act === "cancel" || act === "cancel-no") {
    state.cancelling = act === "cancel" ? appt : null;
    return renderMine();
  }
  btn.disabled = true;
  let res;
  if (act === "cancel-yes") {
    state.cancelling = null;
    const b = ((state.mine && state.mine.bookings) || []).find((x) => x.appointment === appt);
    const late = b && b.cancelBy && Date.parse(b.cancelBy) <= Date.now();
    res = await api("POST", "/fhir/R4/" + appt + "/$cancel", { json: parameters({}) });
    if (res.ok) mineMsg({ key: late ? "bk.cancelled.late" : "bk.cancelled", kind: "ok" });
  } else if (act === "confirm-hold") {
    res = await api("POST", "/fhir/R4/Appointment/$book", { json: parameters({ hold: btn.dataset.hold }) });
    if (res.ok) mineMsg({ key: "bk.booked", args: [fmtWhen(res.body.start), ""], kind: "ok" });
  }
  if (res && !res.ok) mineMsg({ text: errorText(res), kind: "error" });
  await loadMine();
  await refreshSlots();
}

// ---- the countdowns ----

function tick() {
  const now = Date.now();
  let lapsed = false;
  for (const e of document.querySelectorAll("[data-until]")) {
    if (Date.parse(e.dataset.until) <= now) lapsed = true;
    else e.textContent = t("bk.hold.left", countdown(e.dataset.until, now));
  }
  if (!lapsed) return;
  for (const [slot, h] of Object.entries(state.holds)) {
    if (Date.parse(h.expires) <= now) {
      delete state.holds[slot];
      bookMsg({ key: "bk.hold.lapsed", kind: "error" });
    }
  }
  renderSlots();
  renderMine();
}

function renderAll() {
  renderForm();
  renderSlots();
  renderMine();
  show($("book-status"), state.bookMsg);
  show($("mine-status"), state.mineMsg);
}

async function main() {
  initLang(renderAll);
  $("logout").addEventListener("click", logout);
  state.me = await requireLogin();
  if (state.me.role !== "resident") {
    location.replace("/web/staff.html");
    return;
  }
  $("date").value = localDay();
  // The handlers first: the form is never sent by the browser itself.
  $("org").addEventListener("change", async () => {
    await loadDoctors($("org").value);
    renderForm();
  });
  $("search").addEventListener("submit", search);
  $("slots").addEventListener("click", slotAction);
  $("upcoming").addEventListener("click", mineAction);
  $("mine-reload").addEventListener("click", loadMine);
  state.timer = setInterval(tick, 1000);
  try {
    await loadDirectory();
  } catch (e) {
    say($("page-status"), e.message, "error");
  }
  const params = new URLSearchParams(location.search);
  renderForm();
  if (params.get("org")) $("org").value = params.get("org");
  await loadDoctors($("org").value);
  renderForm();
  if (params.get("service")) $("service").value = params.get("service");
  await loadMine();
}

main();
