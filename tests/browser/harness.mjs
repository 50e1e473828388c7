// harness.mjs - what the browser tests share: the real server on a temporary SQLite database
// with the demo region loaded and security on, the API spoken directly (to set up what a page
// should then show), and Debian's Chromium driven by playwright-core, headless, without a
// sandbox and without background networking.
//
// Environment: JIANKANG_BINARY (default build/jiankang-san, else ./jiankang), CHROMIUM
// (default /usr/bin/chromium), JK_BROWSER_KEEP=1 keeps the temporary directory.
import { spawn, spawnSync } from "node:child_process";
import { createHmac } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const SANITIZER_MARKS = ["ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
  "SUMMARY: UndefinedBehaviorSanitizer"];
const START_TIMEOUT_MS = 60000;

export const DEMO = {
  resident: { username: "demo-resident", password: "Jiankang-Resident-2025", name: "王小明", patient: "pat-1" },
  doctor: { username: "demo-doctor", password: "Jiankang-Doctor-2025" },
  nurse: { username: "demo-nurse", password: "Jiankang-Nurse-2025" },
  // a pharmacist of 福州市第一医院 who reviews its online prescriptions, and one of the pharmacy
  // 福州市鼓楼区健康大药房 who redeems codes, dispenses and delivers
  reviewer: { username: "demo-rx-reviewer", password: "Jiankang-Reviewer-2025" },
  pharmacy: { username: "demo-pharmacy", password: "Jiankang-Pharmacy-2025" },
  platformAdmin: { username: "demo-platform-admin", password: "Jiankang-PlatformAdmin-2025",
    totpSecret: "JIANKANGDEMOPLATFORMADMIN2345672" },
  institutionAdmin: { username: "demo-institution-admin", password: "Jiankang-InstAdmin-2025",
    totpSecret: "JIANKANGDEMOINSTITUTIONADMIN2345" },
};

function binary() {
  if (process.env.JIANKANG_BINARY) return path.resolve(process.env.JIANKANG_BINARY);
  const san = path.join(ROOT, "build", "jiankang-san");
  return fs.existsSync(san) ? san : path.join(ROOT, "jiankang");
}

// A copy of rules/security.json with the cheapest password hash and rate limits no test
// reaches, so that logging in many times stays quick.
function rulesFile(dir) {
  const rules = JSON.parse(fs.readFileSync(path.join(ROOT, "rules", "security.json"), "utf8"));
  const r = rules.rules;
  r["password.hash_cost"].value = { ops_limit: 1, mem_limit_kib: 8 };
  for (const k of Object.keys(r))
    if (k.startsWith("rate.")) r[k].value = { limit: 100000, window_seconds: 60 };
  const p = path.join(dir, "security.json");
  fs.writeFileSync(p, JSON.stringify(rules, null, 1));
  return p;
}

// The server: `jiankang demo` then `jiankang serve` on a fresh database, from the checkout
// (so it serves the checkout's web/). Its standard error (the log) is kept in memory: the SMS
// codes of the `log` adapter are read from it.
export class Server {
  constructor() {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), "jk-browser-"));
    this.db = "sqlite:" + path.join(this.dir, "jiankang.db");
    this.env = {
      ...process.env,
      JIANKANG_KEYS: path.join(this.dir, "jiankang.keys"),
      JIANKANG_SECURITY: "on",
      JIANKANG_SECURITY_RULES: rulesFile(this.dir),
      JIANKANG_ACCESS_LOG: "off",
      ASAN_OPTIONS: process.env.ASAN_OPTIONS || "detect_leaks=1:abort_on_error=0",
      UBSAN_OPTIONS: process.env.UBSAN_OPTIONS || "print_stacktrace=1",
    };
    this.log = "";
    this.out = "";
    this.proc = null;
    this.base = null;
  }

  async start() {
    const demo = spawnSync(binary(), ["demo", "--db", this.db], { cwd: ROOT, env: this.env, encoding: "utf8" });
    if (demo.status !== 0) throw new Error("jiankang demo failed:\n" + demo.stdout + demo.stderr);
    this.proc = spawn(binary(), ["serve", "--listen", "127.0.0.1:0", "--db", this.db],
      { cwd: ROOT, env: this.env, stdio: ["ignore", "pipe", "pipe"] });
    this.proc.stderr.setEncoding("utf8");
    this.proc.stdout.setEncoding("utf8");
    this.proc.stderr.on("data", (d) => { this.log += d; });
    this.proc.stdout.on("data", (d) => { this.out += d; });
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if (this.proc.exitCode !== null) throw new Error("the server exited while starting:\n" + this.log);
      // make run prints where the pages are: the tests go there.
      const m = /resident pages: (http:\/\/127\.0\.0\.1:\d+)\//.exec(this.out);
      if (m && this.out.includes("is running.")) {
        this.base = m[1];
        const r = await fetch(this.base + "/healthz").catch(() => null);
        if (r && r.status === 200) return this;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error("the server did not start within " + START_TIMEOUT_MS + " ms:\n" + this.log);
  }

  // Stops the server with SIGTERM; throws when it did not exit 0 or reported a sanitizer error.
  async stop() {
    if (!this.proc) return;
    const done = this.proc.exitCode !== null ? Promise.resolve(this.proc.exitCode)
      : new Promise((r) => this.proc.once("exit", (code) => r(code)));
    this.proc.kill("SIGTERM");
    let timer;
    const code = await Promise.race([done, new Promise((r) => { timer = setTimeout(() => r("hung"), 40000); })]);
    clearTimeout(timer);
    if (code === "hung") this.proc.kill("SIGKILL");
    if (!process.env.JK_BROWSER_KEEP) fs.rmSync(this.dir, { recursive: true, force: true });
    const mark = SANITIZER_MARKS.find((m) => this.log.includes(m));
    if (mark) throw new Error("sanitizer report in the server log:\n" + this.log.slice(this.log.indexOf(mark) - 200, this.log.indexOf(mark) + 3000));
    if (code !== 0) throw new Error("the server exited with " + code + ":\n" + this.log.slice(-3000));
  }

  // The API, as a program speaks it: {status, body}.
  async api(method, p, { token, json, form } = {}) {
    const headers = { Accept: "application/json" };
    let body;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    } else if (form) {
      headers["Content-Type"] = "application/x-www-form-urlencoded";
      body = new URLSearchParams(form).toString();
    }
    if (token) headers.Authorization = "Bearer " + token;
    const r = await fetch(this.base + p, { method, headers, body });
    const text = await r.text();
    let parsed = null;
    try { parsed = text ? JSON.parse(text) : null; } catch { parsed = text; }
    return { status: r.status, body: parsed };
  }

  // A token of the demo hospital's information system (client_credentials): it writes
  // Patients as the hospital's HIS does.
  async systemToken() {
    const r = await this.api("POST", "/auth/token", { form: { grant_type: "client_credentials",
      client_id: "demo-his", client_secret: "Jiankang-HIS-Secret-2025" } });
    if (r.status !== 200) throw new Error("client_credentials: " + r.status + " " + JSON.stringify(r.body));
    return r.body.access_token;
  }

  async token(user) {
    const form = { grant_type: "password", username: user.username, password: user.password };
    if (user.totpSecret) form.totp = await freshTotp(user);
    const r = await this.api("POST", "/auth/token", { form });
    if (r.status !== 200) throw new Error("log in as " + user.username + ": " + r.status + " " + JSON.stringify(r.body));
    return r.body.access_token;
  }

  // Whether this build has the endpoint (one built on another branch may not have landed
  // yet): the router answers an unknown one "no such endpoint" (404) or 405.
  async hasEndpoint(method, p, token) {
    const r = await this.api(method, p, { token, json: method === "GET" ? undefined : {} });
    const text = JSON.stringify(r.body || "");
    return !(r.status === 405 || (r.status === 404 && text.includes("no such endpoint")));
  }
}

