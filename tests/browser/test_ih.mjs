// test_ih.mjs - the internet hospital through its pages, from the visit to the medicine at the
// door: a resident opens a follow-up visit for their hypertension and writes (text and a
// picture); the doctor sees the visit in the queue, replies, writes a prescription whose live
// check warns of a duplicate therapy (and no longer once the second drug is gone) and signs
// it; the hospital's pharmacist approves it; the resident sees the redemption code and its QR
// and chooses delivery from an outside pharmacy; the pharmacy verifies the code, dispenses and
// moves the delivery order through accepted, packed, shipped (carrier, waybill), delivered and
// signed for; the resident sees it signed for. Also: a diagnosis too old for a follow-up is
// refused as the server words it, with the way to booking; the doctor sends a patient to
// in-person care and the resident reads why; a rejection with coded reasons reaches the doctor.
// Every step is checked on the page and, where it changed something, through the API.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { DEMO, Server, expectClean, launchBrowser, logIn, phonePage } from "./harness.mjs";

const FHIR = "/fhir/R4";
const ICD10 = "http://hl7.org/fhir/sid/icd-10";
const AMLODIPINE = "JK-C08CA01-01"; // 苯磺酸氨氯地平片, a calcium-channel blocker
const NIFEDIPINE = "JK-C08CA05-01"; // 硝苯地平控释片, of the same group
const PHARMACY = "Organization/pharm-fz-1";
const WIDE = { width: 1280, height: 900 };
// the smallest PNG (1x1): what a phone camera sends, in miniature
const PNG = Buffer.from("89504e470d0a1a0a0000000d4948445200000001000000010806000000" +
  "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082", "hex");

let server, browser, has = {}, tok = {};

before(async () => {
  server = await new Server().start();
  browser = await launchBrowser();
  tok.resident = await server.token(DEMO.resident);
  tok.doctor = await server.token(DEMO.doctor);
  tok.his = await server.systemToken();
  has.visits = await server.hasEndpoint("GET", "/api/ih/visits", tok.resident);
  has.rx = await server.hasEndpoint("POST", "/api/rx/check", tok.doctor);
  has.flow = await server.hasEndpoint("GET", "/api/rx/review-queue", tok.doctor);
  if (has.flow) {
    tok.reviewer = await server.token(DEMO.reviewer);
    tok.pharmacy = await server.token(DEMO.pharmacy);
  }
});

after(async () => {
  if (browser) await browser.close();
  if (server) await server.stop();
});

const WAITS = { visits: "/api/ih/visits", rx: "/api/rx/check and /api/rx/prescriptions",
  flow: "/api/rx/review-queue, review, redeem, pharmacy, dispense, delivery" };
function needs(t, ...what) {
  const missing = what.filter((w) => !has[w]);
  if (missing.length) t.skip("waits for " + missing.map((w) => WAITS[w]).join("; "));
  return missing.length > 0;
}

// ---- the API ----

async function ok(method, path, token, json, what) {
  const r = await server.api(method, path, { token, json });
  assert.ok(r.status >= 200 && r.status < 300, (what || method + " " + path) + ": " + r.status + " " + JSON.stringify(r.body));
  return r.body;
}

async function visitsOf(token) {
  return (await ok("GET", "/api/ih/visits", token)).visits;
}

async function messages(visit, token = tok.resident) {
  const b = await ok("GET", "/api/ih/visits/" + visit + "/messages", token);
  return (b.entry || []).map((e) => e.resource);
}

async function prescription(id, token = tok.resident) {
  return ok("GET", "/api/rx/prescriptions/" + id, token);
}

// Ends every live visit of pat-1 with prac-1, so that each test starts with an empty queue.
async function endVisits() {
  for (const v of await visitsOf(tok.doctor))
    await ok("POST", "/api/ih/visits/" + v.id + "/end", tok.doctor, { outcome: "finished" });
}

// ---- the pages ----

async function residentPage() {
  const page = await phonePage(browser);
  await logIn(page, server.base, DEMO.resident);
  await page.getByRole("link", { name: "互联网医院复诊" }).click();
  await page.waitForURL(/\/web\/visit\.html/);
  await page.getByRole("heading", { name: "发起复诊" }).waitFor();
  return page;
}

async function staffPage(user, link, url) {
  const page = await phonePage(browser, { viewport: WIDE });
  await logIn(page, server.base, user);
  await page.getByRole("link", { name: link }).click();
  await page.waitForURL(url);
  return page;
}

