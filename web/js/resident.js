// resident.js - the resident's page: who I am (GET /auth/me, my Patient), my electronic
// health card (issued here when I have none), its live QR code (GET /api/cards/{id}/qr, drawn
// from its SVG and fetched again before refresh_at) and its usage log (GET /api/cards/{id}/uses).
import {
  api, call, drawSvg, el, errorText, fmtClock, fmtTime, genderText, initLang, logout,
  patientIdentity, patientName, requireLogin, say, t,
} from "./common.js";

const $ = (id) => document.getElementById(id);
const MIN_REFRESH_MS = 2000;
const MAX_REFRESH_MS = 10 * 60 * 1000;

const state = { me: null, patient: null, card: null, qr: null, uses: null, timer: null, orgNames: {} };

function renderMe() {
  const p = state.patient;
  const name = p ? patientName(p) : "";
  $("greeting").textContent = name ? t("me.greeting", name) : t("me.title");
  $("me-name").textContent = name;
  $("me-gender").textContent = p ? genderText(p.gender) : "";
  $("me-birthdate").textContent = (p && p.birthDate) || "";
  $("me-identity").textContent = p ? patientIdentity(p) : "";
  $("me-username").textContent = state.me ? state.me.username : "";
  $("me-nopatient").hidden = !!state.me.patient;
}

function renderCard() {
  const c = state.card;
  $("card-none").hidden = !!c || !state.me.patient;
  $("card-show").hidden = !c;
  $("uses").hidden = !c;
  if (!c) return;
  $("card-number").textContent = grouped(c.number || c.id);
  const sk = "card.status." + c.status;
  $("card-status").textContent = t(sk) !== sk ? t(sk) : c.status || "";
  renderQr();
}

function renderQr() {
  const q = state.qr;
  const box = $("qr");
  if (!q) {
    box.replaceChildren();
    $("qr-until").textContent = "";
    return;
  }
  drawSvg(box, q.svg, t("card.qr.label"));
  box.dataset.expiresAt = q.expires_at || "";
  $("qr-until").textContent = q.expires_at ? t("card.qr.until", fmtClock(q.expires_at)) : "";
}

function textOf(prefix, v) {
  const k = prefix + v;
  return v && t(k) !== k ? t(k) : v || "";
}

// Card numbers are long: shown in groups of four, like a bank card.
function grouped(number) {
  return String(number || "").replace(/(.{4})(?=.)/g, "$1 ");
}

function renderUses() {
  const uses = state.uses || [];
  $("uses-none").hidden = uses.length > 0;
  $("uses-list").replaceChildren(
    ...uses.map((u) =>
      el("li", {},
        el("div", {}, el("time", { datetime: u.at }, fmtTime(u.at)), " · ", textOf("role.", u.role),
          " · ", el("strong", {}, textOf("uses.result.", u.result))),
        el("div", { class: "muted" }, state.orgNames[u.organization] || u.organization || ""))));
}

// The names of the organisations in the usage log (the directory is readable by residents).
async function loadOrgNames(uses) {
  const refs = [...new Set(uses.map((u) => u.organization).filter((o) => /^Organization\/[A-Za-z0-9.-]+$/.test(o || "")))];
  await Promise.all(refs.filter((r) => !(r in state.orgNames)).map(async (r) => {
    const res = await api("GET", "/fhir/R4/" + r);
    state.orgNames[r] = res.ok && res.body && res.body.name ? res.body.name : r;
  }));
}

function renderAll() {
  renderMe();
  renderCard();
  renderUses();
}

// ---- the live QR code ----

function scheduleQr() {
  clearTimeout(state.timer);
  state.timer = null;
  if (!state.qr || !state.card) return;
  const at = Date.parse(state.qr.refresh_at || state.qr.expires_at || "");
  let wait = isNaN(at) ? 30000 : at - Date.now();
  wait = Math.min(Math.max(wait, MIN_REFRESH_MS), MAX_REFRESH_MS);
  state.timer = setTimeout(loadQr, wait);
}

async function loadQr() {
  if (!state.card) return;
  const res = await api("GET", "/api/cards/" + encodeURIComponent(state.card.id) + "/qr");
  if (res.ok && res.body) {
    state.qr = res.body;
    say($("card-error"), "");
  } else {
    state.qr = null;
    say($("card-error"), errorText(res), "error");
  }
  renderQr();
  scheduleQr();
}

async function loadUses() {
  if (!state.card) return;
  const res = await api("GET", "/api/cards/" + encodeURIComponent(state.card.id) + "/uses");
  if (res.ok && res.body) {
    state.uses = res.body.uses || [];
    await loadOrgNames(state.uses);
    say($("uses-error"), "");
  } else {
    say($("uses-error"), errorText(res), "error");
  }
  renderUses();
}

// ---- the card ----

// My own card among those listed (mine and my wards'): the active one of my Patient.
function pickCard(cards) {
  const mine = "Patient/" + state.me.patient;
  const active = cards.filter((c) => !c.status || c.status === "active");
  return active.find((c) => c.patient === mine) || active.find((c) => !c.patient) || null;
}

async function loadCard() {
  const res = await api("GET", "/api/cards");
  if (!res.ok) {
    say($("card-error"), errorText(res), "error");
    $("card-none").hidden = true;
    return;
  }
  state.card = pickCard((res.body && res.body.cards) || []);
  renderCard();
  if (state.card) await Promise.all([loadQr(), loadUses()]);
}

async function issueCard() {
  const btn = $("card-issue");
  btn.disabled = true;
  const res = await api("POST", "/api/cards", { json: { patient: "Patient/" + state.me.patient } });
  btn.disabled = false;
  if (res.ok || res.status === 409) {
    if (res.ok) say($("page-status"), t("card.issued"), "ok");
    await loadCard();
  } else {
    say($("card-error"), errorText(res), "error");
  }
}

async function main() {
  initLang(renderAll);
  $("logout").addEventListener("click", logout);
  state.me = await requireLogin();
  if (state.me.role !== "resident") {
    location.replace("/web/staff.html");
    return;
  }
  if (state.me.patient) {
    try {
      state.patient = await call("GET", "/fhir/R4/Patient/" + encodeURIComponent(state.me.patient));
    } catch (e) {
      say($("page-status"), e.message, "error");
    }
  }
  renderMe();
  $("card-issue").addEventListener("click", issueCard);
  $("qr-refresh").addEventListener("click", loadQr);
  $("uses-reload").addEventListener("click", loadUses);
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState !== "visible" || !state.qr) return;
    const at = Date.parse(state.qr.refresh_at || "");
    if (!isNaN(at) && at <= Date.now()) loadQr();
  });
  if (state.me.patient) await loadCard();
  else renderCard();
}

main();
