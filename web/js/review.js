// review.js - the pharmacist's review (审方) of online prescriptions: the queue of pending ones of
// their institution (or of the regions of their review centre), oldest first, paged
// (GET /api/rx/review-queue), each with the patient, the doctor, the drugs, the amount and the
// findings the rules computed; approved, or rejected with coded reasons and text
// (POST /api/rx/prescriptions/{id}/review). A decision someone else made first is shown as the
// server words it.
import { api, el, errorText, initLang, logout, requireLogin, say, t } from "./common.js";
import { fmtWhen, namesOf } from "./bookutil.js";
import { REVIEW_REASONS, findingsList, itemsList, money, patientLine } from "./ihutil.js";

const $ = (id) => document.getElementById(id);
const PAGE = 50;
const GROUPS = ["1", "2", "3"];

const state = { me: null, rows: null, total: 0, next: null, names: {}, msgs: {}, itemMsgs: {} };

function msg(id, m) {
  state.msgs[id] = m;
  say($(id), m ? (m.key ? t(m.key, ...(m.args || [])) : m.text) : "", m ? m.kind : "");
}

function reasonPicker(p) {
  return el("details", { class: "reject" },
    el("summary", {}, t("rv.reject.open")),
    el("form", { class: "reject-form", "data-rx": p.id, novalidate: true },
      ...GROUPS.map((g) => el("fieldset", {}, el("legend", {}, t("rv.group." + g)),
        el("div", { class: "reasons-pick" }, REVIEW_REASONS.filter((c) => c.startsWith(g + "-")).map((c) =>
          el("label", { class: "check" }, el("input", { type: "checkbox", name: "code", value: c }), c + " " + t("rx.reason." + c)))))),
      el("label", { for: "rv-text-" + p.id }, t("rv.text")),
      el("textarea", { id: "rv-text-" + p.id, name: "text", rows: 2 }),
      el("button", { type: "submit", class: "danger" }, t("rv.reject"))));
}

function rowItem(p) {
  const s = p.summary || {};
  const m = state.itemMsgs[p.id];
  return el("li", { "data-rx": p.id },
    el("div", { class: "slot-head" }, el("strong", {}, patientLine(s.patient) || p.patient),
      el("span", { class: "muted small" }, fmtWhen(p.created))),
    el("div", { class: "muted small" }, [t("rv.doctor", s.doctor || p.doctor), state.names[p.org], t("rx.amount", money(p.amountFen))].filter(Boolean).join(" · ")),
    (s.items || []).length ? itemsList(s) : el("p", { class: "muted small" }, t("rv.nosummary")),
    (p.warnings || []).length ? findingsList(p.warnings) : el("p", { class: "muted small" }, t("rv.nofindings")),
    el("div", { class: "actions" }, el("button", { type: "button", "data-act": "approve" }, t("rv.approve"))),
    reasonPicker(p),
    m ? el("p", { class: "status", role: "alert", "data-kind": m.kind }, m.key ? t(m.key, ...(m.args || [])) : m.text) : null);
}

function render() {
  const rows = state.rows;
  $("queue-none").hidden = !rows || rows.length > 0;
  $("queue-total").textContent = rows ? t("rv.total", state.total) : "";
  $("queue-list").replaceChildren(...(rows || []).map(rowItem));
  $("queue-more").hidden = !state.next;
}

async function load(more = false) {
  let path = "/api/rx/review-queue?limit=" + PAGE;
  if (more && state.next) path += "&after=" + encodeURIComponent(state.next);
  const res = await api("GET", path);
  if (!res.ok || !res.body) {
    state.rows = null;
    msg("queue-status", { text: errorText(res), kind: "error" });
    return render();
  }
  if (state.msgs["queue-status"] && state.msgs["queue-status"].kind === "error") msg("queue-status", null);
  const rows = res.body.prescriptions || [];
  await namesOf(rows.map((p) => p.org), state.names);
  state.rows = more ? [...(state.rows || []), ...rows] : rows;
  state.total = res.body.total || 0;
  state.next = res.body.next || null;
  if (!more) state.itemMsgs = {};
  render();
}

async function decide(id, body) {
  const res = await api("POST", "/api/rx/prescriptions/" + encodeURIComponent(id) + "/review", { json: body });
  const p = (state.rows || []).find((x) => x.id === id) || {};
  const who = patientLine((p.summary || {}).patient) || p.patient || id;
  if (!res.ok) {
    state.itemMsgs[id] = { text: errorText(res), kind: "error" };
    return render();
  }
  msg("queue-status", { key: body.decision === "approve" ? "rv.approved" : "rv.rejected", args: [who], kind: "ok" });
  await load();
}

function click(ev) {
  const btn = ev.target.closest("button[data-act=approve]");
  if (!btn) return;
  btn.disabled = true;
  decide(btn.closest("li").dataset.rx, { decision: "approve" });
}

function submit(ev) {
  const form = ev.target.closest("form.reject-form");
  if (!form) return;
  ev.preventDefault();
  const codes = [...form.querySelectorAll("input[name=code]:checked")].map((c) => c.value);
  const text = form.elements.text.value.trim();
  if (!codes.length) {
    state.itemMsgs[form.dataset.rx] = { key: "rv.need.reason", kind: "error" };
    form.closest("li").querySelector("details").open = true;
    const m = state.itemMsgs[form.dataset.rx];
    let box = form.closest("li").querySelector("p.status");
    if (!box) form.closest("li").append(box = el("p", { class: "status", role: "alert" }));
    return say(box, t(m.key), "error");
  }
  form.querySelector("button[type=submit]").disabled = true;
  const body = { decision: "reject", codes };
  if (text) body.text = text;
  decide(form.dataset.rx, body);
}

async function main() {
  initLang(() => {
    render();
    for (const [id, m] of Object.entries(state.msgs)) msg(id, m);
  });
  $("logout").addEventListener("click", logout);
  state.me = await requireLogin();
  $("who").textContent = state.me.username;
  if (state.me.role === "resident") {
    location.replace("/web/visit.html");
    return;
  }
  if (state.me.organization) {
    await namesOf([state.me.organization], state.names);
    $("org-name").textContent = state.names[state.me.organization];
  }
  $("queue-list").addEventListener("click", click);
  $("queue-list").addEventListener("submit", submit);
  $("queue-reload").addEventListener("click", () => load());
  $("queue-more").addEventListener("click", () => load(true));
  await load();
}

main();