// The resident starts a follow-up visit of their hypertension with 李建国; the visit's id.
async function startVisit(page) {
  const cond = page.getByLabel("复诊的疾病");
  await assert.doesNotReject(cond.locator("option", { hasText: "原发性高血压 (I10)" }).waitFor({ state: "attached" }));
  await cond.selectOption({ label: await cond.locator("option", { hasText: "(I10)" }).first().textContent() });
  assert.equal(await page.getByLabel("互联网医院").inputValue(), "Organization/hosp-fz-1", "the institution of the diagnosis");
  await page.getByLabel("医生").selectOption("PractitionerRole/prac-1-role");
  assert.equal(await page.getByLabel("医生").locator("option:checked").textContent(), "李建国");
  await page.getByRole("button", { name: "发起复诊" }).click();
  await page.getByText("复诊已开始，请在下方与医生交流。").waitFor();
  const open = (await visitsOf(tok.resident)).filter((v) => v.status === "open");
  assert.equal(open.length, 1, "one open visit in the API");
  assert.equal(open[0].doctor, "PractitionerRole/prac-1-role");
  assert.equal(open[0].condition.code, "I10");
  await page.locator(`#visit-list li[data-visit="${open[0].id}"]`).getByText("问诊中").waitFor();
  await page.locator("#chat").waitFor();
  return open[0].id;
}

async function sendText(page, text) {
  await page.locator("#chat-form").getByLabel("消息").fill(text);
  await page.locator("#chat-form").getByRole("button", { name: "发送", exact: true }).click();
  await page.locator("#chat-list li.mine", { hasText: text }).waitFor();
}

// The doctor fills item i of the prescription.
async function fillItem(page, i, { drug, dose, times = 1, days = 7, quantity = 1 }) {
  await page.locator("#rx-drug-" + i).fill(drug);
  await page.locator("#rx-dose-" + i).fill(String(dose));
  await page.locator("#rx-timesPerDay-" + i).fill(String(times));
  await page.locator("#rx-days-" + i).fill(String(days));
  await page.locator("#rx-quantity-" + i).fill(String(quantity));
}

