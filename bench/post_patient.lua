-- POST a ~500-byte Chinese patient; every request gets a different identifier.
local counter = 0
local families = {"王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周"}
local givens = {"伟", "芳", "娜", "秀英", "敏", "静", "丽", "强", "磊", "军"}

request = function()
  counter = counter + 1
  local n = counter * 7919 + math.random(1, 1000000)
  local f = families[(n % #families) + 1]
  local g = givens[(math.floor(n / 10) % #givens) + 1]
  local body = string.format([[{"resourceType":"Patient","identifier":[{"system":"urn:jiankang:bench:mrn","value":"B%d-%d"}],"active":true,"name":[{"use":"official","text":"%s%s","family":"%s","given":["%s"]}],"telecom":[{"system":"phone","value":"138%08d","use":"mobile"}],"gender":"%s","birthDate":"19%02d-%02d-%02d","address":[{"use":"home","text":"福建省福州市鼓楼区东街%d号","city":"福州市","district":"鼓楼区","state":"福建省","country":"CN"}],"managingOrganization":{"reference":"Organization/hosp-fz-1"}}]],
    n, counter, f, g, f, g, n % 100000000, (n % 2 == 0) and "male" or "female",
    50 + n % 50, 1 + n % 12, 1 + n % 28, 1 + n % 300)
  return wrk.format("POST", "/fhir/R4/Patient", {["Content-Type"] = "application/fhir+json"}, body)
end
