// register.js - real-name registration: a code sent to the phone
// (POST /api/residents/register/code), then the account and the resident record
// (POST /api/residents/register); then logged in and on to the resident's page.
import { api, applyI18n, el, errorFields, errorText, initLang, say, setToken, t } from "./common.js";

const $ = (id) => document.getElementById(id);
const form = $("register");
const RESEND_S = 60;
let resendTimer = null;

function clearFieldErrors() {
  for (const e of form.querySelectorAll("[aria-invalid]")) e.removeAttribute("aria-invalid");
  for (const e of form.querySelectorAll(".field-error")) e.remove();
}

// Marks the inputs the OperationOutcome names (issue.expression "document.number" ...).
function markFields(res) {
  let first = null;
  const issues = (res.body && res.body.issue) || [];
  for (const path of errorFields(res)) {
    const input = form.querySelector('[data-field="' + CSS.escape(path) + '"]');
    if (!input) continue;
    input.setAttribute("aria-invalid", "true");
    const issue = issues.find((i) => (i.expression || []).includes(path));
    if (issue && issue.diagnostics) {
      const id = input.id + "-error";
      if (!$(id)) {
        const p = el("p", { class: "field-error", id }, issue.diagnostics);
        (input.closest(".row") || input).after(p);
        input.setAttribute("aria-describedby", ((input.getAttribute("aria-describedby") || "") + " " + id).trim());
      }
    }
    if (!first) first = input;
  }
  if (first) first.focus();
}

function showCountry() {
  $("country-row").hidden = form.doctype.value !== "passport";
}

function countdown(left) {
  const btn = $("send-code");
  clearTimeout(resendTimer);
  if (left <= 0) {
    btn.disabled = false;
    btn.textContent = t("reg.sendcode");
    btn.dataset.i18n = "reg.sendcode";
    return;
  }
  btn.disabled = true;
  delete btn.dataset.i18n;
  btn.textContent = t("reg.code.wait", left);
  resendTimer = setTimeout(() => countdown(left - 1), 1000);
}

async function sendCode() {
  clearFieldErrors();
  const phone = form.phone.value.trim();
  const res = await api("POST", "/api/residents/register/code", { json: { phone }, auth: false });
  if (res.ok) {
    const mins = Math.max(1, Math.round(((res.body && res.body.expires_in) || 300) / 60));
    say($("code-status"), t("reg.code.sent", mins), "ok");
    countdown(RESEND_S);
    form.code.focus();
  } else {
    say($("code-status"), errorText(res), "error");
    markFields(res);
  }
}

function body() {
  const doc = { type: form.doctype.value, number: form.docnumber.value.trim().toUpperCase() };
  if (doc.type === "passport" && form.country.value.trim()) doc.country = form.country.value.trim().toUpperCase();
  const b = {
    name: form.name.value.trim(),
    document: doc,
    phone: form.phone.value.trim(),
    code: form.code.value.trim(),
    username: form.username.value.trim(),
    password: form.password.value,
  };
  if (form.sex.value) b.sex = form.sex.value;
  if (form.birthdate.value) b.birthDate = form.birthdate.value;
  return b;
}

async function submit(ev) {
  ev.preventDefault();
  clearFieldErrors();
  const errBox = $("register-error");
  say(errBox, "");
  if (form.password.value !== form.password2.value) {
    say(errBox, t("reg.password.mismatch"), "error");
    form.password2.setAttribute("aria-invalid", "true");
    form.password2.focus();
    return;
  }
  const btn = $("register-submit");
  btn.disabled = true;
  btn.textContent = t("reg.busy");
  const b = body();
  const res = await api("POST", "/api/residents/register", { json: b, auth: false });
  if (!res.ok) {
    btn.disabled = false;
    btn.textContent = t("reg.submit");
    say(errBox, errorText(res), "error");
    markFields(res);
    return;
  }
  say(errBox, t("reg.done"), "ok");
  const login = await api("POST", "/auth/token", {
    form: { grant_type: "password", username: b.username, password: b.password }, auth: false,
  });
  if (login.ok && login.body && login.body.access_token) {
    setToken(login.body.access_token);
    location.assign("/web/resident.html");
  } else {
    location.assign("/");
  }
}

form.doctype.addEventListener("change", showCountry);
$("send-code").addEventListener("click", sendCode);
form.addEventListener("submit", submit);
initLang();
applyI18n();
showCountry();
