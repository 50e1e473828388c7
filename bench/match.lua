-- POST Patient/$match with the bodies of $JK_PROBES (one Parameters resource per line), in turn.
local bodies = {}
for line in io.lines(os.getenv("JK_PROBES")) do bodies[#bodies + 1] = line end
local i = 0
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", "/fhir/R4/Patient/$match",
    {["Content-Type"] = "application/fhir+json"}, bodies[i])
end
