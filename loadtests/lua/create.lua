-- wrk script: POST /api/v1/links, each with its own target URL.

local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

request = function()
  n = n + 1
  local body = string.format('{"url":"https://example.com/bench/%d/%d"}', math.random(1e9), n)
  return wrk.format("POST", "/api/v1/links", nil, body)
end
