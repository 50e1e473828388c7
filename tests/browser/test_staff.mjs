// test_staff.mjs - the staff desk: a doctor finds a resident by identity number and by name
// (only those the doctor may see, identity numbers masked), checks a resident's electronic
// health card from the scanned text (and a code used twice is refused), and works the review
// queue of possible duplicates (deciding one removes it).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { DEMO, Server, expectClean, launchBrowser, logIn, phonePage } from "./harness.mjs";

let server, browser, has = {};

before(async () => {
  server = await new Server().start();
  browser = await launchBrowser();
  const doctor = await server.token(DEMO.doctor);
  has.cards = await server.hasEndpoint("POST", "/api/cards/verify", doctor);
  has.reviews = await server.hasEndpoint("GET", "/api/mpi/reviews", doctor);
});

after(async () => {
  if (browser) await browser.close();
  if (server) await server.stop();
});

async function doctorDesk() {
  const page = await phonePage(browser, { viewport: { width: 1280, height: 900 } });
  await logIn(page, server.base, DEMO.doctor);
  return page;
}

test("a doctor finds a resident by identity number", async () => {
  const page = await doctorDesk();
  const form = page.locator("#by-id");
  await form.getByLabel("证件号码").fill("350102197211020037");
  await form.getByRole("button", { name: "查找" }).click();
  const item = page.locator("#lookup-results li");
  await item.first().waitFor();
  assert.equal(await item.count(), 1);
  assert.equal(await item.locator("strong").textContent(), "张伟");
  const text = await item.textContent();
  assert.ok(text.includes("1972-11-02") && text.includes("男"), text);
  assert.ok(text.includes("350102********0037"), "the number is shown masked: " + text);
  assert.ok(!(await page.content()).includes("350102197211020037"), "never the whole number");
  assert.equal(await page.locator("#lookup-status").textContent(), "找到 1 位居民");
  expectClean(assert, page);
  await page.context().close();
});

test("a doctor finds a resident by name, and only residents the doctor may see", async () => {
  const page = await doctorDesk();
  const form = page.locator("#by-name");
  await form.getByLabel("姓名").fill("张伟");
  await form.getByRole("button", { name: "查找" }).click();
  await page.locator("#lookup-results li").first().waitFor();
  assert.deepEqual(await page.locator("#lookup-results li strong").allTextContents(), ["张伟"]);
  // 王小明 is not a patient of this doctor: no result, and the page says so.
  await form.getByLabel("姓名").fill("王小明");
  await form.getByRole("button", { name: "查找" }).click();
  await page.getByText("没有找到匹配的居民。").waitFor();
  assert.equal(await page.locator("#lookup-results li").count(), 0);
  expectClean(assert, page);
  await page.context().close();
});

test("a doctor checks a resident's card from the scanned text; the same code twice is refused", async (t) => {
  if (!has.cards) return t.skip("the card endpoints (/api/cards) are not in this build yet");
  const resident = await server.token(DEMO.resident);
  let list = await server.api("GET", "/api/cards", { token: resident });
  let card = (list.body.cards || []).find((c) => c.status === "active");
  if (!card) {
    const r = await server.api("POST", "/api/cards", { token: resident, json: { patient: "Patient/pat-1" } });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    card = r.body;
  }
  const qr = await server.api("GET", "/api/cards/" + card.id + "/qr", { token: resident });
  assert.equal(qr.status, 200, JSON.stringify(qr.body));
  const page = await doctorDesk();
  await page.getByLabel("扫码内容").fill(qr.body.content);
  await page.getByRole("button", { name: "核验" }).click();
  await page.getByText("核验通过").waitFor();
  const facts = await page.locator("#verified").textContent();
  assert.ok(facts.includes("王小明") && facts.includes("1985-03-12"), facts);
  assert.ok(!facts.includes("350102198503120018"), "the identity number is masked: " + facts);
  // A code read once cannot be shown again (a photo of the screen, a replay).
  await page.getByLabel("扫码内容").fill(qr.body.content);
  await page.getByRole("button", { name: "核验" }).click();
  await page.getByText("此二维码已被使用过，请居民刷新后重新出示。").waitFor();
  assert.ok(await page.locator("#verified").isHidden());
  // Text that is no card at all.
  await page.getByLabel("扫码内容").fill("hello");
  await page.getByRole("button", { name: "核验" }).click();
  await page.getByText("无法识别扫码内容。").waitFor();
  expectClean(assert, page);
  await page.context().close();
});

test("the review queue lists a possible match and deciding it removes it", async (t) => {
  if (!has.reviews) return t.skip("the person index endpoints (/api/mpi/reviews) are not in this build yet");
  // Two records the hospital's system writes: same name and sex, birth dates one digit apart,
  // different cities, a phone on one only: not certain enough to link, so queued for review.
  const his = await server.systemToken();
  const record = (birthDate, city, phone) => ({
    resourceType: "Patient", name: [{ text: "郑浩" }], gender: "male", birthDate, address: [{ city }],
    ...(phone ? { telecom: [{ system: "phone", value: phone, use: "mobile" }] } : {}),
    managingOrganization: { reference: "Organization/hosp-fz-1" },
  });
  const a = await server.api("POST", "/fhir/R4/Patient", { token: his, json: record("1980-06-15", "福州市", "13912345678") });
  const b = await server.api("POST", "/fhir/R4/Patient", { token: his, json: record("1980-06-14", "厦门市") });
  assert.equal(a.status, 201, JSON.stringify(a.body));
  assert.equal(b.status, 201, JSON.stringify(b.body));
  const patient = "Patient/" + b.body.id;
  // A doctor does not see the queue at all.
  const desk = await doctorDesk();
  await desk.getByRole("heading", { name: "查找居民" }).waitFor();
  assert.equal(await desk.getByRole("heading", { name: "疑似重复档案核对" }).count(), 0);
  await desk.context().close();
  // A record steward (the platform administrator) does.
  const page = await phonePage(browser, { viewport: { width: 1280, height: 900 } });
  await logIn(page, server.base, DEMO.platformAdmin);
  const item = page.locator('#review-list li[data-patient="' + patient + '"]');
  await item.waitFor();
  const text = await item.textContent();
  assert.ok(text.includes("郑浩") && text.includes("1980-06-14") && text.includes("1980-06-15"), text);
  assert.match(text, /匹配得分 [\d.]+（(可能|很可能)）/);
  await item.getByRole("button", { name: "是同一人", exact: true }).click();
  await page.getByText("已确认为同一人。").waitFor();
  assert.equal(await item.count(), 0, "the decided pair is gone from the list");
  // The index linked them, and the queue no longer holds the pair.
  const steward = await server.token(DEMO.institutionAdmin);
  const left = await server.api("GET", "/api/mpi/reviews", { token: steward });
  assert.equal(left.status, 200);
  assert.ok(!(left.body.reviews || []).some((r) => r.patient === patient), "gone from the queue");
  const pa = await server.api("GET", "/api/mpi/persons?patient=Patient/" + a.body.id, { token: steward });
  const pb = await server.api("GET", "/api/mpi/persons?patient=" + patient, { token: steward });
  assert.equal(pb.body.id, pa.body.id, "one person now");
  await page.reload();
  await page.getByRole("heading", { name: "疑似重复档案核对" }).waitFor();
  await page.locator("#review-list li, #reviews-none:not([hidden])").first().waitFor();
  assert.equal(await item.count(), 0, "still gone after a reload");
  expectClean(assert, page);
  await page.context().close();
});
