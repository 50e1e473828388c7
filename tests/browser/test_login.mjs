// test_login.mjs - logging in and out through the pages, on a phone-sized screen: a resident
// sees their own name, a wrong password says so, staff land on their desk, the language
// switch turns every text to English and back, and a page without a login goes to log in.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { DEMO, Server, expectClean, launchBrowser, logIn, phonePage, freshTotp, totp } from "./harness.mjs";

let server, browser;

before(async () => {
  server = await new Server().start();
  browser = await launchBrowser();
});

after(async () => {
  if (browser) await browser.close();
  if (server) await server.stop();
});

test("a resident logs in and sees their own name", async () => {
  const page = await phonePage(browser);
  await logIn(page, server.base, DEMO.resident);
  assert.match(page.url(), /\/web\/resident\.html$/);
  await assert.doesNotReject(page.getByRole("heading", { level: 1, name: "您好，王小明" }).waitFor());
  assert.equal(await page.locator("#me-name").textContent(), DEMO.resident.name);
  assert.equal(await page.locator("#me-gender").textContent(), "男");
  assert.equal(await page.locator("#me-birthdate").textContent(), "1985-03-12");
  // The identity number is masked for the resident's own role (rules/security.json).
  const identity = await page.locator("#me-identity").textContent();
  assert.ok(identity.includes("居民身份证"), identity);
  assert.ok(!identity.includes("350102198503120018"), "the identity number is masked: " + identity);
  // The page fits a phone: nothing wider than the screen.
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, "the page is " + overflow + " px wider than the phone");
  expectClean(assert, page);
  await page.context().close();
});

test("a wrong password shows an error and keeps the person on the log-in page", async () => {
  const page = await phonePage(browser);
  await page.goto(server.base + "/");
  await page.getByLabel("用户名").fill(DEMO.nurse.username);
  await page.getByLabel("密码").fill("not-the-password-1A");
  await page.getByRole("button", { name: "登录" }).click();
  const alert = page.getByRole("alert");
  await alert.waitFor();
  assert.equal(await alert.textContent(), "用户名或密码错误。");
  assert.equal(new URL(page.url()).pathname, "/");
  assert.equal(await page.evaluate(() => sessionStorage.getItem("jk.token")), null, "no token kept");
  // The right password then works.
  await page.getByLabel("密码").fill(DEMO.nurse.password);
  await page.getByRole("button", { name: "登录" }).click();
  await page.waitForURL(/\/web\/staff\.html$/);
  expectClean(assert, page);
  await page.context().close();
});

test("the language switch turns the pages to English and back", async () => {
  const page = await phonePage(browser);
  await page.goto(server.base + "/");
  assert.equal(await page.getAttribute("html", "lang"), "zh-CN");
  assert.equal(await page.getByRole("heading", { level: 1 }).textContent(), "登录");
  await page.getByRole("button", { name: "English" }).click();
  assert.equal(await page.getByRole("heading", { level: 1 }).textContent(), "Log in");
  assert.equal(await page.getAttribute("html", "lang"), "en");
  assert.equal(await page.title(), "Log in");
  assert.ok(await page.getByLabel("User name").isVisible());
  // An error comes in the language chosen.
  await page.getByLabel("User name").fill(DEMO.nurse.username);
  await page.getByLabel("Password").fill("not-the-password-1A");
  await page.getByRole("button", { name: "Log in" }).click();
  await page.getByRole("alert").waitFor();
  assert.equal(await page.getByRole("alert").textContent(), "The user name or password is wrong.");
  // The choice is kept: the next page is in English too.
  await logIn(page, server.base, DEMO.resident);
  await page.getByRole("heading", { level: 1, name: "Hello, 王小明" }).waitFor();
  assert.equal(await page.getByRole("heading", { name: "About me" }).count(), 1);
  assert.equal(await page.locator("#me-gender").textContent(), "Male");
  await page.getByRole("button", { name: "中文" }).click();
  await page.getByRole("heading", { level: 1, name: "您好，王小明" }).waitFor();
  assert.equal(await page.getAttribute("html", "lang"), "zh-CN");
  expectClean(assert, page);
  await page.context().close();
});

test("staff log in to their desk", async () => {
  const page = await phonePage(browser, { viewport: { width: 1280, height: 900 } });
  await logIn(page, server.base, DEMO.doctor);
  assert.match(page.url(), /\/web\/staff\.html$/);
  await page.getByText("demo-doctor（医生）").waitFor();
  assert.ok(await page.getByRole("heading", { name: "查找居民" }).isVisible());
  expectClean(assert, page);
  await page.context().close();
});

test("a page needing a login sends the person to log in, and back after", async () => {
  const page = await phonePage(browser);
  await page.goto(server.base + "/web/resident.html");
  await page.waitForURL((u) => u.pathname === "/" && u.searchParams.get("next") === "/web/resident.html");
  await logIn(page, server.base, DEMO.resident, "/?next=%2Fweb%2Fresident.html");
  assert.match(page.url(), /\/web\/resident\.html$/);
  expectClean(assert, page);
  await page.context().close();
});

test("logging out revokes the token", async () => {
  const page = await phonePage(browser);
  await logIn(page, server.base, DEMO.resident);
  const tok = await page.evaluate(() => sessionStorage.getItem("jk.token"));
  assert.ok(tok);
  assert.equal((await server.api("GET", "/auth/me", { token: tok })).status, 200);
  await page.getByRole("button", { name: "退出登录" }).click();
  await page.waitForURL((u) => u.pathname === "/");
  assert.equal(await page.evaluate(() => sessionStorage.getItem("jk.token")), null);
  assert.equal((await server.api("GET", "/auth/me", { token: tok })).status, 401, "the token is revoked");
  await page.goto(server.base + "/web/resident.html");
  await page.waitForURL((u) => u.pathname === "/");
  expectClean(assert, page);
  await page.context().close();
});

test("an administrator is asked for the one-time code, then logs in", async () => {
  const page = await phonePage(browser, { viewport: { width: 1280, height: 900 } });
  await page.goto(server.base + "/");
  assert.ok(await page.getByLabel("动态验证码（6 位）").isHidden(), "no code field before it is needed");
  await page.getByLabel("用户名").fill(DEMO.platformAdmin.username);
  await page.getByLabel("密码").fill(DEMO.platformAdmin.password);
  await page.getByRole("button", { name: "登录" }).click();
  await page.getByText("此账号需要动态验证码，请输入后再登录。").waitFor();
  const field = page.getByLabel("动态验证码（6 位）");
  assert.ok(await field.isVisible());
  assert.ok(await field.evaluate((e) => e === document.activeElement), "the code field has the focus");
  await field.fill("000000" === totp(DEMO.platformAdmin.totpSecret) ? "111111" : "000000");
  await page.getByLabel("密码").fill(DEMO.platformAdmin.password);
  await page.getByRole("button", { name: "登录" }).click();
  await page.getByText("动态验证码不正确。").waitFor();
  await field.fill(await freshTotp(DEMO.platformAdmin));
  await page.getByLabel("密码").fill(DEMO.platformAdmin.password);
  await page.getByRole("button", { name: "登录" }).click();
  await page.waitForURL(/\/web\/staff\.html$/);
  expectClean(assert, page);
  await page.context().close();
});
