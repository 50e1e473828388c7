// desk.js - the desk of an institution on the day of the visits: its bookings of the day
// (GET /api/booking/desk), each checked in ($checkin) and completed ($complete) with a button;
// and check-in by the resident's health card: the scanned text is verified
// (POST /api/cards/verify), which names the patient, whose booking of today at this
// institution is checked in.
import { api, el, errorText, initLang, logout, requireLogin, say, t } from "./common.js";
import { fmtHm, label, localDay, namesOf, parameters } from "./bookutil.js";

const $ = (id) => document.getElementById(id);
const VERIFY_REASONS = ["expired", "signature", "replayed", "revoked", "malformed"];

const state = { me: null, day: null, bookings: null, names: {}, msgs: {} };

function msg(id, m) {
  state.msgs[id] = m;
  say($(id), m ? (m.key ? t(m.key, ...(m.args || [])) : m.text) : "", m ? m.kind : "");
}

function item(b) {
  const actions = [];
  if (b.state === "booked") actions.push(el("button", { type: "button", "data-act": "checkin" }, t("desk.checkin")));
  if (b.state === "arrived") actions.push(el("button", { type: "button", class: "secondary", "data-act": "complete" }, t("desk.complete")));
  return el("li", { "data-appointment": b.appointment, "data-patient": b.patient, "data-state": b.state },
    el("div", { class: "slot-head" }, el("strong", {}, fmtHm(b.start) + "–" + fmtHm(b.end) + " " + (b.name || b.patient)),
      el("span", { class: "state", "data-state": b.state }, label("bk.state.", b.state))),
    el("div", { class: "muted" }, [state.names[b.service], state.names[b.practitioner], label("bk.channel.", b.channel)].filter(Boolean).join(" · ")),
    actions.length ? el("div", { class: "actions" }, actions) : null);
}

function render() {
  const list = state.bookings;
  $("day-none").hidden = !list || list.length > 0;
  $("day-list").replaceChildren(...(list || []).map(item));
}

async function fetchDay(day) {
  const res = await api("GET", "/api/booking/desk?date=" + encodeURIComponent(day));
  if (!res.ok || !res.body) return { error: errorText(res) };
  const list = res.body.bookings || [];
  await namesOf(list.flatMap((b) => [b.service, b.practitioner]), state.names);
  return { list };
}

async function load(ev) {
  if (ev) ev.preventDefault();
  state.day = $("day-date").value || localDay();
  const got = await fetchDay(state.day);
  if (got.error) {
    state.bookings = null;
    msg("day-status", { text: got.error, kind: "error" });
  } else {
    state.bookings = got.list;
    msg("day-status", null);
  }
  render();
}

async function change(appt, op) {
  return api("POST", "/fhir/R4/" + appt + "/$" + op, { json: parameters({}) });
}

async function listAction(ev) {
  const btn = ev.target.closest("button[data-act]");
  if (!btn) return;
  const li = btn.closest("li");
  btn.disabled = true;
  const res = await change(li.dataset.appointment, btn.dataset.act);
  const b = (state.bookings || []).find((x) => x.appointment === li.dataset.appointment) || {};
  if (res.ok) msg("day-status", { key: "desk.done." + btn.dataset.act, args: [b.name || b.patient || ""], kind: "ok" });
  else msg("day-status", { text: errorText(res), kind: "error" });
  await load();
}

// The reason of a refused card ("expired" ...), wherever the answer carries it.
function verifyReason(res) {
  const b = res.body || {};
  const cands = [b.reason];
  for (const i of b.issue || []) cands.push(...((i.details && i.details.coding) || []).map((c) => c.code));
  return cands.find((c) => VERIFY_REASONS.includes(c)) || null;
}

async function scan(ev) {
  ev.preventDefault();
  const content = $("scan-content").value.trim();
  if (!content) return $("scan-content").focus();
  const v = await api("POST", "/api/cards/verify", { json: { content } });
  $("scan-content").value = "";
  if (!v.ok || !v.body) {
    const reason = verifyReason(v);
    return msg("scan-status", reason ? { key: "verify.reason." + reason, kind: "error" } : { text: errorText(v), kind: "error" });
  }
  const who = v.body.name || v.body.patient;
  const today = localDay();
  const got = await fetchDay(today);
  if (got.error) return msg("scan-status", { text: got.error, kind: "error" });
  const theirs = got.list.filter((b) => b.patient === v.body.patient);
  const next = theirs.find((b) => b.state === "booked");
  if (!next) {
    const done = theirs.find((b) => b.state === "arrived");
    return msg("scan-status", done ? { key: "desk.scan.already", args: [who, fmtHm(done.start)], kind: "" }
      : { key: "desk.scan.none", args: [who], kind: "error" });
  }
  const res = await change(next.appointment, "checkin");
  if (!res.ok) return msg("scan-status", { text: errorText(res), kind: "error" });
  msg("scan-status", { key: "desk.scan.ok", args: [who, fmtHm(next.start), state.names[next.service] || ""], kind: "ok" });
  if (state.day === today) await load();
}

function renderAll() {
  render();
  for (const [id, m] of Object.entries(state.msgs)) msg(id, m);
}

async function main() {
  initLang(renderAll);
  $("logout").addEventListener("click", logout);
  state.me = await requireLogin();
  if (state.me.role === "resident") {
    location.replace("/web/booking.html");
    return;
  }
  $("who").textContent = state.me.username;
  if (state.me.organization) {
    await namesOf([state.me.organization], state.names);
    $("org-name").textContent = state.names[state.me.organization];
  }
  $("day-date").value = localDay();
  $("day-form").addEventListener("submit", load);
  $("day-list").addEventListener("click", listAction);
  $("scan").addEventListener("submit", scan);
  await load();
}

main();
