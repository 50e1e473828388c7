-- POST /api/rx/prescriptions on every request: two drugs of the formulary for the open visit
-- JK_VISIT, as the visit's doctor (JK_TOKEN). Each request checks the items against the
-- rules, writes two MedicationRequests, signs them (SM2), writes the Provenance, the
-- prescription row and the audit record in one transaction.
init = function(args)
  headers = {["Authorization"] = "Bearer " .. os.getenv("JK_TOKEN"),
             ["Content-Type"] = "application/json"}
  body = '{"visit":"Encounter/' .. os.getenv("JK_VISIT") .. '","items":[' ..
    '{"drug":"JK-C08CA01-01","dose":5,"timesPerDay":1,"days":7,"quantity":1},' ..
    '{"drug":"JK-A10BA02-01","dose":500,"timesPerDay":2,"days":7,"quantity":1}]}'
end

request = function()
  return wrk.format("POST", "/api/rx/prescriptions", headers, body)
end
