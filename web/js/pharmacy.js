// pharmacy.js - a pharmacy's page: the redemption code a resident shows (scanned by a scanner
// that types, or typed) is verified (POST /api/rx/redeem), which presents the prescription to
// this pharmacy; the prescriptions presented here (GET /api/rx/prescriptions, and each in full
// with its delivery order and address), dispensed once (POST .../dispense) and their delivery
// orders moved on one step at a time, the carrier and waybill given when shipped
// (POST .../delivery).
import { api, el, errorText, initLang, logout, requireLogin, say, t } from "./common.js";
import { fmtWhen, label, namesOf } from "./bookutil.js";
import { DELIVERY_STATES, deliveryBlock, itemsList, money, patientLine } from "./ihutil.js";

const $ = (id) => document.getElementById(id);
const END_STATES = new Set(["signed", "cancelled"]);

const state = { me: null, rows: null, details: {}, shipping: {}, names: {}, msgs: {}, itemMsgs: {} };

function msg(id, m) {
  state.msgs[id] = m;
  say($(id), m ? (m.key ? t(m.key, ...(m.args || [])) : m.text) : "", m ? m.kind : "");
}

// The step after the order's state ("requested" before the pharmacy accepts it).
function nextState(order) {
  if (!order || END_STATES.has(order.status)) return null;
  const i = DELIVERY_STATES.indexOf(order.status);
  return DELIVERY_STATES[i + 1] || null;
}

function actions(d) {
  const out = [];
  if (d.status === "approved") out.push(el("button", { type: "button", "data-act": "dispense" }, t("ph.dispense")));
  const next = nextState(d.deliveryOrder);
  if (next === "shipped") {
    const s = state.shipping[d.id] || (state.shipping[d.id] = { carrier: "", waybill: "" });
    out.push(el("div", { class: "ship" },
      el("label", { for: "carrier-" + d.id }, t("ph.carrier")),
      el("input", { id: "carrier-" + d.id, name: "carrier", value: s.carrier, autocomplete: "off" }),
      el("label", { for: "waybill-" + d.id }, t("ph.waybill")),
      el("input", { id: "waybill-" + d.id, name: "waybill", value: s.waybill, autocomplete: "off", spellcheck: "false" })));
  }
  if (next) out.push(el("button", { type: "button", class: "secondary", "data-act": "deliver", "data-to": next }, t("ph.to." + next)));
  return out.length ? el("div", { class: "actions" }, out) : null;
}

function rxCard(d, tag = "li") {
  const s = d.summary || {};
  const m = state.itemMsgs[d.id];
  return el(tag, { "data-rx": d.id, "data-status": d.status, "data-delivery": d.deliveryOrder ? d.deliveryOrder.status : "" },
    el("div", { class: "slot-head" }, el("strong", {}, patientLine(s.patient) || d.patient),
      el("span", { class: "state", "data-state": d.status }, label("rx.status.", d.status))),
    el("div", { class: "muted small" }, [t("rv.doctor", s.doctor || d.doctor), state.names[d.org],
      d.presented ? t("ph.presented", fmtWhen(d.presented)) : ""].filter(Boolean).join(" · ")),
    itemsList(s),
    el("div", { class: "small" }, [t("rx.amount", money(d.amountFen)), d.payment ? label("rx.pay.", d.payment) : "",
      label("rx.mode.", d.delivery || "pickup")].filter(Boolean).join(" · ")),
    d.dispensed ? el("div", { class: "small" }, t("rx.dispensed.at", fmtWhen(d.dispensed))) : null,
    deliveryBlock(d.deliveryOrder),
    actions(d),
    m ? el("p", { class: "status", role: "alert", "data-kind": m.kind }, m.key ? t(m.key, ...(m.args || [])) : m.text) : null);
}

function render() {
  const rows = state.rows;
  $("list-none").hidden = !rows || rows.length > 0;
  $("rx-list").replaceChildren(...(rows || []).map((p) => rxCard(state.details[p.id] || p)));
}

async function load() {
  const res = await api("GET", "/api/rx/prescriptions");
  if (!res.ok || !res.body) {
    state.rows = null;
    msg("list-status", { text: errorText(res), kind: "error" });
    return render();
  }
  msg("list-status", null);
  const rows = res.body.prescriptions || [];
  const got = await Promise.all(rows.map((p) => api("GET", "/api/rx/prescriptions/" + encodeURIComponent(p.id))));
  rows.forEach((p, i) => { if (got[i].ok && got[i].body) state.details[p.id] = got[i].body; });
  await namesOf(rows.map((p) => p.org), state.names);
  state.rows = rows;
  render();
}

async function redeem(ev) {
  ev.preventDefault();
  const code = $("code").value.replace(/\s+/g, "");
  if (!code) return $("code").focus();
  const res = await api("POST", "/api/rx/redeem", { json: { code } });
  if (!res.ok || !res.body) return msg("redeem-status", { text: errorText(res), kind: "error" });
  $("code").value = "";
  const p = res.body;
  msg("redeem-status", { key: "ph.redeemed", args: [patientLine((p.summary || {}).patient) || p.patient], kind: "ok" });
  await load();
  const li = $("rx-list").querySelector('li[data-rx="' + CSS.escape(p.id) + '"]');
  if (li) li.scrollIntoView({ block: "nearest" });
}

async function act(ev) {
  const btn = ev.target.closest("button[data-act]");
  if (!btn) return;
  const id = btn.closest("[data-rx]").dataset.rx;
  let res;
  btn.disabled = true;
  if (btn.dataset.act === "dispense") {
    res = await api("POST", "/api/rx/prescriptions/" + encodeURIComponent(id) + "/dispense", { json: {} });
    state.itemMsgs[id] = res.ok ? { key: "ph.dispensed", kind: "ok" } : { text: errorText(res), kind: "error" };
  } else {
    const body = { status: btn.dataset.to };
    if (body.status === "shipped") {
      const s = state.shipping[id] || {};
      if (!s.carrier || !s.waybill) {
        btn.disabled = false;
        state.itemMsgs[id] = { key: "ph.need.waybill", kind: "error" };
        return render();
      }
      body.carrier = s.carrier;
      body.waybill = s.waybill;
    }
    res = await api("POST", "/api/rx/prescriptions/" + encodeURIComponent(id) + "/delivery", { json: body });
    state.itemMsgs[id] = res.ok ? { key: "ph.delivered.to", args: [label("rx.delivery.", body.status)], kind: "ok" }
      : { text: errorText(res), kind: "error" };
  }
  await load();
}

function input(ev) {
  const li = ev.target.closest("[data-rx]");
  if (!li || !["carrier", "waybill"].includes(ev.target.name)) return;
  const s = state.shipping[li.dataset.rx] || (state.shipping[li.dataset.rx] = { carrier: "", waybill: "" });
  s[ev.target.name] = ev.target.value.trim();
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
  $("redeem-form").addEventListener("submit", redeem);
  $("rx-list").addEventListener("click", act);
  $("rx-list").addEventListener("input", input);
  $("list-reload").addEventListener("click", load);
  await load();
}

main();
