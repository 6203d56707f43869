-- wrk script of benchmarks/sandboxes.py: the broker API as lab tracks call it.
-- The mix: 70 % POST /v1/allocate for a new track, 10 % the same ask again by a track
-- this thread leased for (expects 200, the same sandbox), 10 % GET /v1/sandboxes/{id}
-- of a sandbox this thread leased, 10 % POST /v1/sandboxes/{id}/mark-for-deletion by
-- its track. Until a thread has leases to use, it asks for new ones instead.
-- Every 201 is kept, alternately for retries and reads ("held", never marked, so a
-- retry always finds its lease) or for marking ("spare", each marked once).
-- Environment: BENCH_TOKEN (broker token), BENCH_RUN (run tag), BENCH_IDS (a file
-- done() writes "id track" of every 201 to, for the database check).
local token = os.getenv("BENCH_TOKEN") or "missing"
local run = os.getenv("BENCH_RUN") or "run"
local ask_body = '{"lab_duration_hours":2}'
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  n = 0
  held, spare, owner = {}, {}, {}
  leased = {}     -- "id track" of every 201
  status = {}     -- status code -> count
  kinds = {new = 0, retry = 0, get = 0, mark = 0}
  wrong = 0       -- a 200 to a retry that is not the track's own lease
  keep = true
  math.randomseed(tid * 7919)
end

local function call(method, path, track, body)
  local headers = {
    ["Authorization"] = "Bearer " .. token,
    ["X-Track-ID"] = track,
    ["Content-Type"] = "application/json",
  }
  return wrk.format(method, path, headers, body)
end

function request()
  local r = math.random()
  if r < 0.1 and #held > 0 then
    kinds.retry = kinds.retry + 1
    return call("POST", "/v1/allocate", held[math.random(#held)][1], ask_body)
  elseif r < 0.2 and #held > 0 then
    local lease = held[math.random(#held)]
    kinds.get = kinds.get + 1
    return call("GET", "/v1/sandboxes/" .. lease[2], lease[1], nil)
  elseif r < 0.3 and #spare > 0 then
    local lease = table.remove(spare)
    kinds.mark = kinds.mark + 1
    return call("POST", "/v1/sandboxes/" .. lease[2] .. "/mark-for-deletion", lease[1], "")
  end
  n = n + 1
  kinds.new = kinds.new + 1
  return call("POST", "/v1/allocate", string.format("%s-%d-%d", run, tid, n), ask_body)
end

function response(code, headers, body)
  status[code] = (status[code] or 0) + 1
  if code == 201 then
    local id = body:match('"id":"(sbx_[^"]+)"')
    local track = body:match('"track_id":"([^"]+)"')
    leased[#leased + 1] = id .. " " .. track
    owner[track] = id
    if keep then held[#held + 1] = {track, id} else spare[#spare + 1] = {track, id} end
    keep = not keep
  elseif code == 200 and body:find('"created":false', 1, true) then
    local id = body:match('"id":"(sbx_[^"]+)"')
    local track = body:match('"track_id":"([^"]+)"')
    if owner[track] ~= id then wrong = wrong + 1 end
  end
end

-- One line, prefixed, for the Python side; every 201's "id track" to BENCH_IDS.
function done(summary, latency, requests)
  local codes, sent, ids, created, wrongs = {}, {new = 0, retry = 0, get = 0, mark = 0}, {}, 0, 0
  local distinct = 0
  local out = io.open(os.getenv("BENCH_IDS") or "/dev/null", "w")
  for _, thread in ipairs(threads) do
    for code, count in pairs(thread:get("status")) do codes[code] = (codes[code] or 0) + count end
    for kind, count in pairs(thread:get("kinds")) do sent[kind] = sent[kind] + count end
    wrongs = wrongs + thread:get("wrong")
    for _, line in ipairs(thread:get("leased")) do
      created = created + 1
      local id = line:match("^(%S+)")
      if not ids[id] then distinct = distinct + 1 end
      ids[id] = true
      out:write(line, "\n")
    end
  end
  out:close()
  local parts = {}
  for code, count in pairs(codes) do parts[#parts + 1] = string.format('"%d":%d', code, count) end
  local e = summary.errors
  io.write(string.format(
    'SBX_RESULT {"requests":%d,"duration_us":%d,"created":%d,"distinct":%d,"wrong_retries":%d,' ..
    '"status":{%s},"sent":{"new":%d,"retry":%d,"get":%d,"mark":%d},' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"max":%d,"p50":%d,"p95":%d,"p99":%d}}\n',
    summary.requests, summary.duration, created, distinct, wrongs, table.concat(parts, ","),
    sent.new, sent.retry, sent.get, sent.mark,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(95),
    latency:percentile(99)))
end
