-- POST /api/cards/verify with a code never sent before on every request: each code verifies
-- once, so the codes (one per line, from `jiankang card codes`) are split between wrk's
-- threads. Environment: JK_CARD_CODES (the file), JK_BENCH_THREADS (wrk -t), JK_TOKEN (a
-- verifier's bearer token). A request past the end of a thread's share sends "exhausted",
-- which is refused: the RESULT line's non2xx counts them, so a run must end with non2xx=0.
local n_threads = 0
setup = function(thread)
  thread:set("index", n_threads)
  n_threads = n_threads + 1
end

local codes, next_code = {}, 0
init = function(args)
  local n = tonumber(os.getenv("JK_BENCH_THREADS") or "2")
  local k = 0
  for line in io.lines(os.getenv("JK_CARD_CODES")) do
    if k % n == index then codes[#codes + 1] = line end
    k = k + 1
  end
  headers = {["Authorization"] = "Bearer " .. os.getenv("JK_TOKEN"),
             ["Content-Type"] = "application/json"}
end

request = function()
  next_code = next_code + 1
  local code = codes[next_code] or "exhausted"
  return wrk.format("POST", "/api/cards/verify", headers, '{"content":"' .. code .. '"}')
end
