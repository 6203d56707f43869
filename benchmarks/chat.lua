-- wrk script: POST a small OpenAI chat completion, print a JSON summary at the end.
-- The bearer key comes from BENCH_API_KEY (default sk-bench) so the same script works
-- once the gateway requires virtual keys.
wrk.method = "POST"
wrk.path = "/v1/chat/completions"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}],"max_tokens":16}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_API_KEY") or "sk-bench")

-- BENCH_VARY=1: every request asks for another max_tokens, so nothing a gateway
-- remembers by the request's values (the policies' memo of answers) is ever reused.
if os.getenv("BENCH_VARY") == "1" then
  local n = 0
  request = function()
    n = n + 1
    local body = string.format(
      '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}],"max_tokens":%d}',
      16 + n)
    return wrk.format(nil, nil, nil, body)
  end
end

-- Latencies are in microseconds; one line, prefixed so the harness can find it.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,' ..
    '"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
