#!lua name=tollhouse_meter
-- The shared meter (docs/deployment.md): counters, reservations and windows in Redis,
-- called from tollhouse/admission/functions.py.
--
-- Every key shares the hash tag of the counter keys Python passes in, so a request's
-- whole check-and-reserve runs in one script, atomically, on one node.
--
--   <p>c:<kind>:<id>  hash  c committed, r reserved, s/e window [start, end) in epoch
--                           microseconds, cut (ledger records created before it are in
--                           c), g generation (changes each time the counter is built)
--   <p>r:<rid>        hash  a reservation: counter key → "amount:generation"
--   <p>exp            zset  reservation ids by expiry (epoch milliseconds)
--   <p>x:<rid>        string  a reservation the sweeper released: its late settle commits
--   <p>done:<rid>     string  a settled request admitted without a reservation (fallback)
--   <p>p:<counter>    hash  settles that found their counter missing: rid → "amount:created"
--   <p>k:<counter>    set   request ids already in the ledger sum the counter was built from
--
-- Amounts are integers (nano-dollars, tokens, requests). Lua numbers are doubles, exact
-- below 2^53; past 15 digits the limit check adds and compares decimal strings instead.
-- Redis itself keeps counters as 64-bit integers (HINCRBY), and replies carry them as
-- Redis stores them (HGET): a Lua number would print 1e+14 as "1e+14" and round past 2^53.

