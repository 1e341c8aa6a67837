-- wrk script: GET random codes read from the file named by $CODES
-- (lines of `code url`), with a browser's headers, as real clicks carry.
-- The seed is fixed, so every server under test gets the same sequence.

local codes = {}
for line in io.lines(os.getenv("CODES")) do
  codes[#codes + 1] = line:match("^(%S+)")
end
math.randomseed(42)

wrk.headers["User-Agent"] = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
wrk.headers["Referer"] = "https://t.co/benchmark"

request = function()
  return wrk.format("GET", "/" .. codes[math.random(#codes)])
end
