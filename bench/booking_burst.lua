-- POST /fhir/R4/Appointment/$book with random (patient, slot) pairs: each wrk thread takes
-- its share of the patients (one id per line of JK_BOOK_PATIENTS) in a shuffled cycle and a
-- random slot of JK_BOOK_SLOTS for each request, booked at the window with the bearer token
-- JK_TOKEN. JK_BOOK_OPEN_MS is the instant the places open (ms since the epoch).
--
-- Besides wrk's own summary, done() prints one BOOKING line: the responses by status, those
-- before the opening, and the successful part of the run (from the opening to the last 201):
-- how long it lasted, the attempts answered in it, and the latency of the 201s themselves; and
-- a TIMELINE line: answers per second from the opening (negative: before it).
-- A 201 is matched to its request by its patient: a thread sends a patient's next attempt
-- only after a whole cycle of its patients (far more than its connections), so the last send
-- time recorded for that patient is the request's.
local report = done -- bench/report.lua's, concatenated before this file
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } jk_bench_ts;
int clock_gettime(int clk, jk_bench_ts *ts);
]]
local ts = ffi.new("jk_bench_ts")
local function now_ms() -- CLOCK_REALTIME, as the server's
  ffi.C.clock_gettime(0, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local threads, n_threads = {}, 0
setup = function(thread)
  thread:set("index", n_threads)
  n_threads = n_threads + 1
  threads[#threads + 1] = thread
end

local pats, slots, sent, next_pat = {}, {}, {}, 0
local open_ms
init = function(args)
  local n = tonumber(os.getenv("JK_BENCH_THREADS") or "2")
  local k = 0
  for line in io.lines(os.getenv("JK_BOOK_PATIENTS")) do
    if k % n == index then pats[#pats + 1] = line end
    k = k + 1
  end
  for line in io.lines(os.getenv("JK_BOOK_SLOTS")) do slots[#slots + 1] = line end
  math.randomseed(1000 + index)
  for i = #pats, 2, -1 do
    local j = math.random(i)
    pats[i], pats[j] = pats[j], pats[i]
  end
  open_ms = tonumber(os.getenv("JK_BOOK_OPEN_MS"))
  headers = {["Authorization"] = "Bearer " .. os.getenv("JK_TOKEN"),
             ["Content-Type"] = "application/fhir+json"}
  -- read by done() through thread:get (numbers and strings only)
  n201, n409, n422, nother, before, first201, last201 = 0, 0, 0, 0, 0, 0, 0
  ok_lat, hist = "", "" -- hist: "bucket:answers," per 10 ms from the opening
end

local cur_b, cur_n = nil, 0
local function count(t)
  local b = math.floor((t - open_ms) / 10)
  if b ~= cur_b then
    if cur_b then hist = hist .. cur_b .. ":" .. cur_n .. "," end
    cur_b, cur_n = b, 0
  end
  cur_n = cur_n + 1
end

request = function()
  next_pat = next_pat % #pats + 1
  local p = pats[next_pat]
  local s = slots[math.random(#slots)]
  sent[p] = now_ms()
  return wrk.format("POST", "/fhir/R4/Appointment/$book", headers,
    '{"resourceType":"Parameters","parameter":[{"name":"slot","valueReference":' ..
    '{"reference":"Slot/' .. s .. '"}},{"name":"patient","valueReference":' ..
    '{"reference":"Patient/' .. p .. '"}}]}')
end

response = function(status, hdrs, body)
  local t = now_ms()
  if status == 201 then n201 = n201 + 1
  elseif status == 409 then n409 = n409 + 1
  elseif status == 422 then n422 = n422 + 1
  else nother = nother + 1 end
  count(t)
  if t < open_ms then
    before = before + 1
  elseif status == 201 then
    if first201 == 0 then first201 = t end
    last201 = t
    local p = body:match('"reference":"Patient/([^"]+)"')
    if p and sent[p] then ok_lat = ok_lat .. string.format("%.2f,", t - sent[p]) end
  end
end

local function percentile(sorted, q)
  if #sorted == 0 then return 0 end
  return sorted[math.max(1, math.ceil(#sorted * q / 100))]
end

done = function(summary, latency, requests)
  report(summary, latency, requests)
  local tot = {n201 = 0, n409 = 0, n422 = 0, nother = 0, before = 0}
  local first, last, lat, buckets = math.huge, 0, {}, {}
  for _, th in ipairs(threads) do
    for k, _ in pairs(tot) do tot[k] = tot[k] + th:get(k) end
    local f, l = th:get("first201"), th:get("last201")
    if f > 0 and f < first then first = f end
    if l > last then last = l end
    for v in string.gmatch(th:get("ok_lat"), "([^,]+),") do lat[#lat + 1] = tonumber(v) end
    for b, n in string.gmatch(th:get("hist"), "(-?%d+):(%d+),") do
      b = tonumber(b)
      buckets[b] = (buckets[b] or 0) + tonumber(n)
    end
  end
  table.sort(lat)
  local open = tonumber(os.getenv("JK_BOOK_OPEN_MS"))
  local window = last > 0 and (last - open) / 1000 or 0
  local last_b = math.floor((last - open) / 10)
  local secs, lo, hi = {}, 0, 0
  tot.window_n = 0
  for b, n in pairs(buckets) do
    if b >= 0 and b <= last_b then tot.window_n = tot.window_n + n end
    local s = math.floor(b / 100)
    secs[s] = (secs[s] or 0) + n
    lo, hi = math.min(lo, s), math.max(hi, s)
  end
  local tl = {}
  for s = lo, hi do tl[#tl + 1] = s .. ":" .. (secs[s] or 0) end
  io.write(string.format(
    "BOOKING 201=%d 409=%d 422=%d other=%d before_open=%d first201_after_open_ms=%.0f " ..
    "window_s=%.3f window_attempts=%d window_attempts_per_s=%.0f window_201_per_s=%.0f " ..
    "ok_p50_ms=%.2f ok_p99_ms=%.2f ok_max_ms=%.2f ok_matched=%d\n",
    tot.n201, tot.n409, tot.n422, tot.nother, tot.before, last > 0 and first - open or -1,
    window, tot.window_n, window > 0 and tot.window_n / window or 0,
    window > 0 and tot.n201 / window or 0, percentile(lat, 50), percentile(lat, 99),
    lat[#lat] or 0, #lat))
  io.write("TIMELINE answers per second from the opening: " .. table.concat(tl, " ") .. "\n")
end
