// test_register.mjs - real-name registration on a phone, end to end: a code to the phone
// (the server's `log` SMS adapter writes it to the server log, read here as the phone would
// receive it), the form, and the new resident logged in on their own page; a wrong code and a
// mistyped identity number are shown at their fields.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Server, expectClean, launchBrowser, phonePage } from "./harness.mjs";

let server, browser, has = {};

before(async () => {
  server = await new Server().start();
  browser = await launchBrowser();
  has.register = await server.hasEndpoint("POST", "/api/residents/register/code");
});

after(async () => {
  if (browser) await browser.close();
  if (server) await server.stop();
});

const SKIP = "the registration endpoints (/api/residents/register) are not in this build yet";

// A valid citizen ID (GB 11643): region, birth date, sequence (odd: male), check digit.
function citizenId(region, birth, seq) {
  const body = region + birth.replaceAll("-", "") + seq;
  const w = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
  const sum = [...body].reduce((s, d, i) => s + Number(d) * w[i], 0);
  return body + "10X98765432"[sum % 11];
}

// The code the SMS adapter wrote for phone after the log had n characters.
async function smsCode(phone, from) {
  const tail = phone.slice(-4);
  for (let i = 0; i < 100; i++) {
    const lines = server.log.slice(from).split("\n").filter((l) => /sms|code|验证码/i.test(l));
    for (const l of lines.reverse()) {
      if (!l.includes(tail) && !l.includes(phone)) continue;
      const m = /(?:code|验证码)\D{0,20}(\d{6})\b/i.exec(l) || /\b(\d{6})\b/.exec(l.replace(phone, ""));
      if (m) return m[1];
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("no SMS code for ..." + tail + " in the server log:\n" + server.log.slice(from));
}

async function fillForm(page, f) {
  await page.getByLabel("姓名").fill(f.name);
  await page.getByLabel("证件类型").selectOption(f.doctype || "citizen-id");
  await page.getByLabel("证件号码").fill(f.number);
  await page.getByLabel("手机号码").fill(f.phone);
  await page.getByLabel("设置用户名").fill(f.username);
  await page.getByLabel("设置密码").fill(f.password);
  await page.getByLabel("再次输入密码").fill(f.password);
}

test("a resident registers with a code sent to the phone and lands on their own page", async (t) => {
  if (!has.register) return t.skip(SKIP);
  const page = await phonePage(browser);
  await page.goto(server.base + "/");
  await page.getByRole("link", { name: "还没有账号？实名注册" }).click();
  await page.waitForURL(/\/web\/register\.html$/);
  const f = { name: "林晓燕", number: citizenId("350102", "1990-05-17", "124"), phone: "13700001234",
    username: "lin-xiaoyan", password: "Spring-Garden-2025" };
  await fillForm(page, f);
  const from = server.log.length;
  await page.getByRole("button", { name: "获取验证码" }).click();
  await page.getByText(/验证码已发送/).waitFor();
  assert.ok(await page.getByRole("button", { name: /秒后可重新获取/ }).isDisabled(), "no second code at once");
  await page.getByLabel("短信验证码").fill(await smsCode(f.phone, from));
  await page.getByRole("button", { name: "注册" }).click();
  await page.waitForURL(/\/web\/resident\.html$/);
  await page.getByRole("heading", { level: 1, name: "您好，林晓燕" }).waitFor();
  // Sex and birth date came from the identity number.
  assert.equal(await page.locator("#me-gender").textContent(), "女");
  assert.equal(await page.locator("#me-birthdate").textContent(), "1990-05-17");
  assert.equal(await page.locator("#me-username").textContent(), f.username);
  assert.ok(!(await page.content()).includes(f.number), "the identity number is shown masked");
  expectClean(assert, page);
  await page.context().close();
  // The account works for a later log-in too.
  const tok = await server.token(f);
  assert.equal((await server.api("GET", "/auth/me", { token: tok })).body.role, "resident");
});

test("a wrong code and a mistyped identity number are shown at their fields", async (t) => {
  if (!has.register) return t.skip(SKIP);
  const page = await phonePage(browser);
  await page.goto(server.base + "/web/register.html");
  const good = citizenId("350102", "1988-01-09", "135");
  const f = { name: "陈晨", number: good.slice(0, 17) + (good[17] === "1" ? "2" : "1"), phone: "13700005678",
    username: "chen-chen", password: "Autumn-River-2025b" };
  await fillForm(page, f);
  const from = server.log.length;
  await page.getByRole("button", { name: "获取验证码" }).click();
  await page.getByText(/验证码已发送/).waitFor();
  const code = await smsCode(f.phone, from);
  // The check digit is wrong: the number's field is marked.
  await page.getByLabel("短信验证码").fill(code);
  await page.getByRole("button", { name: "注册" }).click();
  await page.getByRole("alert").waitFor();
  await page.waitForSelector('#docnumber[aria-invalid="true"]');
  const said = await page.locator("#docnumber-error").textContent();
  assert.ok(said.length > 0, "the server's reason is shown under the field");
  assert.equal(await page.getAttribute("#docnumber", "aria-describedby"), "docnumber-error", "and read out with it");
  assert.equal(new URL(page.url()).pathname, "/web/register.html");
  // Corrected number, wrong code: the code's field is marked.
  await page.getByLabel("证件号码").fill(good);
  await page.getByLabel("短信验证码").fill(code === "000000" ? "111111" : "000000");
  await page.getByRole("button", { name: "注册" }).click();
  await page.waitForSelector('#code[aria-invalid="true"]');
  assert.equal(await page.locator('#docnumber[aria-invalid="true"]').count(), 0);
  // Passwords that differ never reach the server.
  await page.getByLabel("再次输入密码").fill("something-else-1A");
  await page.getByRole("button", { name: "注册" }).click();
  await page.getByText("两次输入的密码不一致。").waitFor();
  expectClean(assert, page);
  await page.context().close();
});