test("the whole path: visit, chat, prescription with a live warning, review, code, delivery, signed for", async (t) => {
  if (needs(t, "visits", "rx", "flow")) return;
  await endVisits();
  const resident = await residentPage();
  const visit = await startVisit(resident);

  // the resident writes, with a picture
  await sendText(resident, "最近血压 150/95，偶尔头晕");
  await resident.locator("#chat-image").setInputFiles({ name: "bp.png", mimeType: "image/png", buffer: PNG });
  await resident.locator("#chat-list li.mine img").waitFor();
  let msgs = await messages(visit);
  assert.equal(msgs.length, 2, "two Communications in the API");
  assert.deepEqual(msgs.map((m) => m.sender.reference), ["Patient/pat-1", "Patient/pat-1"]);
  assert.equal(msgs[0].payload[0].contentString, "最近血压 150/95，偶尔头晕");
  assert.equal(msgs[1].payload[0].contentAttachment.contentType, "image/png");

  // the doctor: the queue, the visit, the chat
  const doctor = await staffPage(DEMO.doctor, "互联网诊室", /\/web\/doctor\.html/);
  const item = doctor.locator(`#queue-list li[data-visit="${visit}"]`);
  await item.getByText(/王小明/).waitFor();
  await item.getByText("原发性高血压 (I10)").waitFor();
  await item.getByRole("button", { name: "接诊" }).click();
  await doctor.locator("#visit-patient").getByText(/王小明 · 男/).waitFor();
  await doctor.locator("#chat-list li.theirs", { hasText: "偶尔头晕" }).waitFor();
  await doctor.locator("#chat-list li.theirs img").waitFor();
  await sendText(doctor, "请继续服用氨氯地平，每日一次");
  await resident.locator("#chat-list li.theirs", { hasText: "请继续服用氨氯地平" }).waitFor({ timeout: 15000 });
  msgs = await messages(visit, tok.doctor);
  assert.equal(msgs.at(-1).sender.reference, "PractitionerRole/prac-1-role");

  // the prescription: a clean check, then a live warning of duplicate therapy, then clean again
  await fillItem(doctor, 0, { drug: AMLODIPINE, dose: 5 });
  await doctor.locator("#rx-check-state").getByText("检查通过，没有提示。").waitFor();
  assert.match(await doctor.locator("#rx-amount").textContent(), /¥\d+\.\d\d/);
  await doctor.getByRole("button", { name: "添加药品" }).click();
  await fillItem(doctor, 1, { drug: NIFEDIPINE, dose: 30 });
  const warning = doctor.locator('#rx-findings li[data-code="duplicate"][data-severity="warn"]');
  await warning.waitFor();
  assert.match(await warning.textContent(), /重复用药/);
  await doctor.locator("#rx-check-state").getByText("检查通过，但有提示，请确认后签名。").waitFor();
  const body = { visit: "Encounter/" + visit, items: [
    { drug: AMLODIPINE, dose: 5, timesPerDay: 1, days: 7, quantity: 1 },
    { drug: NIFEDIPINE, dose: 30, timesPerDay: 1, days: 7, quantity: 1 }] };
  const check = await ok("POST", "/api/rx/check", tok.doctor, body);
  assert.deepEqual(check.findings.map((f) => [f.code, f.severity]), [["duplicate", "warn"]], "the API finds the same");
  await doctor.locator("#rx-items fieldset[data-i='1']").getByRole("button", { name: "删除此药品" }).click();
  await doctor.locator("#rx-check-state").getByText("检查通过，没有提示。").waitFor();
  assert.equal(await warning.count(), 0, "the warning is gone with the second drug");

  await doctor.getByRole("button", { name: "签名并提交审核" }).click();
  const signed = doctor.locator("#rx-status");
  await signed.getByText(/已签名，等待药师审核/).waitFor();
  const rxId = /处方 (\S+) 已签名/.exec(await signed.textContent())[1];
  await doctor.locator(`#vrx-list li[data-rx="${rxId}"]`).getByText("待药师审核").waitFor();
  const verify = await ok("POST", FHIR + "/MedicationRequest/$verify-signature", tok.resident,
    { resourceType: "Parameters", parameter: [{ name: "prescription", valueString: rxId }] });
  assert.equal(verify.parameter.find((p) => p.name === "valid").valueBoolean, true, "the signature holds");
  assert.equal((await prescription(rxId)).status, "pending");

  // the hospital's pharmacist approves it
  const reviewer = await staffPage(DEMO.reviewer, "处方审核", /\/web\/review\.html/);
  const row = reviewer.locator(`#queue-list li[data-rx="${rxId}"]`);
  await row.getByText(/王小明/).waitFor();
  await row.getByText(/苯磺酸氨氯地平片 5 mg/).waitFor();
  await row.getByText("规则检查无提示。").waitFor();
  await row.getByRole("button", { name: "审核通过" }).click();
  await reviewer.locator("#queue-status").getByText(/已通过 王小明/).waitFor();
  await row.waitFor({ state: "detached" });
  assert.equal((await prescription(rxId)).status, "approved");

  // the resident sees the code and chooses delivery from the outside pharmacy
  await resident.getByRole("button", { name: "刷新" }).click();
  const mine = resident.locator(`#rx-list li[data-rx="${rxId}"]`);
  await mine.getByText("审核通过").waitFor();
  const detail = await prescription(rxId);
  assert.match(detail.code, /^\d{12}$/);
  await mine.locator(".redeem-code").getByText(detail.code).waitFor();
  assert.ok(await mine.locator(".qr svg path, .qr svg rect").count() > 0, "the QR code is drawn");
  await mine.getByLabel("药房", { exact: true }).selectOption(PHARMACY);
  await mine.getByLabel("配送到家").check();
  await mine.getByLabel("收货地址").fill("福州市鼓楼区五一北路 100 号 3 单元 501");
  await mine.getByRole("button", { name: "确认" }).click();
  await resident.locator("#rx-status").getByText("已提交配送订单，由 福州市鼓楼区健康大药房 配送。").waitFor();
  let after = await prescription(rxId);
  assert.equal(after.pharmacy, PHARMACY);
  assert.equal(after.delivery, "delivery");
  assert.ok(after.deliveryOrder, "a delivery order in the API");

  // the pharmacy verifies the code, dispenses and delivers
  const pharmacy = await staffPage(DEMO.pharmacy, "处方调配", /\/web\/pharmacy\.html/);
  await pharmacy.getByLabel("取药码（扫码或输入）").fill(detail.code);
  await pharmacy.getByRole("button", { name: "核验" }).click();
  await pharmacy.locator("#redeem-status").getByText(/取药码有效：王小明/).waitFor();
  const card = pharmacy.locator(`#rx-list li[data-rx="${rxId}"]`);
  await card.getByText(/五一北路 100 号/).waitFor();
  await card.getByRole("button", { name: "调配发药" }).click();
  await card.getByText("已调配发药。").waitFor();
  assert.equal((await prescription(rxId, tok.pharmacy)).status, "dispensed");
  const steps = [["接单", "accepted"], ["已打包", "packed"], ["发货", "shipped"], ["已送达", "delivered"], ["已签收", "signed"]];
  for (const [button, status] of steps) {
    if (status === "shipped") {
      await card.getByLabel("承运商").fill("顺丰速运");
      await card.getByLabel("运单号").fill("SF1234567890");
    }
    await card.getByRole("button", { name: button, exact: true }).click();
    await pharmacy.locator(`#rx-list li[data-rx="${rxId}"][data-delivery="${status}"]`).waitFor();
    assert.equal((await prescription(rxId)).deliveryOrder.status, status, "the order is " + status + " in the API");
  }
  await card.getByText("顺丰速运 运单号 SF1234567890").waitFor();

  // the resident sees it signed for
  await resident.getByRole("button", { name: "刷新" }).click();
  await mine.locator(".delivery .state").getByText("已签收", { exact: true }).waitFor();
  await mine.getByText("顺丰速运 运单号 SF1234567890").waitFor();
  after = await prescription(rxId);
  assert.equal(after.status, "dispensed");
  assert.equal(after.deliveryOrder.status, "signed");
  for (const p of [resident, doctor, reviewer, pharmacy]) expectClean(assert, p);
  await Promise.all([resident, doctor, reviewer, pharmacy].map((p) => p.context().close()));
});

