-- GET one resource by id: wrk -s bench/get.lua URL, with the id in the environment.
local id = os.getenv("JK_BENCH_ID") or "pat-1"
request = function()
  return wrk.format("GET", "/fhir/R4/Patient/" .. id)
end