// RFC 6238 TOTP (SHA-1, 30 s, 6 digits) of a base32 secret, as an authenticator app computes.
export function totp(secret, now = Date.now()) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = "";
  for (const c of secret.replace(/=+$/, "").toUpperCase()) bits += alphabet.indexOf(c).toString(2).padStart(5, "0");
  const key = Buffer.alloc(Math.floor(bits.length / 8));
  for (let i = 0; i < key.length; i++) key[i] = parseInt(bits.slice(i * 8, i * 8 + 8), 2);
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(now / 1000 / 30)));
  const h = createHmac("sha1", key).update(counter).digest();
  const o = h[h.length - 1] & 0xf;
  return String((h.readUInt32BE(o) & 0x7fffffff) % 1000000).padStart(6, "0");
}

// A code of a time step not used yet by user: the server takes each step once (no replay), so
// a second log-in within 30 s waits for the next step.
const usedSteps = new Map();
export async function freshTotp(user) {
  const step = () => Math.floor(Date.now() / 30000);
  while (usedSteps.get(user.username) >= step()) await new Promise((r) => setTimeout(r, 500));
  usedSteps.set(user.username, step());
  return totp(user.totpSecret);
}

// Chromium from Debian, headless, no sandbox (tests run as root in containers), and none of
// the background traffic to Google's services: the tests talk to 127.0.0.1 only.
export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
      "--disable-sync", "--disable-default-apps", "--no-first-run", "--disable-domain-reliability",
      "--disable-client-side-phishing-detection", "--metrics-recording-only", "--no-pings",
      "--disable-features=Translate,OptimizationHints,MediaRouter,InterestFeedContentSuggestions"],
  });
}

// A new phone-sized page (390 x 844, touch) whose script errors and Content-Security-Policy
// refusals are collected in page.problems: a test ends with expectClean(page).
export async function phonePage(browser, opts = {}) {
  const context = await browser.newContext({
    viewport: opts.viewport || { width: 390, height: 844 },
    isMobile: !opts.viewport,
    hasTouch: !opts.viewport,
    locale: "zh-CN",
    timezoneId: "Asia/Shanghai",
  });
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  page.problems = [];
  page.on("pageerror", (e) => page.problems.push("script error: " + e.message));
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    const text = m.text();
    // A 4xx answer of the API shown to the user is not a problem of the page.
    if (/^Failed to load resource: the server responded with a status of 4\d\d/.test(text)) return;
    page.problems.push("console error: " + text);
  });
  return page;
}

export function expectClean(assert, page) {
  assert.deepEqual(page.problems, [], "no script error and no Content-Security-Policy refusal");
}

// Logs in through the log-in page and waits for the page the role goes to.
export async function logIn(page, base, user, start = "/") {
  await page.goto(base + start);
  await page.getByLabel(/用户名|User name/).fill(user.username);
  await page.getByLabel(/^(密码|Password)$/).fill(user.password);
  await page.getByRole("button", { name: /^(登录|Log in)$/ }).click();
  if (user.totpSecret) {
    await page.getByLabel(/动态验证码|One-time code/).fill(await freshTotp(user));
    await page.getByRole("button", { name: /^(登录|Log in)$/ }).click();
  }
  await page.waitForURL(/\/web\/(resident|staff)\.html/);
}
