// schedules.js - an institution's schedules and its share of the slot pool: its departments
// (HealthcareService), its Schedules with their session templates and exceptions (those it
// publishes, and those whose slots are in the pool), a new Schedule with a session template and
// an exception (POST /fhir/R4/Schedule), slot generation (Schedule/$generate), the places of a
// department's slots per channel (GET /api/slots?channel=...) and the day's statistics
// (GET /api/booking/stats).
import { api, el, errorText, initLang, logout, requireLogin, say, t } from "./common.js";
import {
  CHANNELS, EXCEPTION_URL, SESSION_URL, WEEKDAYS, entries, feeLevel, fillSelect, fmtHm, fmtWhen,
  label, localDay, namesOf, price,
} from "./bookutil.js";

const $ = (id) => document.getElementById(id);
const SLOT_SUFFIX = /-\d{12}$/;

const state = {
  me: null, org: "", services: [], doctors: [], names: {}, schedules: [], quota: null, stats: null,
  msgs: {},
};

function msg(id, m) {
  state.msgs[id] = m;
  say($(id), m ? (m.key ? t(m.key, ...(m.args || [])) : m.text) : "", m ? m.kind : "");
}

// ---- departments ----

function renderServices() {
  $("services-none").hidden = state.services.length > 0;
  $("service-list").replaceChildren(...state.services.map((s) =>
    el("li", { "data-service": "HealthcareService/" + s.id },
      el("strong", {}, s.name || s.id),
      el("div", { class: "muted" }, [label("bk.fee.", feeLevel(s)), price(s), s.active === false ? t("sch.inactive") : ""]
        .filter(Boolean).join(" · ")))));
  const opts = state.services.map((s) => ["HealthcareService/" + s.id, s.name || s.id]);
  fillSelect($("s-service"), opts);
  fillSelect($("q-service"), opts);
  fillSelect($("s-doctor"), [["", t("sch.doctor.none")], ...state.doctors.map((r) => [r, state.names[r] || r])]);
  const days = $("s-days");
  const checked = new Set([...days.querySelectorAll("input:checked")].map((i) => i.value));
  days.replaceChildren(...WEEKDAYS.map((d) =>
    el("label", { class: "check" }, el("input", { type: "checkbox", value: d, checked: checked.has(d) }), t("sch.day." + d))));
}

async function loadServices() {
  const [svcs, roles] = await Promise.all([
    api("GET", "/fhir/R4/HealthcareService?organization=" + encodeURIComponent(state.org) + "&_count=200"),
    api("GET", "/fhir/R4/PractitionerRole?organization=" + encodeURIComponent(state.org) + "&_count=200"),
  ]);
  if (!svcs.ok) return msg("page-status", { text: errorText(svcs), kind: "error" });
  state.services = entries(svcs.body, "HealthcareService");
  for (const s of state.services) state.names["HealthcareService/" + s.id] = s.name;
  state.doctors = [...new Set(entries(roles.body, "PractitionerRole").filter((r) => r.active !== false)
    .map((r) => r.practitioner && r.practitioner.reference).filter(Boolean))];
  await namesOf(state.doctors, state.names);
  renderServices();
}

// ---- schedules ----

function sub(ext, name) {
  return (ext.extension || []).filter((e) => e.url === name);
}

function subValue(ext, name) {
  const e = sub(ext, name)[0];
  if (!e) return "";
  for (const [k, v] of Object.entries(e)) if (k.startsWith("value")) return v;
  return "";
}

function sessionText(ext) {
  const days = sub(ext, "day").map((d) => t("sch.day." + d.valueCode)).join(t("sch.list.sep"));
  return t("sch.session", days, String(subValue(ext, "start")).slice(0, 5), String(subValue(ext, "end")).slice(0, 5),
    subValue(ext, "sliceMinutes"), subValue(ext, "perSlice"));
}

function exceptionText(ext) {
  return t("sch.exception.text", subValue(ext, "start"), subValue(ext, "end"), subValue(ext, "reason"));
}

function renderSchedules() {
  const list = state.schedules;
  $("schedules-none").hidden = list.length > 0;
  $("schedule-list").replaceChildren(...list.map((s) => {
    const r = s.resource;
    const lines = [];
    for (const e of (r && r.extension) || []) {
      if (e.url === SESSION_URL) lines.push(el("div", { class: "session" }, sessionText(e)));
      if (e.url === EXCEPTION_URL) lines.push(el("div", { class: "exception muted" }, exceptionText(e)));
    }
    if (!r) lines.push(el("div", { class: "muted" }, t("sch.imported")));
    return el("li", { "data-schedule": s.id },
      el("strong", {}, [state.names[s.service] || s.service, state.names[s.practitioner]].filter(Boolean).join(" · ")),
      ...lines,
      el("div", { class: "muted" }, t("sch.id", s.id)),
      el("div", { class: "actions" },
        el("button", { type: "button", class: "secondary", "data-act": "generate" }, t("sch.generate"))));
  }));
}

