// staff.js - the desk of health workers: find a resident by the text scanned from an
// electronic health card (POST /api/cards/verify), by identity number
// (GET /fhir/R4/Patient?identifier=) or by name (GET /fhir/R4/Patient?name=); and the queue
// of possible duplicates of the person index (GET /api/mpi/reviews,
// POST /api/mpi/reviews/decide).
import {
  api, el, errorText, genderText, initLang, logout, patientIdentity, patientName,
  requireLogin, say, t,
} from "./common.js";

const $ = (id) => document.getElementById(id);
const VERIFY_REASONS = ["expired", "signature", "replayed", "revoked", "malformed"];
const state = { me: null, verified: null, found: null, reviews: null, lookupMsg: null };

function roleText(role) {
  const k = "role." + role;
  return t(k) !== k ? t(k) : role || "";
}

function renderWho() {
  if (state.me) $("who").textContent = t("staff.who", state.me.username, roleText(state.me.role));
}

// ---- lookup ----

function lookupStatus(msg) {
  state.lookupMsg = msg;
  say($("lookup-status"), msg ? (msg.key ? t(msg.key, ...(msg.args || [])) : msg.text) : "", msg ? msg.kind : "");
}

function renderVerified() {
  const v = state.verified;
  const dl = $("verified");
  dl.hidden = !v;
  if (!v) return dl.replaceChildren();
  const rows = [
    ["me.name", v.name],
    ["me.gender", genderText(v.sex || v.gender)],
    ["me.birthdate", v.birthDate],
    ["me.identity", typeof v.identity === "object" && v.identity ? v.identity.value || "" : v.identity],
    ["lookup.person", v.person],
    ["lookup.card", v.card_number || v.card],
    ["lookup.patient", v.patient],
  ].filter(([, val]) => val);
  dl.replaceChildren(...rows.flatMap(([k, val]) => [el("dt", {}, t(k)), el("dd", { "data-key": k }, val)]));
}

function renderFound() {
  const list = $("lookup-results");
  const pats = state.found || [];
  list.replaceChildren(
    ...pats.map((p) =>
      el("li", { "data-patient": p.id },
        el("strong", {}, patientName(p) || p.id),
        el("div", {}, [genderText(p.gender), p.birthDate].filter(Boolean).join(" · ")),
        el("div", { class: "muted" }, patientIdentity(p)),
        el("div", { class: "muted" }, t("lookup.patient") + " " + p.id))));
}

// The reason of a refused card ("expired" ...), wherever the answer carries it.
function verifyReason(res) {
  const b = res.body || {};
  const cands = [b.reason];
  for (const i of b.issue || []) {
    cands.push(...((i.details && i.details.coding) || []).map((c) => c.code));
    cands.push(...(i.expression || []), i.code);
    if (i.diagnostics) cands.push(...VERIFY_REASONS.filter((r) => i.diagnostics.includes(r)));
  }
  return cands.find((c) => VERIFY_REASONS.includes(c)) || null;
}

async function verify(ev) {
  ev.preventDefault();
  state.found = null;
  state.verified = null;
  renderFound();
  const content = $("scan-content").value.trim();
  if (!content) return $("scan-content").focus();
  const res = await api("POST", "/api/cards/verify", { json: { content } });
  if (res.ok && res.body) {
    state.verified = res.body;
    lookupStatus({ key: "lookup.scan.ok", kind: "ok" });
    $("scan-content").value = "";
  } else {
    const reason = verifyReason(res);
    lookupStatus(reason ? { key: "verify.reason." + reason, kind: "error" } : { text: errorText(res), kind: "error" });
  }
  renderVerified();
}

async function search(query) {
  state.verified = null;
  renderVerified();
  const res = await api("GET", "/fhir/R4/Patient?" + query + "&_count=50");
  if (!res.ok || !res.body) {
    state.found = null;
    lookupStatus({ text: errorText(res), kind: "error" });
  } else {
    state.found = (res.body.entry || []).map((e) => e.resource).filter((r) => r && r.resourceType === "Patient");
    lookupStatus(state.found.length ? { key: "lookup.count", args: [state.found.length], kind: "ok" } : { key: "lookup.none", kind: "" });
  }
  renderFound();
}

