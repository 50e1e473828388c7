// login.js - the log-in page (/): POST /auth/token with the password grant, then the
// resident's page or the staff desk by the account's role.
import { api, applyI18n, initLang, say, setToken, t, token } from "./common.js";

const form = document.getElementById("login");
const errorBox = document.getElementById("login-error");
const submit = document.getElementById("login-submit");
let lastReason = null;

// Where to go after logging in: ?next= when it is a page of ours, else by role.
function destination(me) {
  const next = new URLSearchParams(location.search).get("next");
  if (next && /^\/web\/[a-z-]+\.html$/.test(next.split("?")[0])) return next;
  return me.role === "resident" ? "/web/resident.html" : "/web/staff.html";
}

async function goOn() {
  const me = await api("GET", "/auth/me");
  if (me.ok) location.assign(destination(me.body));
  return me.ok;
}

function showReason(body, status) {
  const reason = (body && body.reason) || null;
  lastReason = reason;
  const key = "login.reason." + reason;
  let text = reason && t(key) !== key ? t(key) : null;
  if (!text) text = (body && body.error_description) || t("err.generic", status);
  say(errorBox, text, "error");
  if (reason === "totp_required" || reason === "totp_invalid") {
    document.getElementById("totp-row").hidden = false;
    document.getElementById("totp").focus();
  }
}

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  say(errorBox, "");
  lastReason = null;
  const f = { grant_type: "password", username: form.username.value.trim(), password: form.password.value };
  const totp = form.totp.value.trim();
  if (totp) f.totp = totp;
  submit.disabled = true;
  submit.textContent = t("login.busy");
  const res = await api("POST", "/auth/token", { form: f, auth: false });
  submit.disabled = false;
  submit.textContent = t("login.submit");
  if (res.ok && res.body && res.body.access_token) {
    setToken(res.body.access_token);
    if (await goOn()) return;
    setToken(null);
    say(errorBox, t("err.server"), "error");
    return;
  }
  if (res.network) say(errorBox, t("err.network"), "error");
  else showReason(res.body, res.status);
  if (lastReason === "totp_required" || lastReason === "totp_invalid") form.totp.select();
  else form.password.select();
});

initLang(() => {
  if (!errorBox.hidden && lastReason) showReason({ reason: lastReason }, 0);
});
applyI18n();
if (token()) goOn();
