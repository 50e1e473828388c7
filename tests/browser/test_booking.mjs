// test_booking.mjs - booking through the pages: a resident finds a department's slots with the
// places left, books one, sees it among their appointments and cancels it; holds a place and
// confirms it before the countdown ends; sees a refusal (one booking per session) as the server
// words it, in Chinese and in English; is offered the waiting list of a full slot. An
// institution's administrator publishes a schedule with a session template and an exception,
// generates its slots, sees their places per channel and the day's statistics, and residents
// then find them. The desk checks a booking in by the resident's health card and completes it.
// Every step is checked on the page and, where it changed something, through the API.
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";
import { DEMO, ROOT, Server, expectClean, launchBrowser, logIn, phonePage } from "./harness.mjs";

const FHIR = "/fhir/R4";
const SESSION = "https://jiankang.example/fhir/StructureDefinition/schedule-session";
const EXCEPTION = "https://jiankang.example/fhir/StructureDefinition/schedule-exception";
const WEEKDAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const HOUR_MS = 3600 * 1000;
const RULES = JSON.parse(fs.readFileSync(path.join(ROOT, "rules", "booking.json"), "utf8")).rules;
const HOLIDAYS = new Set((RULES["holiday.dates"].value || []).map((h) => (typeof h === "string" ? h : h.date)));

let server, browser, has = {}, tok = {};

before(async () => {
  server = await new Server().start();
  browser = await launchBrowser();
  tok.resident = await server.token(DEMO.resident);
  tok.his = await server.systemToken();
  has.booking = await server.hasEndpoint("GET", "/api/booking/me", tok.resident);
  has.generate = await server.hasEndpoint("POST", FHIR + "/Schedule/x/$generate", tok.his);
});

after(async () => {
  if (browser) await browser.close();
  if (server) await server.stop();
});

function needs(t, ...what) {
  const missing = what.filter((w) => !has[w]);
  if (missing.length) t.skip("waits for " + missing.map((w) => ({ booking: "/api/booking", generate: "Schedule/$generate" })[w]).join(", "));
  return missing.length > 0;
}

// ---- dates in the region's time (UTC+8) ----

function day(offset = 0) {
  return new Date(Date.now() + 8 * HOUR_MS + offset * 24 * HOUR_MS).toISOString().slice(0, 10);
}

function weekday(d) {
  return WEEKDAYS[new Date(d + "T00:00:00Z").getUTCDay()];
}

// The first day from offset on that is no public holiday.
function workday(offset) {
  for (let i = offset; i < offset + 7; i++) if (!HOLIDAYS.has(day(i))) return day(i);
  throw new Error("no working day");
}

// "08:00" of an ISO instant in UTC+8.
function hm(iso) {
  return new Date(Date.parse(iso) + 8 * HOUR_MS).toISOString().slice(11, 16);
}

// ---- the API ----

