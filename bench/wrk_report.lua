-- wrk script of the taskgate benchmark: the request comes from the environment,
-- and the summary is printed as one JSON line so the harness need not parse
-- wrk's human-readable report.
--
--   BENCH_METHOD  GET (default) or POST
--   BENCH_BODY    request body; when set, sent as application/json

wrk.method = os.getenv("BENCH_METHOD") or "GET"

local body = os.getenv("BENCH_BODY")
if body ~= nil and body ~= "" then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end

-- wrk counts answers with a status of 400 or more in errors.status; latencies are
-- in microseconds.
function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, '
      .. '"write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d, '
      .. '"max_us": %d}\n',
    summary.requests, summary.duration, errors.connect, errors.read, errors.write,
    errors.status, errors.timeout, latency:percentile(50), latency:percentile(99),
    latency.max))
end
