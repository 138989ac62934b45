-- POSTs one fixed body, each request with the next unused token of a pre-signed list.
-- wrk -t1 ... -s post.lua URL -- TOKENS_FILE START COUNT BODY_FILE PATH
-- One wrk thread only: each thread has its own Lua state and would reuse the same tokens.
-- When the COUNT tokens are used up the thread stops: a round never sends a replay on purpose.

local tokens = {}
local n, i = 0, 0
local head, tail

function init(args)
  local file, start, count, body_file, path = args[1], tonumber(args[2]), tonumber(args[3]),
    args[4], args[5] or "/hook"
  local f = assert(io.open(body_file, "rb"))
  local body = f:read("*a")
  f:close()
  local k = 0
  for line in io.lines(file) do
    k = k + 1
    if k > start then
      n = n + 1
      tokens[n] = line
      if n >= count then break end
    end
  end
  head = "POST " .. path .. " HTTP/1.1\r\nHost: " .. wrk.host .. ":" .. tostring(wrk.port) ..
    "\r\nContent-Type: application/json\r\nContent-Length: " .. tostring(#body) ..
    "\r\nAuthorization: Bearer "
  tail = "\r\n\r\n" .. body
end

function request()
  i = i + 1
  if i > n then
    wrk.thread:stop()
    i = n
  end
  return head .. tokens[i] .. tail
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