local function add(a, b)
  if #a < 16 and #b < 16 then
    return string.format("%.0f", tonumber(a) + tonumber(b))
  end
  local out, carry, i, j = {}, 0, #a, #b
  while i > 0 or j > 0 or carry > 0 do
    local d = carry
    if i > 0 then d = d + string.byte(a, i) - 48; i = i - 1 end
    if j > 0 then d = d + string.byte(b, j) - 48; j = j - 1 end
    out[#out + 1] = string.char(48 + d % 10)
    carry = math.floor(d / 10)
  end
  return string.reverse(table.concat(out))
end

local function le(a, b)  -- a <= b for non-negative integers written without leading zeros
  if #a ~= #b then return #a < #b end
  return a <= b
end

local function prefix_of(counter_key)
  return string.match(counter_key, "^(.-)c:")
end

-- The counter's state for a request at window [start, end): rolled forward if the
-- window moved on; a window older than the stored one counts in the stored one.
local function current(key, start, finish)
  local c, r, s, e, g = unpack(redis.call("HMGET", key, "c", "r", "s", "e", "g"))
  if not c then return nil end
  local rolled = false
  if tonumber(start) > tonumber(s) then
    c, s, e, rolled = "0", start, finish, true
  end
  return {c, r, s, e, g, rolled}
end

-- A prepaid account's limit (funding plus overdraft) comes as "limit@revision": the
-- newest revision any replica has passed wins, so a replica that has not reloaded since
-- a refund or an expiry cannot admit against the funding it had before. Other counters'
-- limits come plain and are used as given.
--   <p>c:credits:<id>  also  l the newest limit, v its revision
local function newest_limit(key, arg)
  local at = string.find(arg, "@", 1, true)
  if not at then return arg end
  local limit, revision = string.sub(arg, 1, at - 1), tonumber(string.sub(arg, at + 1))
  local l, v = unpack(redis.call("HMGET", key, "l", "v"))
  if v and tonumber(v) > revision then return l end
  if not v or tonumber(v) < revision then
    redis.call("HSET", key, "l", limit, "v", revision)
  end
  return limit
end

-- KEYS: n counter keys. ARGV: n, rid, expires_ms, ttl_ms, then per counter
-- limit (or limit@revision), amount, start_us, end_us. Returns {0, (c, r, s, e, g) per counter} when reserved,
-- {1, i, (c, r, s, e, g) per counter} when counter i refused, {2, i...} when missing.
local function reserve(keys, args)
  local n, rid = tonumber(args[1]), args[2]
  local missing = {2}
  local state = {}
  for i = 1, n do
    local base = 4 + (i - 1) * 4
    state[i] = current(keys[i], args[base + 3], args[base + 4])
    if not state[i] then missing[#missing + 1] = i end
  end
  if #missing > 1 then return missing end
  local p = prefix_of(keys[1])
  local held = p .. "r:" .. rid
  local again = redis.call("EXISTS", held) == 1  -- a retry after a lost reply
  local values = {}
  local refused = nil
  for i = 1, n do
    local base = 4 + (i - 1) * 4
    local st = state[i]
    values[#values + 1] = st[1]
    values[#values + 1] = st[2]
    values[#values + 1] = st[3]
    values[#values + 1] = st[4]
    values[#values + 1] = st[5]
    local limit = newest_limit(keys[i], args[base + 1])
    if not again and not refused
        and not le(add(add(st[1], st[2]), args[base + 2]), limit) then
      refused = i
    end
  end
  if refused then
    table.insert(values, 1, refused)
    table.insert(values, 1, 1)
    return values
  end
  if again then
    table.insert(values, 1, 0)
    return values
  end
  for i = 1, n do
    local base = 4 + (i - 1) * 4
    local st = state[i]
    if st[6] then
      redis.call("HSET", keys[i], "c", "0", "s", st[3], "e", st[4])
    end
    local amount = args[base + 2]
    redis.call("HINCRBY", keys[i], "r", amount)
    values[(i - 1) * 5 + 2] = redis.call("HGET", keys[i], "r")
    redis.call("HSET", held, keys[i], amount .. ":" .. st[5])
  end
  redis.call("PEXPIRE", held, args[4])
  redis.call("ZADD", p .. "exp", args[3], rid)
  table.insert(values, 1, 0)
  return values
end

-- Give back what reservation rid holds on counters of the same generation; false when
-- it holds nothing any more.
local function give_back(p, rid)
  local held = p .. "r:" .. rid
  local fields = redis.call("HGETALL", held)
  if #fields == 0 then return false end
  for i = 1, #fields, 2 do
    local key = fields[i]
    local amount, generation = string.match(fields[i + 1], "^(%d+):(.*)$")
    -- "-0" is no integer to HINCRBY: a zero claim (an unpriced model's cost) has
    -- nothing to give back, and must not fail the settle or the sweep.
    if amount ~= "0" and redis.call("HGET", key, "g") == generation then
      redis.call("HINCRBY", key, "r", "-" .. amount)
    end
  end
  redis.call("DEL", held)
  redis.call("ZREM", p .. "exp", rid)
  return true
end

-- KEYS: n counter keys. ARGV: n, rid, created_us, ttl_ms, reserved ("1" when admitted
-- with a reservation here, "0" by a replica's fallback meter), then per counter actual,
-- start_us, end_us, and the generation it was reserved on. Releases the reservation and
-- commits the actual amounts. Settles are retried after errors: one applied already is
-- skipped, unless the counter was rebuilt since (Redis lost it, and the settle with it).
-- Returns {applied (1 or 0), then per counter its committed value after this settle
-- committed to it, or "" (the alert thresholds crossed are worked out from these)}.
local function settle(keys, args)
  local n, rid, created = tonumber(args[1]), args[2], args[3]
  local p = prefix_of(keys[1])
  local fresh = true
  if args[5] == "1" then
    if not give_back(p, rid) then
      -- Swept after it expired: the late settle still commits. Otherwise settled already.
      fresh = redis.call("DEL", p .. "x:" .. rid) == 1
    end
  else
    local done = p .. "done:" .. rid
    fresh = redis.call("SET", done, "1", "NX", "PX", args[4]) ~= false
  end
  local after = {}
  for i = 1, n do
    after[i] = ""
    local base = 5 + (i - 1) * 4
    local actual, start, finish = args[base + 1], args[base + 2], args[base + 3]
    local generation = args[base + 4]
    local rebuilt = generation ~= "" and redis.call("HGET", keys[i], "g") ~= generation
    if actual ~= "0" and (fresh or rebuilt) then
      local key = keys[i]
      local cut = redis.call("HGET", key, "cut")
      if not cut then
        local pending = p .. "p:" .. key
        redis.call("HSET", pending, rid, actual .. ":" .. created)
        redis.call("PEXPIRE", pending, args[4])
      elseif tonumber(created) >= tonumber(cut)
          and redis.call("SISMEMBER", p .. "k:" .. key, rid) == 0 then
        local s = redis.call("HGET", key, "s")
        if tonumber(start) > tonumber(s) then
          redis.call("HSET", key, "c", actual, "s", start, "e", finish)
          after[i] = actual
        elseif tonumber(start) == tonumber(s) then
          redis.call("HINCRBY", key, "c", actual)
          after[i] = redis.call("HGET", key, "c")
        end
        -- An older window than the stored one is over: nothing left to count in it.
      end
    end
  end
  table.insert(after, 1, fresh and 1 or 0)
  return after
end

-- KEYS: counter key. ARGV: committed (ledger sum of records created before cut and
-- at or after the window start, plus those after cut listed below), cut_us, start_us,
-- end_us, ttl_ms, generation, then the ids of records after cut already in the sum.
-- Builds the counter unless another replica did; folds in settles that found it missing.
local function load(keys, args)
  local key = keys[1]
  if redis.call("EXISTS", key) == 1 then return 0 end
  local p = prefix_of(key)
  local counted = {}
  for i = 7, #args do counted[args[i]] = true end
  local committed, cut = args[1], tonumber(args[2])
  local pending = p .. "p:" .. key
  local entries = redis.call("HGETALL", pending)
  for i = 1, #entries, 2 do
    local amount, created = string.match(entries[i + 1], "^(%d+):(%d+)$")
    if tonumber(created) >= cut and tonumber(created) >= tonumber(args[3])
        and not counted[entries[i]] then
      committed = add(committed, amount)
    end
  end
  redis.call("DEL", pending)
  redis.call("HSET", key, "c", committed, "r", "0", "s", args[3], "e", args[4],
    "cut", args[2], "g", args[6])
  if #args >= 7 then
    local set = p .. "k:" .. key
    for i = 7, #args do redis.call("SADD", set, args[i]) end
    redis.call("PEXPIRE", set, args[5])
  end
  return 1
end

-- KEYS: the expiry zset. ARGV: now_ms, batch, ttl_ms. Releases expired reservations,
-- leaving a marker so that a settle arriving later still commits.
local function sweep(keys, args)
  local p = string.match(keys[1], "^(.-)exp$")
  local expired = redis.call("ZRANGEBYSCORE", keys[1], "-inf", args[1], "LIMIT", 0, args[2])
  for _, rid in ipairs(expired) do
    give_back(p, rid)
    redis.call("ZREM", keys[1], rid)
    redis.call("SET", p .. "x:" .. rid, "1", "PX", args[3])
  end
  return #expired
end

-- KEYS: counter keys. ARGV: none. Returns (c, r, s, e, g) per counter, false if missing.
local function read(keys, args)
  local out = {}
  for i = 1, #keys do
    local values = redis.call("HMGET", keys[i], "c", "r", "s", "e", "g")
    for j = 1, 5 do out[#out + 1] = values[j] or false end
  end
  return out
end

-- KEYS: counter keys. ARGV: start_us, end_us. Starts the current window afresh.
local function reset(keys, args)
  for i = 1, #keys do
    if redis.call("EXISTS", keys[i]) == 1 then
      redis.call("HSET", keys[i], "c", "0", "s", args[1], "e", args[2])
    end
  end
  return #keys
end

-- KEYS: counter keys. ARGV: "limit@revision" per key. Records each newer limit on the
-- counters that exist (a missing one takes its limit when it is rebuilt and used).
local function limits(keys, args)
  for i = 1, #keys do
    if redis.call("EXISTS", keys[i]) == 1 then newest_limit(keys[i], args[i]) end
  end
  return #keys
end

redis.register_function("tollhouse_reserve", reserve)
redis.register_function("tollhouse_limits", limits)
redis.register_function("tollhouse_settle", settle)
redis.register_function("tollhouse_load", load)
redis.register_function("tollhouse_sweep", sweep)
redis.register_function("tollhouse_read", read)
redis.register_function("tollhouse_reset", reset)
