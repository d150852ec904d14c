--- spec.support.crash: the crash harness. A writer process (`crash.child`, run as
-- `lua5.4 -e 'require("spec.support.crash").child{...}'`) writes sections whose
-- invariants can be checked, and acknowledges what commit, snapshot, hash and
-- defrag made durable; the parent (`crash.run`) SIGKILLs it at a random moment,
-- often just as it enters one of those calls, then reopens the database and
-- checks that nothing acknowledged was lost and no section is half there.
--
--   local crash = require "spec.support.crash"
--   print(crash.summary(crash.run { trials = 200, seed = 1, log = print }))
--
-- Section n (one lock ... unlock) writes, in three buckets:
--   main/count = n, main/log/<n> = "n=<n> keys=<k> crc=<crc>", side/latest = n,
--   side/s/<n>/<j> for j = 1..k (the log entry holds their CRC-32C),
--   scratch/y/<n> = n, or instead drops and recreates bucket scratch
--   (scratch/gen = "g=<n> x=<x>", scratch/x/<j>; main/scratch = n),
-- and now and then deletes the log and side keys of the oldest sections
-- (main/low: the oldest kept). `crash.verify` checks a database against these
-- rules exactly: every section from low to count whole, nothing else there.
local backend = require "backend"
local checks = require "backend.tools.check"
local uv = require "luv"

local crash = {}

local fmt = string.format
local crc32c, now = backend.crc32c, backend.monotonic

local MAIN, SIDE, SCRATCH = "main", "side", "scratch"
local BUCKETS = { MAIN, SCRATCH, SIDE }
local END = "\255"                         -- above every key written here
local HANG = 30                            -- seconds: a child still running then is stuck

local function log_key(n) return fmt("log/%010d", n) end
local function side_prefix(n) return fmt("s/%010d/", n) end
local function side_key(n, j) return side_prefix(n) .. j end
local function y_key(n) return fmt("y/%010d", n) end
local function x_key(j) return "x/" .. j end
local function x_value(g, j) return fmt("x%d.%d", g, j) end

-- The writer ----------------------------------------------------------------

-- One in N sections is followed by each call (by one in FOCUS for the call the
-- parent means to kill in); tx_commit is tx:commit() right after the section;
-- one in `rollback` is first written in full and rolled back (it must vanish).
local ODDS = { tx_commit = 300, commit = 100, snapshot = 500, hash = 500, defrag = 800, rollback = 20 }
local FOCUS = 3
local CALLS = { "commit", "snapshot", "hash", "defrag" }
local call = {
  commit = function(be) be:force_commit() end,
  snapshot = function(be, path)
    local snap <close> = be:snapshot()
    os.remove(path)        -- write_to makes a new file only
    snap:write_to(path)    -- maybe torn by the kill: the parent only deletes it
  end,
  hash = function(be) be:hash() end,
  defrag = function(be) be:defrag() end,
}

-- A line in one write(2) (stdout is unbuffered): a SIGKILL never splits one.
local function say(...)
  io.stdout:write(table.concat({ ... }, " ") .. "\n")
end

-- Mostly short values; some over a page, some in overflow pages (map growth).
local function random_value(n)
  local r = math.random(100)
  local len = r <= 80 and math.random(64) or r <= 95 and math.random(100, 2000) or math.random(4000, 40000)
  return n .. ":" .. string.rep(string.char(math.random(97, 122)), len)
end

-- Reads through the batch tx, so the section's own writes count.
local function delete_range(tx, bucket, from, to)
  for _, k in ipairs((tx:range(bucket, from, to))) do tx:delete(bucket, k) end
end