// A visit of pat-1 with prac-1 for hypertension, opened through the API; its id.
async function openVisitApi() {
  const v = await ok("POST", "/api/ih/visits", tok.resident,
    { doctor: "PractitionerRole/prac-1-role", condition: { system: ICD10, code: "I10", display: "高血压" } });
  return v.id;
}

function daysAgo(n) {
  return new Date(Date.now() + 8 * 3600e3 - n * 86400e3).toISOString().slice(0, 10);
}

test("a diagnosis too old for a follow-up is refused as the server words it, with the way to booking", async (t) => {
  if (needs(t, "visits")) return;
  await ok("PUT", FHIR + "/Condition/ih-old-dm", tok.his, { resourceType: "Condition", id: "ih-old-dm",
    verificationStatus: { coding: [{ system: "http://terminology.hl7.org/CodeSystem/condition-ver-status", code: "confirmed" }] },
    code: { coding: [{ system: ICD10, code: "E11", display: "2型糖尿病" }], text: "2型糖尿病" },
    subject: { reference: "Patient/pat-1" }, recorder: { reference: "PractitionerRole/prac-1-role" },
    recordedDate: daysAgo(400) }, "an old diagnosis");
  const before = (await visitsOf(tok.resident)).length;
  const page = await residentPage();
  const cond = page.getByLabel("复诊的疾病");
  await cond.locator("option", { hasText: "(E11)" }).waitFor({ state: "attached" });
  await cond.selectOption({ label: await cond.locator("option", { hasText: "(E11)" }).textContent() });
  await page.getByLabel("医生").selectOption("PractitionerRole/prac-1-role");
  await page.getByRole("button", { name: "发起复诊" }).click();
  const status = page.locator("#start-status");
  await status.and(page.locator("[data-kind=error]")).waitFor();
  const r = await server.api("POST", "/api/ih/visits", { token: tok.resident,
    json: { doctor: "PractitionerRole/prac-1-role", condition: { system: ICD10, code: "E11", display: "2型糖尿病" } } });
  assert.equal(r.status, 422);
  assert.equal(r.body.issue[0].details.coding[0].code, "no-diagnosis");
  assert.equal(await status.textContent(), r.body.issue[0].diagnostics, "the server's words on the page");
  await page.getByRole("link", { name: "预约线下门诊" }).waitFor();
  assert.equal((await visitsOf(tok.resident)).length, before, "no visit was opened");
  expectClean(assert, page);
  await page.context().close();
});

