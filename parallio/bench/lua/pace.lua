-- Fixed-rate sending (wrk2's schedule, in wrk's delay() hook): wrk calls
-- delay() on a connection after each response, before its next request;
-- each call takes the next send time from one schedule per thread
-- (start + k * BENCH.interval_ms) and waits until then, in wrk's whole
-- milliseconds. A send that comes after its scheduled time because every
-- connection was waiting for an answer is late by "lag": wrk's latency
-- starts at the actual send, so the lag is the time the figures leave out
-- (coordinated omission); its percentiles are reported beside them.
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock_id, bench_timespec *tp);
]]
local now_spec = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, now_spec)  -- CLOCK_MONOTONIC
  return tonumber(now_spec.tv_sec) * 1000 + tonumber(now_spec.tv_nsec) / 1e6
end

local next_send = nil
lag_histogram = {}  -- tenths of a millisecond -> sends; read by summary.lua

function delay()
  local now = now_ms()
  if next_send == nil then next_send = now end
  next_send = next_send + BENCH.interval_ms
  local wait = next_send - now
  local bucket = 0
  if wait < 0 then bucket = math.floor(-wait * 10) end
  lag_histogram[bucket] = (lag_histogram[bucket] or 0) + 1
  if wait <= 0 then return 0 end
  return math.floor(wait + 0.5)
end