function byId(ev) {
  ev.preventDefault();
  const v = $("id-number").value.trim().toUpperCase();
  if (!v) return $("id-number").focus();
  search("identifier=" + encodeURIComponent(v));
}

function byName(ev) {
  ev.preventDefault();
  const v = $("name").value.trim();
  if (!v) return $("name").focus();
  search("name=" + encodeURIComponent(v));
}

// ---- the review queue ----

// A summary from the index: text, or an object of a record's facts.
function summary(s) {
  if (!s) return "";
  if (typeof s === "string") return s;
  const parts = [s.name, genderText(s.gender || s.sex), s.birthDate, s.region, s.identity || s.identifier, s.phone]
    .filter((x) => x && typeof x === "string");
  return parts.length ? parts.join(" · ") : JSON.stringify(s);
}

function gradeText(g) {
  const k = "grade." + g;
  return t(k) !== k ? t(k) : g || "";
}

function renderReviews() {
  const list = $("review-list");
  const items = state.reviews;
  $("reviews-none").hidden = !items || items.length > 0;
  list.replaceChildren(
    ...(items || []).map((r) => {
      const score = typeof r.score === "number" ? r.score.toFixed(1) : r.score;
      return el("li", { "data-patient": r.patient, "data-person": r.person },
        el("div", { class: "pair" },
          el("div", {}, el("strong", {}, t("reviews.record")), el("div", {}, summary(r.patient_summary)),
            el("div", { class: "muted" }, r.patient)),
          el("div", {}, el("strong", {}, t("reviews.person")), el("div", {}, summary(r.person_summary)),
            el("div", { class: "muted" }, r.person))),
        el("p", { class: "muted" }, t("reviews.score", score ?? "", gradeText(r.grade))),
        el("div", { class: "actions" },
          el("button", { type: "button", "data-decision": "link" }, t("reviews.link")),
          el("button", { type: "button", class: "secondary", "data-decision": "no-match" }, t("reviews.nomatch"))));
    }));
}

async function loadReviews() {
  const res = await api("GET", "/api/mpi/reviews");
  // Only record stewards work the queue: the others do not see it at all.
  $("reviews").hidden = res.status === 403;
  if (res.status === 403) return;
  if (res.ok && res.body) {
    state.reviews = res.body.reviews || [];
    say($("reviews-status"), "");
  } else {
    state.reviews = null;
    say($("reviews-status"), errorText(res), "error");
  }
  renderReviews();
}

async function decide(ev) {
  const btn = ev.target.closest("button[data-decision]");
  if (!btn) return;
  const li = btn.closest("li");
  const decision = btn.dataset.decision;
  for (const b of li.querySelectorAll("button")) b.disabled = true;
  const res = await api("POST", "/api/mpi/reviews/decide", {
    json: { patient: li.dataset.patient, person: li.dataset.person, decision },
  });
  if (res.ok) {
    state.reviews = (state.reviews || []).filter((r) => !(r.patient === li.dataset.patient && r.person === li.dataset.person));
    renderReviews();
    say($("reviews-status"), t("reviews.done." + decision), "ok");
  } else {
    for (const b of li.querySelectorAll("button")) b.disabled = false;
    say($("reviews-status"), errorText(res), "error");
  }
}

function renderAll() {
  renderWho();
  if (state.lookupMsg) lookupStatus(state.lookupMsg);
  renderVerified();
  renderFound();
  renderReviews();
}

async function main() {
  initLang(renderAll);
  $("logout").addEventListener("click", logout);
  state.me = await requireLogin();
  if (state.me.role === "resident") {
    location.replace("/web/resident.html");
    return;
  }
  renderWho();
  $("scan").addEventListener("submit", verify);
  $("by-id").addEventListener("submit", byId);
  $("by-name").addEventListener("submit", byName);
  $("review-list").addEventListener("click", decide);
  $("reviews-reload").addEventListener("click", loadReviews);
  await loadReviews();
}

main();