function actorOf(r, type) {
  const a = ((r && r.actor) || []).find((x) => (x.reference || "").startsWith(type + "/"));
  return a ? a.reference : "";
}

async function loadSchedules() {
  const mine = new Set(state.services.map((s) => "HealthcareService/" + s.id));
  const res = await api("GET", "/fhir/R4/Schedule?_count=200");
  const list = entries(res.ok ? res.body : null, "Schedule")
    .filter((r) => mine.has(actorOf(r, "HealthcareService")))
    .map((r) => ({ id: r.id, resource: r, service: actorOf(r, "HealthcareService"), practitioner: actorOf(r, "Practitioner") }));
  // Schedules the institution's system or the platform loaded, which this account does not
  // hold: known by their slots in the pool.
  const seen = new Set(list.map((s) => s.id));
  const pools = await Promise.all([...mine].map((svc) =>
    api("GET", "/api/slots?days=14&service=" + encodeURIComponent(svc)).then((r) => [svc, r])));
  for (const [svc, r] of pools) {
    for (const slot of (r.ok && r.body && r.body.slots) || []) {
      const id = slot.slot.replace(/^Slot\//, "").replace(SLOT_SUFFIX, "");
      if (seen.has(id)) continue;
      seen.add(id);
      list.push({ id, resource: null, service: svc, practitioner: slot.practitioner || "" });
    }
  }
  await namesOf(list.map((s) => s.practitioner), state.names);
  state.schedules = list;
  renderSchedules();
}

async function generate(ev) {
  const btn = ev.target.closest("button[data-act=generate]");
  if (!btn) return;
  const id = btn.closest("li").dataset.schedule;
  btn.disabled = true;
  const res = await api("POST", "/fhir/R4/Schedule/" + encodeURIComponent(id) + "/$generate");
  btn.disabled = false;
  if (!res.ok) return msg("gen-status", { text: errorText(res), kind: "error" });
  const p = (n) => ((res.body.parameter || []).find((x) => x.name === n) || {});
  msg("gen-status", { key: "sch.generated", args: [p("created").valueInteger ?? 0, p("closed").valueInteger ?? 0, p("through").valueDate || ""], kind: "ok" });
}

// ---- a new schedule ----

function newSchedule() {
  const days = [...$("s-days").querySelectorAll("input:checked")].map((i) => i.value);
  const session = {
    url: SESSION_URL,
    extension: [
      ...days.map((d) => ({ url: "day", valueCode: d })),
      { url: "start", valueTime: $("s-start").value + ":00" },
      { url: "end", valueTime: $("s-end").value + ":00" },
      { url: "sliceMinutes", valuePositiveInt: Number($("s-slice").value) },
      { url: "perSlice", valuePositiveInt: Number($("s-per").value) },
    ],
  };
  const ext = [session];
  const xs = $("x-start").value, xe = $("x-end").value || $("x-start").value;
  if (xs)
    ext.push({ url: EXCEPTION_URL, extension: [{ url: "start", valueDate: xs }, { url: "end", valueDate: xe },
      { url: "reason", valueString: $("x-reason").value.trim() || t("sch.exception.default") }] });
  const actor = [{ reference: $("s-service").value }];
  if ($("s-doctor").value) actor.push({ reference: $("s-doctor").value });
  return { resourceType: "Schedule", active: true, actor, extension: ext };
}

async function create(ev) {
  ev.preventDefault();
  if (!$("s-service").value) return msg("create-status", { key: "sch.need.service", kind: "error" });
  if (!$("s-days").querySelector("input:checked")) return msg("create-status", { key: "sch.need.days", kind: "error" });
  if (!$("s-start").value || !$("s-end").value) return msg("create-status", { key: "sch.need.times", kind: "error" });
  const btn = ev.submitter || $("new-schedule").querySelector("button[type=submit]");
  btn.disabled = true;
  const res = await api("POST", "/fhir/R4/Schedule", { json: newSchedule() });
  btn.disabled = false;
  if (!res.ok) return msg("create-status", { text: errorText(res), kind: "error" });
  msg("create-status", { key: "sch.saved", args: [res.body.id], kind: "ok" });
  await loadSchedules();
}

// ---- places per channel ----

function renderQuota() {
  const q = state.quota;
  const table = $("quota-table");
  table.hidden = !q || !q.length;
  if (!q) return table.replaceChildren();
  const cell = (x) => x ? (x.remaining ?? 0) + (x.opens ? " (" + fmtWhen(x.opens) + ")" : "") : "—";
  table.replaceChildren(
    el("thead", {}, el("tr", {}, el("th", {}, t("sch.q.time")), el("th", {}, t("sch.q.capacity")), el("th", {}, t("sch.q.booked")),
      ...CHANNELS.map((c) => el("th", { "data-channel": c }, label("bk.channel.", c))))),
    el("tbody", {}, ...q.map((row) =>
      el("tr", { "data-slot": row.slot },
        el("td", {}, fmtHm(row.start) + "–" + fmtHm(row.end)), el("td", {}, row.capacity), el("td", {}, row.booked),
        ...CHANNELS.map((c) => el("td", { "data-channel": c }, cell(row.by[c])))))));
}

async function showQuota(ev) {
  ev.preventDefault();
  const svc = $("q-service").value, date = $("q-date").value || localDay();
  if (!svc) return;
  const got = await Promise.all(CHANNELS.map((c) =>
    api("GET", "/api/slots?days=1&service=" + encodeURIComponent(svc) + "&date=" + date + "&channel=" + c)));
  const bad = got.find((r) => !r.ok);
  if (bad) {
    state.quota = null;
    renderQuota();
    return msg("quota-status", { text: errorText(bad), kind: "error" });
  }
  const rows = new Map();
  got.forEach((r, i) => {
    for (const s of r.body.slots || []) {
      if (!rows.has(s.slot)) rows.set(s.slot, { ...s, by: {} });
      rows.get(s.slot).by[CHANNELS[i]] = s;
    }
  });
  state.quota = [...rows.values()];
  msg("quota-status", state.quota.length ? null : { key: "sch.q.none", kind: "" });
  renderQuota();
}

// ---- statistics ----

function pct(x) {
  return typeof x === "number" ? Math.round(x * 1000) / 10 + "%" : "—";
}

function renderStats() {
  const s = state.stats;
  const table = $("stats-table");
  table.hidden = !s;
  if (!s) return table.replaceChildren();
  const row = (name, r, cls) => el("tr", { class: cls || null, "data-service": r.service ? "HealthcareService/" + r.service : "total" },
    el("td", {}, name), el("td", { "data-col": "published" }, r.published),
    ...CHANNELS.map((c) => el("td", { "data-col": c }, (r.booked || {})[c] ?? 0)),
    el("td", { "data-col": "cancelled" }, r.cancelled), el("td", { "data-col": "noshow" }, r.noshow),
    el("td", { "data-col": "referralShare" }, pct(r.referralShare)),
    el("td", { "data-col": "specialistOnlineShare" }, pct(r.specialistOnlineShare)));
  table.replaceChildren(
    el("thead", {}, el("tr", {}, el("th", {}, t("sch.service")), el("th", {}, t("sch.st.published")),
      ...CHANNELS.map((c) => el("th", {}, t("sch.st.booked", label("bk.channel.", c)))),
      el("th", {}, t("sch.st.cancelled")), el("th", {}, t("sch.st.noshow")), el("th", {}, t("sch.st.referral")),
      el("th", {}, t("sch.st.specialist")))),
    el("tbody", {}, ...(s.rows || []).map((r) => row(state.names["HealthcareService/" + r.service] || r.service, r)),
      row(t("sch.st.total"), s.total || {}, "total")));
}

async function showStats(ev) {
  if (ev) ev.preventDefault();
  const d = $("st-date").value || localDay();
  const res = await api("GET", "/api/booking/stats?from=" + d + "&to=" + d);
  if (!res.ok) {
    state.stats = null;
    renderStats();
    return msg("stats-status", { text: errorText(res), kind: "error" });
  }
  state.stats = res.body;
  msg("stats-status", null);
  renderStats();
}

function renderAll() {
  $("who").textContent = state.me ? state.me.username : "";
  renderServices();
  renderSchedules();
  renderQuota();
  renderStats();
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
  state.org = state.me.organization || "";
  $("q-date").value = $("st-date").value = localDay();
  if (!state.org) {
    msg("page-status", { key: "sch.noorg", kind: "error" });
    return;
  }
  await namesOf([state.org], state.names);
  $("org-name").textContent = state.names[state.org];
  $("new-schedule").addEventListener("submit", create);
  $("schedule-list").addEventListener("click", generate);
  $("quota-form").addEventListener("submit", showQuota);
  $("stats-form").addEventListener("submit", showStats);
  await loadServices();
  await loadSchedules();
  await showStats();
}

main();