-- Section n; st.low is the oldest section kept, updated here.
local function write_section(tx, st, n, window)
  if n == 1 then
    tx:create_bucket(MAIN)
    tx:create_bucket(SIDE)
    tx:put(MAIN, "low", "1")
  end
  tx:put(MAIN, "count", tostring(n))
  local k, crc = math.random(4), 0
  for j = 1, k do
    local key, v = side_key(n, j), random_value(n)
    if math.random(4) == 1 then tx:put(SIDE, key, "overwritten in the same section") end
    tx:put(SIDE, key, v)
    crc = crc32c(v, crc32c(key, crc))
  end
  tx:put(MAIN, log_key(n), fmt("n=%d keys=%d crc=%08x", n, k, crc))
  if n == 1 or math.random(8) == 1 then
    if n > 1 then tx:put(SCRATCH, y_key(n), "dropped with its bucket") end
    tx:delete_bucket(SCRATCH)
    tx:create_bucket(SCRATCH)
    local xs = math.random(0, 3)
    tx:put(SCRATCH, "gen", fmt("g=%d x=%d", n, xs))
    for j = 1, xs do tx:put(SCRATCH, x_key(j), x_value(n, j)) end
    tx:put(MAIN, "scratch", tostring(n))
  else
    tx:put(SCRATCH, y_key(n), tostring(n))
  end
  if n - st.low >= window or math.random(10) == 1 then
    local low = math.random(st.low, n)
    delete_range(tx, MAIN, log_key(st.low), log_key(low))
    delete_range(tx, SIDE, side_prefix(st.low), side_prefix(low))
    tx:put(MAIN, "low", tostring(low))
    st.low = low
  end
  tx:put(SIDE, "latest", tostring(n))
end

--- Writes sections to be after those there: o.sections of them (nil: until
-- killed), each followed now and then by a call (o.focus: one made often; a
-- snapshot goes to o.snapshot). o.say(...) hears "ack <n>" for the sections found,
-- "phase <call>" before each call and "ack <n>" once it returned: sections 1..n
-- are durable. o.window: the most sections kept.
function crash.write(be, o)
  local tell = o.say or function() end
  local tx = be:batch_tx()
  tx:lock()
  local st = { low = tonumber(tx:get(MAIN, "low")) or 1 }
  local n = tonumber(tx:get(MAIN, "count")) or 0
  tx:unlock()
  tell("ack", n)   -- read back from the file: durable
  local odds = {}
  for name, odd in pairs(ODDS) do odds[name] = name == o.focus and FOCUS or odd end
  for _ = 1, o.sections or math.huge do
    n = n + 1
    tx:lock()
    if math.random(odds.rollback) == 1 then
      write_section(tx, { low = st.low }, n, o.window)   -- other random content
      tx:rollback()
      tx:lock()
    end
    write_section(tx, st, n, o.window)
    tx:unlock()
    if math.random(odds.tx_commit) == 1 then
      tell("phase commit")
      tx:commit()
      tell("ack", n)
    end
    for _, name in ipairs(CALLS) do
      if math.random(odds[name]) == 1 then
        tell("phase", name)
        call[name](be, o.snapshot)
        tell("ack", n)
      end
    end
  end
end

--- The writer process: prints "pid <pid>" and "phase open", opens the database
-- at o.path and writes to it (crash.write), saying so on stdout, until killed.
function crash.child(o)
  io.stdout:setvbuf("no")
  math.randomseed(o.seed)
  local stat = assert(io.open("/proc/self/stat"))
  say("pid", stat:read("l"):match("^%d+"))
  stat:close()
  o.say = say
  say("phase open")
  crash.write(backend.open { path = o.path, batch_interval = o.batch_interval,
    batch_limit = o.batch_limit, mmap_size = o.mmap_size }, o)
end

-- The checks ----------------------------------------------------------------

local function check(ok, msg, ...)
  if not ok then error(fmt(msg, ...), 0) end
  return ok
end

local short = checks.show

-- Every pair of every bucket as tx sees it: d[bucket] = { keys, map }.
local function read_all(tx)
  local d = {}
  for _, b in ipairs(BUCKETS) do
    local ks, vs = tx:range(b, "", END)
    local map = {}
    for i, k in ipairs(ks) do map[k] = vs[i] end
    d[b] = { keys = ks, map = map }
  end
  return d
end