test("the doctor sends the patient to in-person care with a reason; the resident reads it and can no longer write", async (t) => {
  if (needs(t, "visits")) return;
  await endVisits();
  const visit = await openVisitApi();
  const doctor = await staffPage(DEMO.doctor, "互联网诊室", /\/web\/doctor\.html/);
  await doctor.locator(`#queue-list li[data-visit="${visit}"]`).getByRole("button", { name: "接诊" }).click();
  await doctor.getByLabel("病情变化，转线下就诊").check();
  await doctor.getByRole("button", { name: "结束问诊" }).click();
  await doctor.locator("#end-status").getByText("转线下就诊须写明原因。").waitFor();
  assert.equal((await ok("GET", "/api/ih/visits/" + visit, tok.doctor)).status, "open", "nothing sent without a reason");
  await doctor.getByLabel("说明（转线下时必填）").fill("血压控制不佳，需线下调整用药");
  await doctor.getByRole("button", { name: "结束问诊" }).click();
  await doctor.locator("#end-status").getByText("已建议患者到线下就诊。").waitFor();
  await doctor.locator("#visit-status").getByText(/已转线下就诊/).waitFor();
  const v = await ok("GET", "/api/ih/visits/" + visit, tok.resident);
  assert.equal(v.status, "redirected");
  assert.equal(v.endReason, "血压控制不佳，需线下调整用药");
  assert.equal((await visitsOf(tok.doctor)).some((x) => x.id === visit), false, "gone from the queue");

  const resident = await residentPage();
  const item = resident.locator(`#visit-list li[data-visit="${visit}"]`);
  await item.getByText("已转线下就诊").waitFor();
  await item.getByRole("button", { name: "查看记录" }).click();
  await resident.locator("#chat-state").getByText("医生建议您到线下就诊：血压控制不佳，需线下调整用药").waitFor();
  assert.equal(await resident.locator("#chat-form").getByRole("button", { name: "发送", exact: true }).isDisabled(), true);
  for (const p of [doctor, resident]) {
    expectClean(assert, p);
    await p.context().close();
  }
});

test("a rejection with coded reasons and text reaches the doctor and the resident", async (t) => {
  if (needs(t, "visits", "rx", "flow")) return;
  await endVisits();
  const visit = await openVisitApi();
  const made = await ok("POST", "/api/rx/prescriptions", tok.doctor, { visit: "Encounter/" + visit,
    items: [{ drug: AMLODIPINE, dose: 10, timesPerDay: 1, days: 7, quantity: 1 }] });
  const id = made.prescription;
  const reviewer = await staffPage(DEMO.reviewer, "处方审核", /\/web\/review\.html/);
  const row = reviewer.locator(`#queue-list li[data-rx="${id}"]`);
  await row.getByText(/苯磺酸氨氯地平片 10 mg/).waitFor();
  await row.getByText("驳回…").click();
  await row.getByRole("button", { name: "驳回处方" }).click();
  await row.getByText("驳回须至少选择一个原因。").waitFor();
  assert.equal((await prescription(id, tok.reviewer)).status, "pending", "nothing decided without a reason");
  await row.getByLabel(/^2-5 /).check();
  await row.getByLabel("说明", { exact: true }).fill("起始剂量偏大，请从 5 mg 开始");
  await row.getByRole("button", { name: "驳回处方" }).click();
  await reviewer.locator("#queue-status").getByText(/已驳回 王小明/).waitFor();
  const p = await prescription(id);
  assert.equal(p.status, "rejected");
  assert.deepEqual(p.review.codes.map((c) => c.code), ["2-5"]);
  assert.equal(p.review.text, "起始剂量偏大，请从 5 mg 开始");

  const doctor = await staffPage(DEMO.doctor, "互联网诊室", /\/web\/doctor\.html/);
  await doctor.locator(`#queue-list li[data-visit="${visit}"]`).getByRole("button", { name: "接诊" }).click();
  const mine = doctor.locator(`#vrx-list li[data-rx="${id}"]`);
  await mine.getByText("审核未通过").waitFor();
  await mine.getByText("2-5 用法、用量不适宜的").waitFor();
  await mine.getByText("起始剂量偏大，请从 5 mg 开始").waitFor();

  const resident = await residentPage();
  const rx = resident.locator(`#rx-list li[data-rx="${id}"]`);
  await rx.getByText("审核未通过").waitFor();
  await rx.getByText("药师未通过此处方，请在问诊中联系医生。").waitFor();
  assert.equal(await rx.locator(".redeem-code").count(), 0, "no code for a rejected prescription");
  for (const pg of [reviewer, doctor, resident]) {
    expectClean(assert, pg);
    await pg.context().close();
  }
});
