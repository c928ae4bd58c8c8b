-- The run's summary as one JSON line on stdout (wrk's own text has no
-- p99.9), with the send-lag percentiles of a paced run (pace.lua).
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("bench_thread", #threads)  -- a global in that thread's own state
end

-- The value at percentile p of a histogram {[bucket] = count} whose
-- buckets are tenths of a millisecond.
local function lag_percentile(histogram, total, p)
  if total == 0 then return 0 end
  local wanted, seen = total * p / 100, 0
  local buckets = {}
  for bucket in pairs(histogram) do buckets[#buckets + 1] = bucket end
  table.sort(buckets)
  for _, bucket in ipairs(buckets) do
    seen = seen + histogram[bucket]
    if seen >= wanted then return bucket / 10 end
  end
  return buckets[#buckets] / 10
end

function done(summary, latency, requests)
  local histogram, sends = {}, 0
  for _, thread in ipairs(threads) do
    local counts = thread:get("lag_histogram")
    if counts then
      for bucket, count in pairs(counts) do
        histogram[bucket] = (histogram[bucket] or 0) + count
        sends = sends + count
      end
    end
  end
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.1f,' ..
    '"paced_sends":%d,"lag_p50_ms":%.1f,"lag_p99_ms":%.1f,"lag_p999_ms":%.1f}\n',
    BENCH.marker, summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean,
    sends, lag_percentile(histogram, sends, 50), lag_percentile(histogram, sends, 99),
    lag_percentile(histogram, sends, 99.9)))
end