function params(obj) {
  return { resourceType: "Parameters", parameter: Object.entries(obj).map(([name, v]) =>
    (/^[A-Z]\w+\//.test(v) ? { name, valueReference: { reference: v } } : { name, valueString: v })) };
}

async function slots(query, token = tok.resident) {
  const r = await server.api("GET", "/api/slots?" + query, { token });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.slots;
}

// The first slot of service with an online place, from the day offset days ahead on.
async function bookable(service, offset) {
  const list = await slots("service=HealthcareService/" + service + "&date=" + day(offset) + "&days=7");
  const s = list.find((x) => x.remaining > 0 && !HOLIDAYS.has(x.start.slice(0, 10)));
  assert.ok(s, "a bookable slot of " + service + " from " + day(offset));
  return s;
}

async function myBookings() {
  const r = await server.api("GET", "/api/booking/me", { token: tok.resident });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.bookings;
}

// A Schedule of the hospital's system with one session on the weekday of d, and its slots.
async function publish(id, service, d, start, end, minutes, per) {
  const sched = { resourceType: "Schedule", id, active: true, actor: [{ reference: "HealthcareService/" + service }],
    extension: [{ url: SESSION, extension: [{ url: "day", valueCode: weekday(d) }, { url: "start", valueTime: start + ":00" },
      { url: "end", valueTime: end + ":00" }, { url: "sliceMinutes", valuePositiveInt: minutes },
      { url: "perSlice", valuePositiveInt: per }] }] };
  const w = await server.api("PUT", FHIR + "/Schedule/" + id, { token: tok.his, json: sched });
  assert.ok(w.status === 201 || w.status === 200, JSON.stringify(w.body));
  const g = await server.api("POST", FHIR + "/Schedule/" + id + "/$generate", { token: tok.his });
  assert.equal(g.status, 200, JSON.stringify(g.body));
}

// ---- the pages ----

async function residentBooking() {
  const page = await phonePage(browser);
  await logIn(page, server.base, DEMO.resident);
  await page.getByRole("link", { name: "预约挂号" }).click();
  await page.waitForURL(/\/web\/booking\.html/);
  await page.getByRole("heading", { name: "我的预约" }).waitFor();
  await page.locator("#org option").first().waitFor({ state: "attached" });
  return page;
}

async function find(page, { org = "Organization/hosp-fz-1", service, doctor, date }) {
  await page.getByLabel("医疗机构").selectOption(org);
  if (doctor) await page.locator("#doctor option[value='" + doctor + "']").waitFor({ state: "attached" });
  if (service) await page.getByLabel("科室").selectOption(service);
  if (doctor) await page.getByLabel("医生").selectOption(doctor);
  await page.getByLabel("就诊日期（起）").fill(date);
  await page.getByRole("button", { name: "查询号源" }).click();
}

// The slot's item, its day opened.
async function slotItem(page, slot) {
  const li = page.locator('#slots li[data-slot="' + slot + '"]');
  await li.waitFor({ state: "attached" });
  const det = page.locator("#slots details").filter({ has: page.locator('li[data-slot="' + slot + '"]') });
  if (!(await det.evaluate((d) => d.open))) await det.locator("summary").click();
  await li.waitFor();
  return li;
}

test("a resident finds a department's slots, books one, sees it and cancels it", async (t) => {
  if (needs(t, "booking")) return;
  const s = await bookable("hs-fz1-cardio", 2);
  const page = await residentBooking();
  await find(page, { service: "HealthcareService/hs-fz1-cardio", date: s.start.slice(0, 10) });
  const li = await slotItem(page, s.slot);
  assert.equal(await li.locator(".remain").textContent(), "剩余 " + s.remaining + " 个号");
  assert.ok((await li.textContent()).startsWith(hm(s.start) + "–" + hm(s.end)), await li.textContent());
  await li.getByRole("button", { name: "预约", exact: true }).click();
  await page.locator("#book-status", { hasText: "预约成功" }).waitFor();
  // the places left went down by one, on the page and in the pool
  await page.locator('#slots li[data-slot="' + s.slot + '"] .remain', { hasText: "剩余 " + (s.remaining - 1) + " 个号" }).waitFor();
  const after = (await slots("service=HealthcareService/hs-fz1-cardio&date=" + s.start.slice(0, 10) + "&days=1")).find((x) => x.slot === s.slot);
  assert.equal(after.remaining, s.remaining - 1);
  // my appointments: upcoming, booked, with the free-cancellation deadline
  const mine = page.locator('#upcoming li[data-slot="' + s.slot + '"]');
  await mine.waitFor();
  const text = await mine.textContent();
  assert.ok(text.includes("已预约") && text.includes("福州市第一医院") && text.includes("心血管内科（普通号）"), text);
  assert.match(text, /15:00 前可免费取消/);
  const booked = (await myBookings()).find((b) => b.slot === s.slot && b.state === "booked");
  assert.ok(booked, "the API has the booking");
  // cancel.deadline: 15:00 the day before the visit, local time
  const visitDay = new Date(Date.parse(s.start) + 8 * HOUR_MS).toISOString().slice(0, 10);
  const dayBefore = new Date(Date.parse(visitDay) - 24 * HOUR_MS).toISOString().slice(0, 10);
  assert.equal(booked.cancelBy, new Date(dayBefore + "T15:00:00+08:00").toISOString());
  assert.equal(await mine.getAttribute("data-appointment"), booked.appointment);
  // cancel: asked once more, then cancelled and among the past ones
  await mine.getByRole("button", { name: "取消预约" }).click();
  await mine.getByRole("button", { name: "确认取消" }).click();
  await page.getByText("预约已取消。").waitFor();
  await page.locator('#past li[data-appointment="' + booked.appointment + '"]', { hasText: "已取消" }).waitFor();
  assert.equal(await page.locator('#upcoming li[data-appointment="' + booked.appointment + '"]').count(), 0);
  const gone = (await myBookings()).find((b) => b.appointment === booked.appointment);
  assert.equal(gone.state, "cancelled");
  expectClean(assert, page);
  await page.context().close();
});

test("a resident holds a place, sees the countdown and confirms it", async (t) => {
  if (needs(t, "booking")) return;
  const s = await bookable("hs-fz1-gastro", 2);
  const page = await residentBooking();
  await find(page, { service: "HealthcareService/hs-fz1-gastro", date: s.start.slice(0, 10) });
  const li = await slotItem(page, s.slot);
  await li.getByRole("button", { name: "先锁号" }).click();
  const left = li.locator(".countdown");
  await left.waitFor();
  assert.match(await left.textContent(), /^已锁号，请在 [45]:\d\d 内确认$/);
  const held = (await myBookings()).find((b) => b.slot === s.slot);
  assert.equal(held.state, "held", "the API has the hold");
  await li.getByRole("button", { name: "确认预约" }).click();
  await page.locator("#book-status", { hasText: "预约成功" }).waitFor();
  await page.locator('#upcoming li[data-slot="' + s.slot + '"][data-state="booked"]').waitFor();
  assert.equal((await myBookings()).find((b) => b.slot === s.slot).state, "booked");
  expectClean(assert, page);
  await page.context().close();
});

test("a refusal is shown as the server words it: one booking per session, in either language", async (t) => {
  if (needs(t, "booking")) return;
  // the expert clinic of Dr 李建国: one slot booked through the API, a second of the same
  // morning refused on the page
  const first = await bookable("hs-fz1-cardio-expert", 2);
  const d = first.start.slice(0, 10);
  const same = (await slots("practitioner=Practitioner/prac-1&date=" + d + "&days=1"))
    .find((x) => x.slot !== first.slot && x.remaining > 0 && hm(x.start) < "12:00");
  assert.ok(same, "a second slot that morning");
  const r = await server.api("POST", FHIR + "/Appointment/$book", { token: tok.resident, json: params({ slot: first.slot }) });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  const page = await residentBooking();
  await find(page, { doctor: "Practitioner/prac-1", date: d });
  const li = await slotItem(page, same.slot);
  assert.ok((await li.textContent()).includes("李建国"), "the doctor's name: " + (await li.textContent()));
  await li.getByRole("button", { name: "预约", exact: true }).click();
  const status = page.locator("#book-status");
  await status.filter({ hasText: "只能预约一个号" }).waitFor();
  assert.match(await status.textContent(), /limit\.session_scope/);
  assert.equal(await status.getAttribute("data-kind"), "error");
  // nothing was booked
  assert.ok(!(await myBookings()).some((b) => b.slot === same.slot));
  // in English, the server's English words
  await page.getByRole("button", { name: "English" }).click();
  await page.getByRole("heading", { name: "My appointments" }).waitFor();
  await li.getByRole("button", { name: "Book", exact: true }).click();
  await status.filter({ hasText: "limit.session_scope" }).filter({ hasNotText: "只能" }).waitFor();
  assert.match(await status.textContent(), /[A-Za-z]{4,}/);
  await page.getByRole("button", { name: "中文" }).click();
  expectClean(assert, page);
  await page.context().close();
});

test("a full slot offers the waiting list", async (t) => {
  if (needs(t, "booking", "generate")) return;
  // one place per slice (the online one); the resident's ward takes it
  const d = workday(2);
  await publish("sched-web-full", "hs-fz1-ct", d, "19:00", "19:30", 30, 1);
  const slot = "Slot/sched-web-full-" + d.replace(/-/g, "") + "1900";
  const b = await server.api("POST", FHIR + "/Appointment/$book", { token: tok.resident, json: params({ slot, patient: "Patient/pat-5" }) });
  assert.equal(b.status, 201, JSON.stringify(b.body));
  const page = await residentBooking();
  await find(page, { service: "HealthcareService/hs-fz1-ct", date: d });
  const li = await slotItem(page, slot);
  assert.equal(await li.locator(".remain").textContent(), "已约满");
  assert.equal(await li.getByRole("button", { name: "预约", exact: true }).count(), 0, "no booking of a full slot");
  await li.getByRole("button", { name: "加入候补" }).click();
  await page.getByText("已加入候补队列").waitFor();
  // the resident is on the list: joining again is refused
  const again = await server.api("POST", "/api/booking/waitlist", { token: tok.resident, json: params({ slot }) });
  assert.equal(again.status, 409, JSON.stringify(again.body));
  assert.equal(again.body.issue[0].details.coding[0].code, "waiting");
  expectClean(assert, page);
  await page.context().close();
});

test("an institution's administrator publishes a schedule and generates slots that residents then find", async (t) => {
  if (needs(t, "booking", "generate")) return;
  const d = workday(3);
  const closed = new Date(Date.parse(d) + 7 * 24 * HOUR_MS).toISOString().slice(0, 10); // a week later
  const page = await phonePage(browser, { viewport: { width: 1280, height: 900 } });
  await logIn(page, server.base, DEMO.institutionAdmin);
  await page.getByRole("link", { name: "排班与号源" }).click();
  await page.waitForURL(/\/web\/schedules\.html/);
  await page.locator("#service-list li", { hasText: "消化内科（普通号）" }).waitFor();
  assert.ok((await page.locator("#service-list").textContent()).includes("¥10"));
  const form = page.locator("#new-schedule");
  await form.getByLabel("科室").selectOption("HealthcareService/hs-fz1-gastro");
  await form.locator('#s-days input[value="' + weekday(d) + '"]').check();
  await form.getByLabel("开始时间").fill("18:00");
  await form.getByLabel("结束时间").fill("19:00");
  await form.getByLabel("每个时段（分钟）").fill("30");
  await form.getByLabel("每时段号数").fill("4");
  await form.getByLabel("从").fill(closed);
  await form.getByLabel("至").fill(closed);
  await form.getByLabel("原因").fill("外出培训");
  await form.getByRole("button", { name: "保存排班" }).click();
  await page.locator("#create-status", { hasText: "排班已保存" }).waitFor();
  const id = /（(.+)）/.exec(await page.locator("#create-status").textContent())[1];
  const item = page.locator('#schedule-list li[data-schedule="' + id + '"]');
  await item.waitFor();
  const text = await item.textContent();
  assert.ok(text.includes("18:00–19:00，每 30 分钟一个时段，每时段 4 个号"), text);
  assert.ok(text.includes("停诊 " + closed + " 至 " + closed + "：外出培训"), text);
  // the Schedule is stored as written, held by the hospital
  const admin = await server.token(DEMO.institutionAdmin);
  const stored = await server.api("GET", FHIR + "/Schedule/" + id, { token: admin });
  assert.equal(stored.status, 200, JSON.stringify(stored.body));
  assert.equal(stored.body.actor[0].reference, "HealthcareService/hs-fz1-gastro");
  // generate: slots on the day, none open on the day closed
  await item.getByRole("button", { name: "生成号源" }).click();
  await page.locator("#gen-status", { hasText: "已生成" }).waitFor();
  const created = Number(/已生成 (\d+) 个号源/.exec(await page.locator("#gen-status").textContent())[1]);
  assert.ok(created >= 2, "slots generated: " + created);
  const slot = "Slot/" + id + "-" + d.replace(/-/g, "") + "1800";
  const pool = await slots("service=HealthcareService/hs-fz1-gastro&date=" + d + "&days=1");
  const s = pool.find((x) => x.slot === slot);
  assert.ok(s && s.capacity === 4, "the slot is in the pool: " + JSON.stringify(pool.map((x) => x.slot)));
  const later = await slots("service=HealthcareService/hs-fz1-gastro&date=" + closed + "&days=1");
  assert.ok(!later.some((x) => x.slot.startsWith("Slot/" + id) && x.status === "open"), "closed on " + closed);
  // the places per channel of the department on that day, as the window sees them
  await page.locator("#q-service").selectOption("HealthcareService/hs-fz1-gastro");
  await page.locator("#q-date").fill(d);
  await page.getByRole("button", { name: "查看号源" }).click();
  const row = page.locator('#quota-table tr[data-slot="' + slot + '"]');
  await row.waitFor();
  const cells = await row.locator("td").allTextContents();
  assert.equal(cells[0], "18:00–18:30");
  assert.equal(cells[1], "4");
  for (const [i, ch] of ["window", "online", "phone", "referral", "family"].entries()) {
    const api = (await slots("service=HealthcareService/hs-fz1-gastro&date=" + d + "&days=1&channel=" + ch, admin)).find((x) => x.slot === slot);
    assert.ok(cells[3 + i].startsWith(String(api.remaining)), ch + ": " + cells[3 + i] + " vs " + api.remaining);
  }
  // the statistics of that day: published places as the pool counts them
  await page.locator("#st-date").fill(d);
  await page.getByRole("button", { name: "查看", exact: true }).click();
  const stats = await server.api("GET", "/api/booking/stats?from=" + d + "&to=" + d, { token: admin });
  assert.equal(stats.status, 200);
  const total = page.locator('#stats-table tr.total td[data-col="published"]');
  await total.filter({ hasText: String(stats.body.total.published) }).waitFor();
  const gastro = stats.body.rows.find((r) => r.service === "hs-fz1-gastro");
  assert.ok(gastro.published >= 8, "the new slices are counted: " + gastro.published);
  assert.equal(await page.locator('#stats-table tr[data-service="HealthcareService/hs-fz1-gastro"] td[data-col="published"]').textContent(),
    String(gastro.published));
  expectClean(assert, page);
  await page.context().close();
  // a resident finds the new slot with its places
  const res = await residentBooking();
  await find(res, { service: "HealthcareService/hs-fz1-gastro", date: d });
  const li = await slotItem(res, slot);
  assert.equal(await li.locator(".remain").textContent(), "剩余 " + s.remaining + " 个号");
  expectClean(assert, res);
  await res.context().close();
});

test("the desk checks a booking in by the health card and completes it", async (t) => {
  if (needs(t, "booking", "generate")) return;
  // a slice later today (the pool books no slice that has started)
  const now = new Date(Date.now() + 8 * HOUR_MS);
  const startMin = Math.ceil((now.getUTCHours() * 60 + now.getUTCMinutes() + 20) / 30) * 30;
  if (startMin + 30 > 24 * 60 - 1 || HOLIDAYS.has(day(0))) return t.skip("no slice left today");
  const clock = (m) => String(Math.floor(m / 60)).padStart(2, "0") + ":" + String(m % 60).padStart(2, "0");
  await publish("sched-web-desk", "hs-fz1-cardio", day(0), clock(startMin), clock(startMin + 30), 30, 4);
  const slot = "Slot/sched-web-desk-" + day(0).replace(/-/g, "") + clock(startMin).replace(":", "");
  const b = await server.api("POST", FHIR + "/Appointment/$book", { token: tok.resident, json: params({ slot }) });
  assert.equal(b.status, 201, JSON.stringify(b.body));
  // the resident's card and a fresh code
  let card = ((await server.api("GET", "/api/cards", { token: tok.resident })).body.cards || []).find((c) => c.status === "active");
  if (!card) {
    const r = await server.api("POST", "/api/cards", { token: tok.resident, json: { patient: "Patient/pat-1" } });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    card = r.body;
  }
  const qr = await server.api("GET", "/api/cards/" + card.id + "/qr", { token: tok.resident });
  assert.equal(qr.status, 200, JSON.stringify(qr.body));
  const page = await phonePage(browser, { viewport: { width: 1280, height: 900 } });
  await logIn(page, server.base, DEMO.doctor);
  await page.getByRole("link", { name: "预约签到" }).click();
  await page.waitForURL(/\/web\/desk\.html/);
  const item = page.locator('#day-list li[data-appointment="Appointment/' + b.body.id + '"]');
  await item.waitFor();
  assert.ok((await item.textContent()).includes("王小明"), await item.textContent());
  assert.equal(await item.locator(".state").textContent(), "已预约");
  await page.getByLabel("扫码内容").fill(qr.body.content);
  await page.getByRole("button", { name: "核验并签到" }).click();
  await page.locator("#scan-status", { hasText: "王小明 已签到：" + clock(startMin) }).waitFor();
  await item.locator(".state", { hasText: "已签到" }).waitFor();
  let mine = (await myBookings()).find((x) => x.appointment === "Appointment/" + b.body.id);
  assert.equal(mine.state, "arrived");
  await item.getByRole("button", { name: "完成就诊" }).click();
  await item.locator(".state", { hasText: "已就诊" }).waitFor();
  mine = (await myBookings()).find((x) => x.appointment === "Appointment/" + b.body.id);
  assert.equal(mine.state, "fulfilled");
  expectClean(assert, page);
  await page.context().close();
});
