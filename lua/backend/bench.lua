--- backend.bench: the benchmark suite. Runs each workload through the module
-- from Lua and, in the same run, the same workload in plain LMDB C
-- (`build/bench/lmdb_bench`, same data, same durability) and, when given, in
-- etcd's own Go backend (`build/bench/etcd_bench`), then prints a markdown
-- table of medians, min and max, and ratios computed per run.
--
--   lua5.4 lua/backend/bench.lua [--n 1000000] [--runs 3] [--only w1,w3]
--                                [--lmdb build/bench/lmdb_bench] [--etcd build/bench/etcd_bench]
local backend = require "backend"

local bench = {}
local now = backend.monotonic
local fmt = string.format

-- Data: splitmix64, bit for bit as in bench/lmdb_bench.c ----------------------

local function splitmix64(seed)
  local state = seed
  return function()
    state = state + 0x9E3779B97F4A7C15   -- wraps: Lua integers are 64-bit
    local z = state
    z = (z ~ (z >> 30)) * 0xBF58476D1CE4E5B9
    z = (z ~ (z >> 27)) * 0x94D049BB133111EB
    return z ~ (z >> 31)
  end
end

local function random_keys(n)
  local g, keys = splitmix64(1), {}
  for i = 1, n do
    keys[i] = string.pack("<i8i8i8i8i8i8i8i8", g(), g(), g(), g(), g(), g(), g(), g())
  end
  return keys
end

local function value()
  local g, parts = splitmix64(2), {}
  for i = 1, 16 do parts[i] = string.pack("<i8", g()) end
  return table.concat(parts)
end

local function read_order(n)
  local g, order = splitmix64(3), {}
  for k = 1, n do
    local r = g()
    -- r % n with r unsigned, as C computes it: r = 2 * (r >> 1) + (r & 1)
    order[k] = ((r >> 1) % n * 2 + (r & 1)) % n + 1
  end
  return order
end

local BUCKET = "test"
local END = string.rep("\255", backend.max_key_size + 1)

-- Our workloads ----------------------------------------------------------------

local function fill(be, keys, v, seq)
  local tx = be:batch_tx()
  local put = seq and tx.seq_put or tx.put
  tx:lock(); tx:create_bucket(BUCKET); tx:unlock()
  local t0 = now()
  for i = 1, #keys do
    tx:lock()
    put(tx, BUCKET, keys[i], v)
    tx:unlock()
  end
  be:force_commit()
  return now() - t0
end

local ours = {}

function ours.w1(ctx)
  ctx.be = backend.open { path = ctx.dir .. "/w1.db" }
  local seconds = fill(ctx.be, ctx.keys, ctx.value)
  return { seconds = seconds, size = ctx.be:size(), commits = ctx.be:commits() }
end

function ours.w2(ctx)
  local keys = {}
  for i = 1, ctx.n do keys[i] = string.pack(">I8", i - 1) end
  local be = backend.open { path = ctx.dir .. "/w2.db" }
  local r = { seconds = fill(be, keys, ctx.value, true) }
  be:close()
  return r
end

