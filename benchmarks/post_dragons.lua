-- wrk script for benchmarks/serve_load.py: POST one JSON body (DRAGON_BODY, else one dragon) to /predict,
-- and print the run's figures as one JSON line (latencies in milliseconds).
wrk.method = "POST"
wrk.path = "/predict"
wrk.headers["Content-Type"] = "application/json"
wrk.body = os.getenv("DRAGON_BODY") or '{"dragons": [{"numberToes": 7, "bodyLength": 150.0}]}'

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %.6f, "p50": %.3f, "p95": %.3f, "p99": %.3f, "socket_errors": %d, "non_2xx": %d}\n',
    summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1e3, latency:percentile(95) / 1e3, latency:percentile(99) / 1e3,
    e.connect + e.read + e.write + e.timeout, e.status))
end