-- The rules of the file's comment, exactly; returns count and low.
local function check_sections(d, acked)
  local main, side, scratch = d[MAIN].map, d[SIDE].map, d[SCRATCH].map
  local n = tonumber(main.count)
  if not n then
    check(acked == 0, "no section survived, %d acknowledged", acked)
    check(#d[SIDE].keys + #d[SCRATCH].keys + #d[MAIN].keys == 0, "data without a count")
    return 0, 1
  end
  check(n >= acked, "count is %d, but %d was acknowledged: acknowledged writes lost", n, acked)
  check(side.latest == main.count, "side/latest is %s, count %d: a section is half there", short(side.latest), n)
  local low = tonumber(main.low)
  check(low and low <= n, "main/low is %s, count %d", short(main.low), n)
  check(#d[MAIN].keys == 3 + n - low + 1, "main holds %d keys, want 3 and log/%d..log/%d", #d[MAIN].keys, low, n)
  local sides = 1
  for m = low, n do
    local entry = main[log_key(m)]
    local em, k, crc = (entry or ""):match("^n=(%d+) keys=(%d) crc=(%x+)$")
    check(tonumber(em) == m, "log/%d is %s (low %d, count %d)", m, short(entry), low, n)
    local c = 0
    for j = 1, tonumber(k) do
      local key = side_key(m, j)
      check(side[key], "side/%s is missing: section %d is half there", key, m)
      c = crc32c(side[key], crc32c(key, c))
    end
    check(fmt("%08x", c) == crc, "section %d: its side keys sum to %08x, its log entry says %s", m, c, crc)
    sides = sides + tonumber(k)
  end
  check(#d[SIDE].keys == sides, "side holds %d keys, want %d (sections %d..%d)", #d[SIDE].keys, sides, low, n)
  local g = tonumber(main.scratch)
  local sg, xs = (scratch.gen or ""):match("^g=(%d+) x=(%d)$")
  check(g and tonumber(sg) == g, "scratch/gen is %s, main/scratch %s", short(scratch.gen), short(main.scratch))
  xs = tonumber(xs)
  for j = 1, xs do
    check(scratch[x_key(j)] == x_value(g, j), "scratch/%s is %s (generation %d)", x_key(j), short(scratch[x_key(j)]), g)
  end
  for m = g + 1, n do
    check(scratch[y_key(m)] == tostring(m), "scratch/%s is %s", y_key(m), short(scratch[y_key(m)]))
  end
  check(#d[SCRATCH].keys == 1 + xs + n - g, "scratch holds %d keys, want %d (generation %d, count %d)",
    #d[SCRATCH].keys, 1 + xs + n - g, g, n)
  return n, low
end

local function q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Names in dir that start with prefix.
local function files(dir, prefix)
  local out = {}
  for name in uv.fs_scandir_next, assert(uv.fs_scandir(dir)) do
    if name:sub(1, #prefix) == prefix then out[#out + 1] = name end
  end
  return out
end

-- Removes what is in dir under a name that starts with prefix, directories
-- with all they hold (a killed child can leave a temporary directory).
local function remove_files(dir, prefix)
  for _, name in ipairs(files(dir, prefix)) do
    local path = dir .. "/" .. name
    if assert(uv.fs_lstat(path)).type == "directory" then
      remove_files(path, "")
      assert(uv.fs_rmdir(path))
    else
      assert(os.remove(path))
    end
  end
end

local function open(cfg)
  local ok, be = backend.pcall(backend.open, cfg)
  return check(ok and be, "the database does not open: %s", be)
end

-- Raises the first finding of one of backend.check's checks.
local function passes(findings)
  check(#findings == 0, "%s", findings[1] and checks.describe(findings[1]))
end

--- Reopens the database at path after a crash and checks it: it opens and removes
-- defrag's temporary files; it holds every section up to `acked` and no part of a
-- later one; BatchTx, ReadTx, ConcurrentReadTx and a snapshot read the same; hash()
-- is that of the data and the same after close and reopen (backend.check's views,
-- hash, snapshot and reopen). Raises what differs; returns what was checked.
function crash.verify(path, acked, config)
  local dir, base = path:match("^(.*)/([^/]+)$")
  local temps = #files(dir, base .. ".backend-tmp.")
  local cfg = { path = path, mmap_size = config and config.mmap_size }
  local checked
  do
    local be <close> = open(cfg)
    local left = files(dir, base .. ".backend-tmp.")
    check(#left == 0, "defrag's temporary files are left after reopening: %s", table.concat(left, " "))
    local n, low = check_sections(be:view(read_all), acked)
    for _, name in ipairs { "views", "hash", "snapshot" } do passes(checks[name](be)) end
    checked = { count = n, low = low, checked = acked >= low and acked - low + 1 or 0, temps = temps }
    be:close()
  end
  passes(checks.reopen(path, cfg))
  return checked
end

-- The parent ----------------------------------------------------------------

-- Where a kill can land: a call, opening, or writing sections ("other").
local kills = { open = true, commit = true, snapshot = true, defrag = true, hash = true, other = true }

-- x in [lo, hi], uniform in log scale.
local function log_uniform(lo, hi)
  return lo * (hi / lo) ^ math.random()
end

local function trial_config(db, dir)
  -- kill in that call, or writing just after an ack ("other"), or at a random time ("none")
  local focus = ({ "commit", "commit", "snapshot", "snapshot", "defrag", "defrag", "hash", "open", "other",
    "none", "none" })[math.random(11)]
  return {
    path = db, snapshot = dir .. "/child.snapshot", seed = math.random(1 << 40),
    batch_interval = log_uniform(0.001, 0.1), batch_limit = math.floor(log_uniform(1, 10000)),
    mmap_size = ({ 32768, 65536, 262144, 1 << 20, 16 << 20 })[math.random(5)],
    window = ({ 16, 64, 256 })[math.random(3)], focus = focus,
    -- after which line of the focus to kill, and how long after it; or when to kill
    skip = focus == "open" and 0 or math.random(0, 3),
    delay = focus == "none" and log_uniform(0.002, 0.3) or (math.random(3) == 1 and 0 or log_uniform(0.00002, 0.005)),
  }
end

-- A Lua table constructor for c (numbers and strings).
local function literal(c)
  local out = {}
  for k, v in pairs(c) do out[#out + 1] = fmt("%s = %q", k, v) end
  table.sort(out)
  return "{ " .. table.concat(out, ", ") .. " }"
end

local function describe_trial(rec)
  local c = rec.config
  return fmt("%s database, batch_interval %.3f, batch_limit %d, mmap_size %d, window %d, focus %s: "
    .. "killed in %s after %d acks (last %d)", rec.fresh and "fresh" or "continued", c.batch_interval,
    c.batch_limit, c.mmap_size, c.window, c.focus, rec.phase or "?", rec.acks or 0, rec.acked or 0)
end

local function spin(secs)
  local t = now() + secs
  repeat until now() >= t
end

-- Starts a child on rec.config, kills it as planned, drains its output; fills rec.
local function crash_child(rec, killer, lua, errfile)
  local c = rec.config
  local cmd = fmt("export LUA_PATH_5_4=%s LUA_CPATH_5_4=%s; exec timeout -s KILL %d %s -e %s 2>%s",
    q(package.path), q(package.cpath), HANG, lua, q("require('spec.support.crash').child" .. literal(c)), q(errfile))
  local t0 = now()
  local p = assert(io.popen(cmd, "r"))
  local pid = tonumber((p:read("l") or ""):match("^pid (%d+)$"))
  local function stderr()
    local f = io.open(errfile)
    local s = f and f:read("a") or ""
    if f then f:close() end
    return s
  end
  if not pid then
    p:close()
    check(false, "the child did not start: %s", stderr())
  end
  local kill = fmt("kill -9 %d 2>/dev/null\n", pid)
  local target, skip = c.focus, c.skip
  if target == "none" then
    -- killer is a shell of its own: the sleep runs while we drain the child
    killer:write(fmt("sleep %.4f; ", c.delay), kill)
    target = nil
  end
  rec.acks, rec.acked, rec.phase = 0, 0, "other"
  local bad
  for line in p:lines() do
    local word, arg = line:match("^(%a+) (%w+)$")
    if word == "ack" then   -- the child writes sections until its next call
      rec.acks, rec.acked, rec.phase = rec.acks + 1, math.max(rec.acked, tonumber(arg)), "other"
    elseif word == "phase" and kills[arg] then
      rec.phase = arg
    else
      bad = bad or line
    end
    if rec.phase == target then
      if skip == 0 then
        spin(c.delay)   -- sub-millisecond: a shell's sleep would take longer
        killer:write(kill)
        target = nil
      end
      skip = skip - 1
    end
  end
  local _, how, code = p:close()
  check(not bad, "unexpected line from the child: %s", short(bad))
  check(how == "signal" and code == 9 or how == "exit" and code == 137,
    "the child ended by itself (%s %s): %s", how, code, stderr())
  check(not target, "the child was stuck: killed by the %d s timeout after %.1f s; stderr: %s",
    HANG, now() - t0, stderr())
end

--- Runs `trials` crash trials (default 200) with seed `seed` (default os.time();
-- math.random is reseeded with it) in directory `dir` (default: a new temporary
-- one, removed afterwards unless a trial failed). `log(line)` hears of each
-- trial; `fresh_every` (10): a new database on average every that many trials;
-- `lua`: the interpreter for the child ("lua5.4"). Raises on the first failure,
-- with the seed and the trial; returns the totals and a record per trial.
function crash.run(opts)
  opts = opts or {}
  local seed, log = opts.seed or os.time(), opts.log or function() end
  local dir = opts.dir or backend.mkdtemp()
  local db = dir .. "/db"
  local result = { seed = seed, trials = 0, acks = 0, checked = 0, temps = 0, kills = {}, records = {} }
  for ph in pairs(kills) do result.kills[ph] = 0 end
  math.randomseed(seed)
  local killer = assert(io.popen("exec sh", "w"))
  killer:setvbuf("no")
  local t0 = now()
  for i = 1, opts.trials or 200 do
    local rec = { trial = i, fresh = i == 1 or math.random(opts.fresh_every or 10) == 1 }
    rec.config = trial_config(db, dir)
    if rec.fresh then remove_files(dir, "db") end
    local ok, err = backend.pcall(function()
      crash_child(rec, killer, opts.lua or "lua5.4", dir .. "/child.stderr")
      os.remove(rec.config.snapshot)
      rec.checks = crash.verify(db, rec.acked, rec.config)
    end)
    if not ok then
      killer:close()
      error(fmt("crash: seed %d, trial %d (replay: BACKEND_SEED=%d): %s\n  trial: %s\n  database kept in %s",
        seed, i, seed, err, describe_trial(rec), dir), 0)
    end
    result.trials = i
    result.kills[rec.phase] = result.kills[rec.phase] + 1
    result.acks = result.acks + rec.acks
    result.checked = result.checked + rec.checks.checked
    result.temps = result.temps + rec.checks.temps
    result.records[i] = rec
    log(fmt("trial %d: %s; count %d, sections %d..%d checked", i, describe_trial(rec),
      rec.checks.count, rec.checks.low, rec.checks.count))
  end
  killer:close()
  result.seconds = now() - t0
  if not opts.dir then   -- it holds files only
    remove_files(dir, "")
    assert(uv.fs_rmdir(dir))
  end
  return result
end

--- One line: trials, where the kills landed, what was checked.
function crash.summary(r)
  local k = r.kills
  return fmt("crash: %d trials (seed %d) in %.1f s; kills during commit %d, snapshot %d, defrag %d, hash %d, "
    .. "open %d, other %d; %d acks, %d acknowledged sections checked, %d defrag temp files removed on reopen; "
    .. "nothing lost", r.trials, r.seed, r.seconds, k.commit, k.snapshot, k.defrag, k.hash, k.open, k.other,
    r.acks, r.checked, r.temps)
end

return crash