function ours.w3(ctx)
  local keys, order, check = ctx.keys, ctx.order, 0
  local view <close> = ctx.be:concurrent_read_tx()
  local get = view.get
  local t0 = now()
  for k = 1, #order do
    check = check + get(view, BUCKET, keys[order[k]]):byte(1)
  end
  local seconds = now() - t0
  -- The floor: the same loop and a C call returning a fresh 128-byte string
  -- (string.sub), with no engine at all.
  local sub, wide, floor_check = string.sub, ctx.value .. ".", 0
  t0 = now()
  for k = 1, #order do
    floor_check = floor_check + sub(wide, 2, #keys[order[k]] + 65):byte(1)
  end
  return { seconds = seconds, check = check, floor_seconds = now() - t0 }
end

function ours.w4(ctx)
  local view <close> = ctx.be:concurrent_read_tx()
  local n, t0 = 0, now()
  local ks = view:range(BUCKET, "", END, 1000)
  while #ks > 0 do
    n = n + #ks
    if #ks < 1000 then break end
    ks = view:range(BUCKET, ks[#ks] .. "\0", END, 1000)
  end
  local seconds = now() - t0
  -- The floor: only the fresh Lua strings a range returns (a 64-byte key and a
  -- 128-byte value per entry), made by C (string.unpack) into a table per
  -- chunk of 1000, with no engine at all.
  local layout = string.rep("c64c128", 1000)
  local blob = string.rep(ctx.keys[1] .. ctx.value, 1000)
  local unpack = string.unpack
  t0 = now()
  for _ = 1, n // 1000 do
    local chunk = { unpack(layout, blob) }
    assert(#chunk == 2001)
  end
  return { seconds = seconds, keys = n, floor_seconds = (now() - t0) / (n // 1000 * 1000) * n }
end

function ours.w6(ctx)
  local t0 = now()
  local h = ctx.be:hash()
  return { seconds = now() - t0, hash = h }
end

function ours.w7(ctx)
  local path = ctx.dir .. "/snapshot.db"
  local t0 = now()
  local snap <close> = ctx.be:snapshot()
  local bytes = snap:write_to(path)
  local r = { seconds = now() - t0, bytes = bytes }
  os.remove(path)
  return r
end

function ours.w8(ctx)
  local be, keys = ctx.be, ctx.keys
  be:update(function(tx)
    for i = 1, #keys, 2 do tx:delete(BUCKET, keys[i]) end   -- every even index from 0
  end)
  be:force_commit()
  local before, t0 = be:size(), now()
  be:defrag()
  return { seconds = now() - t0, size_before = before, size_after = be:size() }
end

-- W5: concurrent read tx open+close, ns per op, at several buffer sizes.
function ours.w5(ctx)
  local be = backend.open { path = ctx.dir .. "/w5.db", batch_interval = 3600, batch_limit = 1 << 40 }
  local tx = be:batch_tx()
  tx:lock(); tx:create_bucket(BUCKET); tx:unlock()
  local out, buffered, ops = {}, 0, 100000
  for _, want in ipairs { 0, 1000, 100000 } do
    tx:lock()
    while buffered < math.min(want, #ctx.keys) do
      buffered = buffered + 1
      tx:put(BUCKET, ctx.keys[buffered], ctx.value)
    end
    tx:unlock()
    local t0 = now()
    for _ = 1, ops do be:concurrent_read_tx():close() end
    out["ns_" .. want] = (now() - t0) / ops * 1e9
  end
  be:close()
  return out
end

-- W9: latency of single puts (lock, put, unlock) while commits run.
function ours.w9(ctx)
  local be = backend.open { path = ctx.dir .. "/w9.db" }
  local tx = be:batch_tx()
  tx:lock(); tx:create_bucket(BUCKET); tx:unlock()
  local lat, keys, v = {}, ctx.keys, ctx.value
  local n = math.min(#keys, 200000)
  for i = 1, n do
    local t0 = now()
    tx:lock()
    tx:put(BUCKET, keys[i], v)
    tx:unlock()
    lat[i] = now() - t0
  end
  local commits = be:commits()
  be:close()
  table.sort(lat)
  local stalls = 0
  for i = n, 1, -1 do
    if lat[i] <= 1e-3 then break end
    stalls = stalls + 1
  end
  local function pct(p) return lat[math.max(1, math.ceil(n * p))] * 1e6 end
  return { p50_us = pct(0.5), p99_us = pct(0.99), p999_us = pct(0.999), max_us = lat[n] * 1e6,
           stalls_over_1ms = stalls, commits = commits }
end

local function rss_kib(field)
  local f = io.open("/proc/self/status")
  if not f then return 0 end
  local s = f:read("a")
  f:close()
  return tonumber(s:match(field .. ":%s*(%d+)")) or 0
end

-- M1: memory per buffered write, beyond its key and value.
function ours.m1(ctx)
  collectgarbage()
  local be = backend.open { path = ctx.dir .. "/m1.db", batch_interval = 3600, batch_limit = 1 << 40 }
  local tx = be:batch_tx()
  tx:lock(); tx:create_bucket(BUCKET)
  for i = 1, #ctx.keys do tx:put(BUCKET, ctx.keys[i], ctx.value) end
  tx:unlock()
  local st = be:stats()
  local payload = #ctx.keys * (64 + #ctx.value)
  local r = { overhead_bytes = (st.buffered_bytes - payload) / st.buffered_writes,
              peak_rss_mib = rss_kib("VmHWM") / 1024, buffered_writes = st.buffered_writes }
  be:close()
  return r
end

-- Running both columns -----------------------------------------------------------

local function run_program(program, workload, n, dir)
  local p = assert(io.popen(fmt("%s %s %s %d", program, workload, dir, n)))
  local line = p:read("a")
  local ok = p:close()
  assert(ok, fmt("%s %s failed: %s", program, workload, line))
  local r = {}
  for k, v in line:gmatch("([%w_]+)=(%S+)") do r[k] = tonumber(v) or v end
  return r
end

local function median(xs)
  assert(#xs > 0, "no numbers")
  local s = table.move(xs, 1, #xs, 1, {})
  table.sort(s)
  local m = #s // 2
  return #s % 2 == 1 and s[m + 1] or (s[m] + s[m + 1]) / 2, s[1], s[#s]
end

local function tmpdir()
  local name = os.tmpname()
  os.remove(name)
  assert(os.execute("mkdir -m 700 '" .. name .. "'"), "mkdir " .. name)
  return name
end

--- Runs the suite; returns the rows (one per workload) with every run's numbers.
function bench.run(opts)
  local n, runs = opts.n or 1000000, opts.runs or 3
  local log = opts.log or function() end
  log(fmt("generating %d keys", n))
  local ctx = { n = n, keys = random_keys(n), value = value(), order = read_order(n) }
  local results = {}   -- results[workload] = { ours = {...per run}, c = {...}, etcd = {...} }
  local function record(w, side, r)
    results[w] = results[w] or { ours = {}, c = {}, etcd = {} }
    table.insert(results[w][side], r)
  end
  local only = opts.only
  local function wanted(w) return not only or only[w] end
  local function other(run, w, side, program)
    if not program then return end
    local dir = tmpdir()
    log(fmt("run %d: %s (%s)", run, w, side))
    record(w, side, run_program(program, w, n, dir))
    os.execute("rm -rf '" .. dir .. "'")
  end
  local function all_sides(run, w)
    log(fmt("run %d: %s (ours)", run, w))
    record(w, "ours", ours[w](ctx))
    other(run, w, "c", opts.lmdb)
    other(run, w, "etcd", opts.etcd)
  end
  for run = 1, runs do
    -- W1 builds the database the next five use (W8 last: it deletes).
    ctx.dir = tmpdir()
    if wanted("w1") then
      all_sides(run, "w1")
    else
      ctx.be = backend.open { path = ctx.dir .. "/w1.db" }
      fill(ctx.be, ctx.keys, ctx.value)
    end
    for _, w in ipairs { "w3", "w4", "w6", "w7", "w8" } do
      if wanted(w) then all_sides(run, w) end
    end
    ctx.be:close()
    if wanted("w2") then all_sides(run, "w2") end
    for _, w in ipairs { "w5", "w9", "m1" } do
      if wanted(w) then
        log(fmt("run %d: %s (ours)", run, w))
        record(w, "ours", ours[w](ctx))
        if w ~= "m1" then other(run, w, "etcd", opts.etcd) end
      end
    end
    os.execute("rm -rf '" .. ctx.dir .. "'")
  end
  return results
end

-- The table ------------------------------------------------------------------

local function stat(runs, f)
  local xs = {}
  for i, r in ipairs(runs) do xs[i] = f(r, i) end
  return median(xs)
end

local function num(x)
  return x >= 100 and fmt("%.0f", x) or x >= 10 and fmt("%.1f", x) or fmt("%.3g", x)
end

local function cell(m, lo, hi, unit)
  return fmt("%s%s [%s–%s]", num(m), unit or "", num(lo), num(hi))
end

local function mib(bytes) return fmt("%.1f MiB", bytes / 2^20) end

-- One side's cell: f(run) over its runs, or "–" when the side did not run.
local function side_cell(runs, f, unit)
  if not runs or #runs == 0 then return "–" end
  return cell(stat(runs, f)) .. (unit or "")
end

-- The median ratio f(ours run i) / f(side run i), with its cell; nil if the
-- side did not run.
local function ratio(res, side, f)
  local runs = res[side]
  if not runs or #runs ~= #res.ours then return nil, "–" end
  local m, lo, hi = stat(res.ours, function(x, i) return f(x) / f(runs[i]) end)
  return m, cell(m, lo, hi)
end

local function seconds(x) return x.seconds end

--- The results as a markdown table: ours, plain LMDB C, and etcd's Go
-- backend when it ran, each with ratios computed per run.
function bench.report(results)
  local with_etcd = false
  for _, res in pairs(results) do with_etcd = with_etcd or #res.etcd > 0 end
  local out = {
    "| workload | ours (Lua) | plain LMDB (C) | ours ÷ C | "
      .. (with_etcd and "etcd backend (Go) | ours ÷ etcd | " or "") .. "target | met |",
    with_etcd and "|---|---|---|---|---|---|---|---|" or "|---|---|---|---|---|---|",
  }
  local function row(label, ours_cell, c_cell, c_ratio, etcd_cell, etcd_ratio, target, met)
    if type(met) == "boolean" then met = met and "yes" or "**no**" end
    local cells = { label, ours_cell, c_cell, c_ratio }
    if with_etcd then cells[#cells + 1] = etcd_cell; cells[#cells + 1] = etcd_ratio end
    cells[#cells + 1] = target
    cells[#cells + 1] = met
    out[#out + 1] = "| " .. table.concat(cells, " | ") .. " |"
  end
  -- A timed workload, compared by cost (f, default seconds) and shown by
  -- show (default seconds): the target is ours ÷ C <= limit.
  local function timed(label, w, limit, f, show, unit)
    local res = results[w]
    if not res then return end
    f, show, unit = f or seconds, show or seconds, unit or " s"
    local rc, rc_cell = ratio(res, "c", f)
    local _, re_cell = ratio(res, "etcd", f)
    row(label, side_cell(res.ours, show, unit), side_cell(res.c, show, unit), rc_cell,
      side_cell(res.etcd, show, unit), re_cell, "≤ " .. limit, rc ~= nil and rc <= limit)
  end

  timed("W1 1M random puts (lock/put/unlock each), force_commit", "w1", 0.9)
  local w1 = results.w1
  if w1 then
    local function commits_size(runs)
      if #runs == 0 then return "–" end
      return fmt("%d commits, %s", stat(runs, function(x) return x.commits or 0 end),
        mib(stat(runs, function(x) return x.size end)))
    end
    row("W1 commits and file size", commits_size(w1.ours), commits_size(w1.c), "–", commits_size(w1.etcd), "–",
      "–", "–")
  end
  timed("W2 1M seq_puts, 8-byte increasing keys", "w2", 1.2)
  timed("W3 1M random point reads", "w3", 1.2)
  local w3 = results.w3
  if w3 and #w3.c == #w3.ours then
    -- Ours >= Lua floor + the engine's lookup; the lookup is at best C's get
    -- less its own key fetch. So ours ÷ C >= (floor + C - fetch) ÷ C.
    local bound, lo, hi = stat(w3.ours, function(x, i)
      local c = w3.c[i]
      return (x.floor_seconds + c.seconds - c.keys_seconds) / c.seconds
    end)
    local n = #w3.ours > 0 and w3.c[1].gets or 1
    row("W3 floor: the Lua loop and a C call returning a fresh 128-byte string, no engine (C: its key fetches)",
      side_cell(w3.ours, function(x) return x.floor_seconds / n * 1e9 end, " ns/get"),
      side_cell(w3.c, function(x) return x.keys_seconds / n * 1e9 end, " ns/get"),
      "best possible: " .. cell(bound, lo, hi), "–", "–", "–",
      bound > 1.2 and fmt("W3's 1.2 is out of reach: ≥ %.2f with a free engine", bound) or "–")
  end
  local w4 = results.w4
  if w4 then
    local rc, rc_cell = ratio(w4, "c", seconds)
    local re, re_cell = ratio(w4, "etcd", seconds)
    local met = re ~= nil and re <= 1
    if re == nil then met = rc ~= nil and rc <= 2.5 end
    row("W4 full range scan, chunks of 1000", side_cell(w4.ours, seconds, " s"), side_cell(w4.c, seconds, " s"),
      rc_cell, side_cell(w4.etcd, seconds, " s"), re_cell, "per key ≤ etcd's (≈ 2.5 × C)", met)
    if re ~= nil and w4.ours[1].floor_seconds then
      -- Ours >= the floor, whatever the engine: ours ÷ etcd >= floor ÷ etcd.
      local bound, lo, hi = stat(w4.ours, function(x, i) return x.floor_seconds / w4.etcd[i].seconds end)
      local per_key = function(x) return x.floor_seconds / x.keys * 1e9 end
      row("W4 floor: only the fresh Lua strings of every chunk (C-made, no engine)",
        side_cell(w4.ours, per_key, " ns/key"), "–", "–",
        side_cell(w4.etcd, function(x) return x.seconds / x.keys * 1e9 end, " ns/key"),
        "best possible: " .. cell(bound, lo, hi), "–",
        bound > 1 and fmt("W4's target is out of reach: ≥ %.2f × etcd with a free engine", bound) or "–")
    end
  end
  timed("W6 hash of the 1M-key database", "w6", 1.1)
  timed("W7 snapshot written to a file (per byte, vs a plain file copy)", "w7", 1.1,
    function(x) return x.seconds / x.bytes end, function(x) return x.bytes / x.seconds / 1e6 end, " MB/s")
  timed("W8 defrag after deleting every other key (vs a rewrite into a fresh LMDB file)", "w8", 1.2)
  local w8 = results.w8
  if w8 then
    local function sizes(runs)
      if #runs == 0 then return "–" end
      return mib(stat(runs, function(x) return x.size_before end)) .. " → " ..
        mib(stat(runs, function(x) return x.size_after end))
    end
    local after = function(x) return x.size_after end
    local rc, rc_cell = ratio(w8, "c", after)
    local re, re_cell = ratio(w8, "etcd", after)
    local met = re ~= nil and re <= 1
    if re == nil then met = rc ~= nil and rc <= 1 end
    row("W8 file size before → after defrag", sizes(w8.ours), "rewrite: " .. sizes(w8.c):gsub(".* → ", ""),
      rc_cell, sizes(w8.etcd), re_cell, "after ≤ etcd's (and ≤ a fresh LMDB rewrite)", met)
  end
  local w5 = results.w5
  if w5 then
    for _, b in ipairs { 0, 1000, 100000 } do
      local key = "ns_" .. b
      local m = stat(w5.ours, function(x) return x[key] end)
      row(fmt("W5 concurrent_read_tx open+close, %d writes buffered", b),
        side_cell(w5.ours, function(x) return x[key] end, " ns"), "–", "–",
        side_cell(w5.etcd, function(x) return x[key] end, " ns"), select(2, ratio(w5, "etcd", function(x)
          return x[key] end)), "≤ 1 µs", m <= 1000)
    end
  end
  local w9 = results.w9
  if w9 then
    local function latency(runs)
      if #runs == 0 then return "–" end
      local function med(k) return (stat(runs, function(x) return x[k] end)) end
      return fmt("p50 %.2f µs, p99 %.2f µs, p99.9 %s, max %.0f µs, %d puts > 1 ms", med("p50_us"), med("p99_us"),
        cell(stat(runs, function(x) return x.p999_us end)) .. " µs", med("max_us"), med("stalls_over_1ms"))
    end
    local p999 = stat(w9.ours, function(x) return x.p999_us end)
    local stalls = stat(w9.ours, function(x) return x.stalls_over_1ms end)
    row("W9 single put latency while commits run (200k puts)", latency(w9.ours), "–", "–", latency(w9.etcd), "–",
      "p99.9 ≤ 20 µs, none > 1 ms", p999 <= 20 and stalls == 0)
  end
  local m1 = results.m1
  if m1 then
    local m, lo, hi = stat(m1.ours, function(x) return x.overhead_bytes end)
    local rss = stat(m1.ours, function(x) return x.peak_rss_mib end)
    row("M1 memory per buffered write beyond key and value (1M buffered)",
      cell(m, lo, hi, " B") .. fmt(", peak RSS %.0f MiB", rss), "–", "–", "–", "–", "≤ 64 B", m <= 64)
  end
  return table.concat(out, "\n")
end

local function main(args)
  local opts = { lmdb = "build/bench/lmdb_bench" }
  local i = 1
  while args[i] do
    local a, v = args[i], args[i + 1]
    if a == "--n" then opts.n = math.tointeger(tonumber(v))
    elseif a == "--runs" then opts.runs = math.tointeger(tonumber(v))
    elseif a == "--lmdb" then opts.lmdb = v
    elseif a == "--etcd" then opts.etcd = v
    elseif a == "--only" then
      opts.only = {}
      for w in v:gmatch("[^,]+") do opts.only[w] = true end
    else error("usage: bench.lua [--n N] [--runs R] [--lmdb PATH] [--etcd PATH] [--only w1,w3,...]", 0) end
    i = i + 2
  end
  opts.log = function(msg) io.stderr:write(msg, "\n") end
  local t0 = now()
  local results = bench.run(opts)
  print(bench.report(results))
  print(fmt("\n%d keys, %d runs, %.0f s in all", opts.n or 1000000, opts.runs or 3, now() - t0))
end

if arg and arg[0] and arg[0]:match("bench%.lua$") then main(arg) end

return bench
