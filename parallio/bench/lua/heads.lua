-- Request heads as a browser sends them (the six fields of TechEmpower's
-- plaintext head), each one different from the one before: the Cookie
-- carries a per-thread counter, so no server can reuse anything it parsed
-- for the previous request. BENCH.depth heads go out in one write
-- (pipelining); wrk counts the depth from the first request() it gets.
local counter = 0
local prefix, suffix

function init(args)
  -- Threads count in ranges of their own (summary.lua numbers them).
  counter = ((bench_thread or 1) - 1) * 100000000000
  prefix = "GET " .. wrk.path .. " HTTP/1.1\r\n" ..
    "Host: " .. wrk.headers["Host"] .. "\r\n" ..
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n" ..
    "Accept: text/plain,text/html;q=0.9,application/xhtml+xml;q=0.9,application/xml;q=0.8,*/*;q=0.7\r\n" ..
    "Accept-Language: en-US,en;q=0.5\r\n" ..
    "Cookie: uid="
  suffix = "; __utma=1.1234567890.1234567890.1234567890.1234567890.12; wd=2560x1600\r\n" ..
    "Connection: keep-alive\r\n\r\n"
end

local function head()
  counter = counter + 1
  return prefix .. string.format("%012d", counter) .. suffix
end

if BENCH.depth == 1 then
  request = head
else
  function request()
    local heads = {}
    for i = 1, BENCH.depth do heads[i] = head() end
    return table.concat(heads)
  end
end
