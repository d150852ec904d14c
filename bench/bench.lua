--- bench/bench.lua: the benchmark suite (`make bench`, `backendctl bench` from a
-- checkout; not installed). Runs each workload through the module
-- from Lua and, in the same run, the same workload in plain LMDB C
-- (`build/bench/lmdb_bench`, same data, same durability) and, when given, in
-- etcd's own Go backend (`build/bench/etcd_bench`), then prints markdown
-- tables of medians, min and max, and ratios computed per run.
--
-- Every Lua workload runs twice a run: with the heap the suite needs (its
-- keys), and with a loaded heap, as an application that keeps its own data
-- in Lua has (3M more live strings: values, 8-byte keys, short names), where
-- every string and table the engine makes costs more.
--
--   lua5.4 bench/bench.lua [--n 1000000] [--runs 3] [--only w1,w3]
--                          [--lmdb build/bench/lmdb_bench] [--plain build/bench/lmdb_plain.so]
--                          [--etcd build/bench/etcd_bench]
--
-- With --plain (bench/lmdb_lua.c), W2, W3, W3b and W4 also run their Lua loop
-- against plain LMDB called from Lua, in the same process and heap: what
-- Lua and LMDB cost together, with no engine.
local backend = require "backend"
local uv = require "luv"

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

-- The CPU seconds the process has used, every thread's (ours commits on a
-- thread of its own).
local function cpu_now()
  local u = uv.getrusage()
  return u.utime.sec + u.stime.sec + (u.utime.usec + u.stime.usec) / 1e6
end

-- Times the ways ({ name, f } each) into r: all run once untimed, then
-- twice timed, in the given order and then in the reverse one, each after a
-- full collection; each keeps its faster time (name) and the CPU seconds of
-- that run (name .. "_cpu"). One after the other, a way paid for what the
-- ones before left behind (a collection cycle, heap memory handed back to
-- the system and touched afresh), and ratios moved with the order alone. In
-- a loaded heap the first scans after it is built ran twice as fast as every
-- later one, whatever the way (bench/README.md): the untimed round puts
-- every timed one where a running application is. f(round) may return the
-- seconds and CPU seconds of its own timed part (leaving out its setup); by
-- default its whole call is timed. Round 0 is the untimed one.
local function best_times(ways, r)
  for _, w in ipairs(ways) do
    collectgarbage()
    w[2](0)
  end
  for round = 1, 2 do
    for i = 1, #ways do
      local w = ways[round == 1 and i or #ways + 1 - i]
      collectgarbage()
      local c0, t0 = cpu_now(), now()
      local seconds, cpu = w[2](round)
      if not seconds then seconds, cpu = now() - t0, cpu_now() - c0 end
      if seconds < (r[w[1]] or math.huge) then
        r[w[1]], r[w[1] .. "_cpu"] = seconds, cpu
      end
    end
  end
  return r
end

function ours.w2(ctx)
  local keys = {}
  for i = 1, ctx.n do keys[i] = string.pack(">I8", i - 1) end
  local v = ctx.value
  local ways = {
    { "seconds", function(round)
        local be = backend.open { path = ctx.dir .. "/w2-" .. round .. ".db" }
        local c0 = cpu_now()
        local seconds = fill(be, keys, v, true)
        local cpu = cpu_now() - c0
        be:close()
        return seconds, cpu
      end },
  }
  -- The floor: fill's loop with no engine: the same three calls a key, to C
  -- functions that do nothing (`lock` and `unlock` as methods, as the
  -- BatchTx's are, the put through a local with the same arguments).
  local tx = setmetatable({}, { __index = { lock = type, unlock = type } })
  ways[#ways + 1] = { "floor_seconds", function()
    local put = select
    for i = 1, #keys do
      tx:lock()
      put(1, tx, BUCKET, keys[i], v)
      tx:unlock()
    end
  end }
  -- Plain LMDB called from Lua, in the same heap: the floor's loop putting
  -- into LMDB itself as C's side does (appends, a txn of 10,000 committed,
  -- on this thread: the CPU seconds compare with ours', which commits on
  -- another).
  if ctx.plain_lib then
    ways[#ways + 1] = { "plain_seconds", function(round)
      local plain = ctx.plain_lib.create(ctx.dir .. "/w2-plain-" .. round .. ".db", BUCKET)
      local pput, c0, t0 = plain.put, cpu_now(), now()
      for i = 1, #keys do
        tx:lock()
        pput(plain, keys[i], v)
        tx:unlock()
      end
      plain:close()   -- its last commit
      return now() - t0, cpu_now() - c0
    end }
  end
  return best_times(ways, {})
end

-- W3: random lookups in one view, through get and through range (etcd's
-- way: a range of the key alone), their floors, and plain LMDB.
function ours.w3(ctx)
  local keys, order = ctx.keys, ctx.order
  local view <close> = ctx.be:concurrent_read_tx()
  local get, range = view.get, view.range
  local check, range_check, floor_check, range_floor_check, plain_check = 0, 0, 0, 0, 0
  local ways = {
    { "seconds", function()
        check = 0
        for k = 1, #order do
          check = check + get(view, BUCKET, keys[order[k]]):byte(1)
        end
      end },
    { "range_seconds", function()
        range_check = 0
        for k = 1, #order do
          local _, vs = range(view, BUCKET, keys[order[k]], nil, 0)
          range_check = range_check + vs[1]:byte(1)
        end
      end },
  }
  -- The floor: the same loop and a C call returning a fresh 128-byte string
  -- (string.sub), with no engine at all; range's floor: the same, and the
  -- two tables range returns, holding the key and the string.
  local sub, wide = string.sub, ctx.value .. "."
  ways[#ways + 1] = { "floor_seconds", function()
    floor_check = 0
    for k = 1, #order do
      floor_check = floor_check + sub(wide, 2, #keys[order[k]] + 65):byte(1)
    end
  end }
  ways[#ways + 1] = { "range_floor_seconds", function()
    range_floor_check = 0
    for k = 1, #order do
      local key = keys[order[k]]
      local ks, vs = { key }, { sub(wide, 2, #key + 65) }
      range_floor_check = range_floor_check + vs[1]:byte(1) + #ks[1] - 64
    end
  end }
  -- Plain LMDB called from Lua (bench/lmdb_lua.c), in the same heap: the
  -- same get loop, and range's shape (the two tables) around the same get.
  local plain = ctx.plain
  if plain then
    local pget = plain.get
    ways[#ways + 1] = { "plain_seconds", function()
      plain_check = 0
      for k = 1, #order do
        plain_check = plain_check + pget(plain, keys[order[k]]):byte(1)
      end
    end }
    ways[#ways + 1] = { "plain_range_seconds", function()
      plain_check = 0
      for k = 1, #order do
        local key = keys[order[k]]
        local ks, vs = { key }, { pget(plain, key) }
        plain_check = plain_check + vs[1]:byte(1) - #ks[1] + 64
      end
    end }
  end
  local r = best_times(ways, {})
  assert(range_check == check, "W3: range and get read different values")
  assert(floor_check == #order * ctx.value:byte(2) and range_floor_check == floor_check)
  assert(not plain or plain_check == check, "W3: plain LMDB read different values")
  return r
end

-- The C side of W3b, W6, W7 (right after ours) or W8 (right before) run on
-- our own database file, in the same run (`lmdb_bench *-file DIR N SRC`):
-- the same file, so the same bytes and the same layout. Nil without the C
-- program.
local run_program
local function c_on_our_file(ctx, workload)
  if not ctx.lmdb then return nil end
  local dir = backend.mkdtemp()
  local r = run_program(ctx.lmdb, workload, ctx.n, dir, ctx.dir .. "/w1.db")
  assert(uv.fs_rmdir(dir))
  return r
end

-- W3b: a view per lookup, as a server taking one per request: open, range of
-- the key alone, close.
function ours.w3b(ctx)
  local be, keys, order = ctx.be, ctx.keys, ctx.order
  local check, floor_check, plain_check = 0, 0, 0
  local ways = {
    { "seconds", function()
        check = 0
        for k = 1, #order do
          local view <close> = be:concurrent_read_tx()
          local _, vs = view:range(BUCKET, keys[order[k]], nil, 0)
          check = check + vs[1]:byte(1)
        end
      end },
  }
  -- The floor: the same loop with no engine: an object made and closed a
  -- lookup (<close>; no finalizer, as a view has none), and the two tables
  -- range returns, holding the key and a fresh 128-byte string.
  local floor_mt = { __close = function() end }
  local sub, wide = string.sub, ctx.value .. "."
  ways[#ways + 1] = { "floor_seconds", function()
    floor_check = 0
    for k = 1, #order do
      local _ <close> = setmetatable({}, floor_mt)   -- the view's place
      local key = keys[order[k]]
      local ks, vs = { key }, { sub(wide, 2, #key + 65) }
      floor_check = floor_check + vs[1]:byte(1) + #ks[1]
    end
  end }
  -- Plain LMDB called from Lua, in the same heap: the floor's loop with a
  -- lookup in a read txn of its own (LMDB's cheapest: renewed and reset).
  local plain = ctx.plain
  if plain then
    local lookup = plain.lookup
    ways[#ways + 1] = { "plain_seconds", function()
      plain_check = 0
      for k = 1, #order do
        local _ <close> = setmetatable({}, floor_mt)
        local key = keys[order[k]]
        local ks, vs = { key }, { lookup(plain, key) }
        plain_check = plain_check + vs[1]:byte(1) + #ks[1] - 64
      end
    end }
  end
  local r = best_times(ways, {})
  assert(floor_check == #order * (ctx.value:byte(2) + 64))
  assert(not plain or plain_check == check, "W3b: plain LMDB read different values")
  -- The same lookups in C on this very file: plain LMDB's and the engine's
  -- through its C API, what the engine adds without Lua.
  r.c_file = c_on_our_file(ctx, "w3b-file")
  assert(not r.c_file or r.c_file.check == check, "W3b: C read different values")
  return r
end

-- W4: scans of the bucket in chunks of 1000, one whole scan a way: range;
-- rows reading every key and value, with a new Rows a chunk or one Rows
-- refilled (rows' fifth argument); rows only counting, both kinds; and the
-- floors, which make the same strings with no engine; timed by best_times.
local function scan(view, read)
  local n, from = 0, ""
  while true do
    local count, last = read(view, from)
    n = n + count
    if count < 1000 then return n end
    from = last .. "\0"
  end
end

function ours.w4(ctx)
  local view <close> = ctx.be:concurrent_read_tx()
  local n, width = ctx.n, 64 + #ctx.value
  local bytes, refilled = 0, nil
  local function range_way(v, from)
    local ks = v:range(BUCKET, from, END, 1000)
    return #ks, ks[#ks]
  end
  local function rows_way(read, refill)
    return function(v, from)
      local rows = v:rows(BUCKET, from, END, 1000, refill and refilled or nil)
      if refill then refilled = rows end
      local count = #rows
      if read then
        for i = 1, count do bytes = bytes + #rows:key(i) + #rows:value(i) end
      end
      return count, count > 0 and rows:key(count) or nil
    end
  end
  local ways = {
    { "seconds", function()
        assert(scan(view, range_way) == n, "W4: range read something else")
      end },
  }
  if view.rows then
    for _, w in ipairs { { "rows_seconds", true }, { "count_seconds", false },
                         { "refill_rows_seconds", true, true }, { "refill_count_seconds", false, true } } do
      ways[#ways + 1] = { w[1], function()
        bytes, refilled = 0, nil
        assert(scan(view, rows_way(w[2], w[3])) == n and bytes == (w[2] and n * width or 0),
          "W4: rows read something else")
      end }
    end
  end
  -- The Lua floor: the same number of key and value strings, made from a
  -- buffer with string.sub (no engine, no tables); with a string `extra`,
  -- also one userdata holding a copy of it a chunk (bench/lmdb_lua.c's
  -- alloc: one allocation and one copy of its size, as a Rows makes). By
  -- method (`buffer:sub`, dispatched through the string metatable's __index
  -- as rows:key(i) is through the Rows'), the floor of a loop written as rows' is.
  local buffer, sub, unpack = string.rep(ctx.keys[1] .. ctx.value, 1000), string.sub, string.unpack
  local alloc = ctx.plain_lib and ctx.plain_lib.alloc
  local function sub_floor(extra, by_method)
    return function()
      local made = 0
      for _ = 1, n // 1000 do
        if extra then
          alloc(extra)
          made = made + #extra
        end
        if by_method then
          for i = 0, 999 do
            local at = i * width
            made = made + #buffer:sub(at + 1, at + 64) + #buffer:sub(at + 65, at + width)
          end
        else
          for i = 0, 999 do
            local at = i * width
            local k, v = sub(buffer, at + 1, at + 64), sub(buffer, at + 65, at + width)
            made = made + #k + #v
          end
        end
      end
      assert(made == n // 1000 * (1000 * width + (extra and #extra or 0)))
    end
  end
  ways[#ways + 1] = { "sub_floor_seconds", sub_floor(nil) }
  ways[#ways + 1] = { "method_floor_seconds", sub_floor(nil, true) }
  -- rows makes besides one allocation a chunk, of the chunk's size (its
  -- rows, 2n + 1 bounds of 8 bytes, and its header); a refill makes none.
  local FLOORS = { "sub_floor_seconds", "method_floor_seconds", "floor_seconds" }
  if alloc then
    local chunk = string.rep("x", 1000 * width + 8 * 2001 + 24)
    ways[#ways + 1] = { "alloc_floor_seconds", sub_floor(chunk) }
    ways[#ways + 1] = { "method_alloc_floor_seconds", sub_floor(chunk, true) }
    FLOORS[#FLOORS + 1], FLOORS[#FLOORS + 2] = "alloc_floor_seconds", "method_alloc_floor_seconds"
  end
  -- The floor: only the fresh Lua strings a range returns (a 64-byte key and a
  -- 128-byte value per entry), made by C (string.unpack) into a table per
  -- chunk of 1000, with no engine at all.
  local layout = string.rep("c64c128", 1000)
  ways[#ways + 1] = { "floor_seconds", function()
    for _ = 1, n // 1000 do
      local chunk = { unpack(layout, buffer) }
      assert(#chunk == 2001)
    end
  end }
  -- Plain LMDB called from Lua, in the same heap: range's chunks, a cursor
  -- pushing each key and value straight from the map into two tables.
  local plain = ctx.plain
  if plain then
    local pscan = plain.scan
    local function plain_way(_, from)
      local ks = pscan(plain, from, 1000)
      return #ks, ks[#ks]
    end
    ways[#ways + 1] = { "plain_seconds", function()
      assert(scan(nil, plain_way) == n, "W4: plain LMDB read something else")
    end }
  end
  local r = best_times(ways, { keys = n })
  -- the floors made whole chunks: scaled to n rows (n // 1000 chunks made),
  -- their CPU seconds too
  for _, k in ipairs(FLOORS) do
    for _, f in ipairs { k, k .. "_cpu" } do r[f] = r[f] / (n // 1000 * 1000) * n end
  end
  return r
end

-- W6: hashes as C's side makes them: the first after other work costs more
-- on this VM (the file's mapped pages made accessible again, with or without
-- page faults: bench/README.md); of the next HASH_TIMED, on a warm mapping,
-- the fastest is compared (a 0.1 s pass moves with whatever else runs).
local HASH_TIMED = 5
function ours.w6(ctx)
  local t0 = now()
  local first = ctx.be:hash()
  local r = { first_seconds = now() - t0, hash = first }
  for _ = 1, HASH_TIMED do
    t0 = now()
    assert(ctx.be:hash() == first, "W6: two hashes differ")
    r.seconds = math.min(r.seconds or math.huge, now() - t0)
  end
  local c = c_on_our_file(ctx, "w6-file")
  if c then
    assert(c.hash == first and c.keys == ctx.n, "W6: C hashed our file to something else")
    r.c_file = c
  end
  return r
end

-- A snapshot of our database written to path (fsync'd) and removed: the
-- seconds it took and its size.
local function write_snapshot(be, path)
  local t0 = now()
  local snap <close> = be:snapshot()
  local bytes = snap:write_to(path)
  local seconds = now() - t0
  assert(os.remove(path))
  return seconds, bytes
end

-- W7 and W10 write files of 200-700 MB; how fast depends on the memory the
-- page cache takes for them: on this VM, memory the kernel has not used for
-- a while costs far more to fill than the pages of a file removed just
-- before (a run's first write_to took 1.5 to 3 times as long as the next:
-- bench/README.md). So every timed write follows the removal of a file at
-- least as large as the one it writes: a first write_to, untimed
-- (first_seconds), then each timed part, its file removed before the next.
function ours.w7(ctx)
  local path = ctx.dir .. "/snapshot.db"
  local first = write_snapshot(ctx.be, path)
  local seconds, bytes = write_snapshot(ctx.be, path)
  local r = { seconds = seconds, bytes = bytes, first_seconds = first }
  -- plain LMDB's side: a plain copy of the very file, right after.
  r.c_file = c_on_our_file(ctx, "w7-file")
  return r
end

-- W10: the database exported as an etcd data file (export_bolt, with its
-- SHA-256 trailer) against a snapshot of it written to a file, both fsync'd,
-- each after the removal of a file as large (see W7).
function ours.w10(ctx)
  local snap_path, bolt_path = ctx.dir .. "/w10.snap", ctx.dir .. "/w10.db"
  write_snapshot(ctx.be, snap_path)
  local write_to_seconds = write_snapshot(ctx.be, snap_path)
  local t0 = now()
  local r = backend.export_bolt(ctx.be, bolt_path)
  local seconds = now() - t0
  assert(os.remove(bolt_path))
  return { seconds = seconds, write_to_seconds = write_to_seconds, size = r.size }
end

function ours.w8(ctx)
  local be, keys = ctx.be, ctx.keys
  be:update(function(tx)
    for i = 1, #keys, 2 do tx:delete(BUCKET, keys[i]) end   -- every even index from 0
  end)
  be:force_commit()
  -- plain LMDB's side first, on the very file (the defrag replaces it).
  local c_file = c_on_our_file(ctx, "w8-file")
  assert(not c_file or c_file.keys == #keys // 2, "W8: C rewrote another number of keys from our file")
  local before, t0 = be:size(), now()
  be:defrag()
  return { seconds = now() - t0, size_before = before, size_after = be:size(), c_file = c_file }
end

-- Latencies (seconds) sorted in place and summed up in µs: p50, p99, p99.9,
-- max, and how many took over 1 ms.
local function latency_summary(lat)
  local n, stalls = #lat, 0
  table.sort(lat)
  for i = n, 1, -1 do
    if lat[i] <= 1e-3 then break end
    stalls = stalls + 1
  end
  local function pct(p) return n > 0 and lat[math.max(1, math.ceil(n * p))] * 1e6 or 0 end
  return { p50_us = pct(0.5), p99_us = pct(0.99), p999_us = pct(0.999), max_us = pct(1),
           stalls_over_1ms = stalls }
end

-- CRC-32C of every key and value a view sees in BUCKET, read by rows.
-- A prefix above every random key of the suite (8 bytes of 0xff: none has it).
local AFTER = string.rep("\255", 8)

local function view_crc(view)
  local crc, from = 0, ""
  while true do
    local rows = view:rows(BUCKET, from, END, 1000)
    for i = 1, #rows do crc = backend.crc32c(rows:value(i), backend.crc32c(rows:key(i), crc)) end
    if #rows < 1000 then return crc end
    from = rows:key(#rows) .. "\0"
  end
end

-- W11: an online defrag of W8's shape (1M keys written, every other deleted)
-- while a Lua loop puts single new keys, each after the last (etcd's key
-- bucket grows so, by revision), timed (lock, put, unlock), and reads
-- through a view opened before it; against the blocking defrag of an
-- identical copy of the database (a snapshot of it), with no writer (its
-- time), and of the copy given the same puts (its size).
function ours.w11(ctx)
  local keys, v = ctx.keys, ctx.value
  local be = backend.open { path = ctx.dir .. "/w11.db" }
  fill(be, keys, v)
  be:update(function(tx)
    for i = 1, #keys, 2 do tx:delete(BUCKET, keys[i]) end
  end)
  be:force_commit()
  local copy_path = ctx.dir .. "/w11-copy.db"
  do
    local snap <close> = be:snapshot()
    snap:write_to(copy_path)
  end
  local copy = backend.open { path = copy_path }
  local t0 = now()
  copy:defrag()
  local stw_seconds = now() - t0
  local view = be:concurrent_read_tx()
  local crc_before = view_crc(view)
  local lat, put_keys, n = {}, {}, 0
  collectgarbage()
  local tx = be:batch_tx()
  local job = be:defrag { background = true }
  while not job:done() do
    n = n + 1
    local k = AFTER .. string.pack(">I8", n)   -- after every key there, as etcd's revisions come
    put_keys[n] = k
    local t = now()
    tx:lock()
    tx:put(BUCKET, k, v)
    tx:unlock()
    lat[n] = now() - t
    view:get(BUCKET, keys[2 * (n % (#keys // 2)) + 2])
  end
  local r = job:wait()
  local crc_after = view_crc(view)
  t0 = now()
  view:close()   -- the replaced file's last reference
  local view_close_seconds = now() - t0
  -- The data: the copy, given the same puts, hashes the same; defragmented
  -- again, its size is the blocking defrag's of the same data.
  copy:update(function(ctx_tx)
    for i = 1, n do ctx_tx:put(BUCKET, put_keys[i], v) end
  end)
  local same = copy:hash() == be:hash()
  local stw = copy:defrag()
  copy:close()
  be:close()
  local out = latency_summary(lat)
  out.seconds, out.stw_seconds, out.puts = r.seconds, stw_seconds, n
  out.size_before, out.size_after, out.stw_size_after = r.size_before, r.size_after, stw.size_after
  out.pause_ms, out.swap_ms = r.pause_seconds * 1e3, r.swap_seconds * 1e3
  out.view_same, out.data_same = crc_before == crc_after and 1 or 0, same and 1 or 0
  out.view_close_ms = view_close_seconds * 1e3
  return out
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
  -- The Lua floor, same heap: as many objects, each made and closed by a
  -- method call, with no engine: what a view's object costs Lua (no
  -- finalizer: a ConcurrentReadTx shares one with up to 15 others).
  local floor_mt = { __index = { close = function() end }, __close = function() end }
  local t0 = now()
  for _ = 1, ops do setmetatable({}, floor_mt):close() end
  out.floor_ns = (now() - t0) / ops * 1e9
  return out
end

local function rss_kib(field)
  local f = io.open("/proc/self/status")
  if not f then return 0 end
  local s = f:read("a")
  f:close()
  return tonumber(s:match(field .. ":%s*(%d+)")) or 0
end

-- A busy loop of k steps, and the k that makes it last about `seconds` (its
-- median of 1001 timed runs, as W9 times a put).
local function busy(k)
  local x = 0
  for j = 1, k do x = x + j end
  return x
end

local function floor_step_work(seconds)
  local function median_of(k)
    local t = {}
    for i = 1, 1001 do
      local t0 = now()
      busy(k)
      t[i] = now() - t0
    end
    table.sort(t)
    return t[501]
  end
  local lo, hi = 0, 1
  while median_of(hi) < seconds and hi < 1e6 do lo, hi = hi, hi * 2 end
  while hi - lo > 1 do
    local mid = (lo + hi) // 2
    if median_of(mid) < seconds then lo = mid else hi = mid end
  end
  return hi
end

-- W9: latency of single puts (lock, put, unlock) while commits run, every key
-- once, with the default config; and the anonymous memory (the Lua heap and
-- the write buffers, not the mapped file) it grew by at its peak.
function ours.w9(ctx)
  local lat, keys, v = {}, ctx.keys, ctx.value
  local n = #keys
  for i = 1, n do lat[i] = 0.0 end   -- allocated before: not the engine's memory
  collectgarbage()
  local anon0, anon_peak = rss_kib("RssAnon"), 0
  local be = backend.open { path = ctx.dir .. "/w9.db" }
  local tx = be:batch_tx()
  tx:lock(); tx:create_bucket(BUCKET); tx:unlock()
  local start = now()
  for i = 1, n do
    local t0 = now()
    tx:lock()
    tx:put(BUCKET, keys[i], v)
    tx:unlock()
    lat[i] = now() - t0
    if i % 10000 == 0 then anon_peak = math.max(anon_peak, rss_kib("RssAnon")) end
  end
  local seconds = now() - start
  local out = latency_summary(lat)
  -- The floor: steps about as long as the median put, of a busy loop in
  -- place of the put (no engine), for as long as the puts took, while the
  -- committer writes what the puts left queued: the latencies any Lua loop
  -- sees on this machine during those commits (timer ticks, interrupts of
  -- the commit's I/O, the scheduler). Its latencies go where the puts' were.
  local queued = be:stats().buffered_writes
  local work = floor_step_work(out.p50_us * 1e-6)
  local t_end = now() + seconds
  for i = 1, n do
    local t0 = now()
    busy(work)
    local t1 = now()
    lat[i] = t1 - t0
    if t1 > t_end then
      for j = n, i + 1, -1 do lat[j] = nil end
      break
    end
  end
  local floor = latency_summary(lat)
  local floor_committed = queued - be:stats().buffered_writes
  be:force_commit()
  anon_peak = math.max(anon_peak, rss_kib("RssAnon"))
  local commits = be:commits()
  be:close()
  out.commits, out.puts = commits, n
  out.floor_p999_us, out.floor_max_us, out.floor_stalls = floor.p999_us, floor.max_us, floor.stalls_over_1ms
  out.floor_p50_us, out.floor_steps, out.floor_committed = floor.p50_us, #lat, floor_committed
  out.anon_growth_bytes, out.written_bytes = (anon_peak - anon0) * 1024, n * (#keys[1] + #v)
  return out
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

function run_program(program, workload, n, dir, src)
  local p = assert(io.popen(fmt("%s %s %s %d%s", program, workload, dir, n, src and " " .. src or "")))
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

-- Removes the directory tree at path.
local function remove_tree(path)
  local req = assert(uv.fs_scandir(path))
  for name, kind in uv.fs_scandir_next, req do
    local sub = path .. "/" .. name
    if kind == "directory" then remove_tree(sub) else assert(uv.fs_unlink(sub)) end
  end
  assert(uv.fs_rmdir(path))
end

-- The loaded heap: 3 strings a key that stay live through the workloads, as
-- an application's own data (distinct 128-byte values, 8-byte sequential
-- keys, short names).
local function loaded_heap(n)
  local g, values, seq, names = splitmix64(4), {}, {}, {}
  for i = 1, n do
    local x = g()
    values[i] = string.pack("<i8", x) .. string.rep("v", 120)
    seq[i] = string.pack(">I8", i)
    names[i] = "user/" .. (x & 0xffffff)
  end
  return { values, seq, names }
end

local MODES = { "ours", "ours_loaded" }

--- Runs the suite; returns the rows (one per workload) with every run's
-- numbers: results[w] = { ours = {...}, ours_loaded = {...}, c = {...}, etcd = {...} },
-- one entry a run in each (the other programs run once a run, for both modes).
function bench.run(opts)
  local n, runs = opts.n or 1000000, opts.runs or 3
  local log = opts.log or function() end
  log(fmt("generating %d keys", n))
  local ctx = { n = n, keys = random_keys(n), value = value(), order = read_order(n), lmdb = opts.lmdb,
                plain_lib = opts.plain and assert(package.loadlib(opts.plain, "luaopen_lmdb_plain"))() }
  local results = {}
  local function record(w, side, r)
    results[w] = results[w] or { ours = {}, ours_loaded = {}, c = {}, etcd = {} }
    table.insert(results[w][side], r)
  end
  local only = opts.only
  local function wanted(w) return not only or only[w] end
  local function other(run, w, side, program)
    if not program then return end
    local dir = backend.mkdtemp()
    log(fmt("run %d: %s (%s)", run, w, side))
    record(w, side, run_program(program, w, n, dir))
    remove_tree(dir)
  end
  local function ours_side(run, w, mode)
    log(fmt("run %d: %s (%s)", run, w, mode))
    collectgarbage()
    record(w, mode, ours[w](ctx))
  end
  for run = 1, runs do
    for m, mode in ipairs(MODES) do
      ctx.heap = mode == "ours_loaded" and loaded_heap(n) or nil
      -- W1 builds the database the next ones use (W8 last: it deletes).
      ctx.dir = backend.mkdtemp()
      if wanted("w1") then
        ours_side(run, "w1", mode)
      else
        ctx.be = backend.open { path = ctx.dir .. "/w1.db" }
        fill(ctx.be, ctx.keys, ctx.value)
      end
      -- W1's file opened with plain LMDB too, for the read workloads' floors
      -- (one mapping, warm after W3 as ours is), and closed before W8 writes.
      ctx.plain = ctx.plain_lib and ctx.plain_lib.open(ctx.dir .. "/w1.db", BUCKET)
      for _, w in ipairs { "w3", "w3b", "w4", "w6", "w7", "w10", "w8" } do
        if w == "w8" and ctx.plain then ctx.plain:close(); ctx.plain = nil end
        if wanted(w) then ours_side(run, w, mode) end
      end
      ctx.be:close()
      for _, w in ipairs { "w2", "w5", "w9", "m1", "w11" } do
        if wanted(w) then ours_side(run, w, mode) end
      end
      remove_tree(ctx.dir)
      ctx.heap = nil
      if m == 1 then   -- the other programs, once a run
        for _, w in ipairs { "w1", "w2", "w3", "w3b", "w4", "w6", "w7", "w8" } do
          if wanted(w) then other(run, w, "c", opts.lmdb) end
        end
        for _, w in ipairs { "w1", "w2", "w3", "w4", "w5", "w6", "w7", "w8", "w9" } do
          if wanted(w) then other(run, w, "etcd", opts.etcd) end
        end
      end
    end
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

-- The median of f(ours run i) / g(other run i), with its cell; nil, "–" when
-- either side did not run (or f has no number).
local function ratio(ours_runs, other_runs, f, g)
  if not other_runs or #ours_runs == 0 or #other_runs ~= #ours_runs or f(ours_runs[1]) == nil then
    return nil, "–"
  end
  local m, lo, hi = stat(ours_runs, function(x, i) return f(x) / (g or f)(other_runs[i]) end)
  return m, cell(m, lo, hi)
end

local function seconds(x) return x.seconds end
local function field(name) return function(x) return x[name] end end

local HEAPS = { ours = "the suite's own heap", ours_loaded = "a loaded heap (3M more live strings)" }

--- The results as markdown, one table for each heap (`mode`: "ours" or
-- "ours_loaded"; nil: both), with plain LMDB C and etcd's Go backend when
-- they ran, each ratio computed per run.
function bench.report(results, mode)
  if mode == nil then
    local parts = {}
    for _, m in ipairs(MODES) do
      parts[#parts + 1] = "### Lua side with " .. HEAPS[m] .. "\n\n" .. bench.report(results, m)
    end
    return table.concat(parts, "\n\n")
  end
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
  -- A timed workload: ours f (default seconds) against C's and etcd's g
  -- (default f), shown by show; the target is ours ÷ C <= limit.
  local function timed(label, w, limit, f, show, unit, g)
    local res = results[w]
    if not res or #res[mode] == 0 or f and f(res[mode][1]) == nil then return end
    f, show, unit = f or seconds, show or f or seconds, unit or " s"
    local rc, rc_cell = ratio(res[mode], res.c, f, g)
    local _, re_cell = ratio(res[mode], res.etcd, f, g)
    row(label, side_cell(res[mode], show, unit), side_cell(res.c, g or show, unit), rc_cell,
      side_cell(res.etcd, g or show, unit), re_cell, "≤ " .. limit, rc ~= nil and rc <= limit)
  end
  -- Ours f against ours g in the same runs (a floor): the target is f ÷ g <= limit
  -- (no limit: the ratio is shown, not a target).
  local function against_floor(label, w, f, g, limit, what)
    local res = results[w]
    if not res or #res[mode] == 0 or f(res[mode][1]) == nil or g(res[mode][1]) == nil then return end
    local m, lo, hi = stat(res[mode], function(x) return f(x) / g(x) end)
    row(label, side_cell(res[mode], f, " s"), "–", "–", "–", "–",
      fmt("÷ %s: %s", what, cell(m, lo, hi)) .. (limit and fmt(", target ≤ %s", limit) or ""),
      limit == nil and "–" or m <= limit)
  end
  local function runs_of(w) return results[w] and results[w][mode] or {} end
  -- Ours f against plain LMDB's g on our own file, both in ours' runs
  -- (c_on_our_file): the target is f ÷ g <= limit.
  local function on_our_file(label, w, limit, f, g, show, show_c, unit)
    local res = results[w]
    if not res or #res[mode] == 0 or g(res[mode][1]) == nil then return end
    local m, lo, hi = stat(res[mode], function(x) return f(x) / g(x) end)
    row(label, side_cell(res[mode], show, unit), side_cell(res[mode], show_c, unit), cell(m, lo, hi),
      "–", "–", limit < math.huge and "≤ " .. limit or "–", limit == math.huge and "–" or m <= limit)
  end

  -- Plain LMDB called from Lua (field pf of ours' runs of w) against C's
  -- runs of cw (default w) by g (default seconds), and ours' f against it,
  -- each ratio per run; `also` adds another ratio: { label, field }.
  local function plain_row(label, w, pf, f, cw, g, also)
    local res, c = results[w], results[cw or w]
    if not res or #res[mode] == 0 or res[mode][1][pf] == nil then return end
    local pick = field(pf)
    local _, rc_cell = ratio(res[mode], c and c.c, pick, g or seconds)
    local notes = { "ours ÷ it: " .. cell(stat(res[mode], function(x) return f(x) / x[pf] end)) }
    if also then
      notes[2] = fmt("it ÷ %s: %s", also[1], cell(stat(res[mode], function(x) return x[pf] / x[also[2]] end)))
    end
    row(label, side_cell(res[mode], pick, " s"), side_cell(c and c.c, g or seconds, " s"), rc_cell, "–", "–",
      table.concat(notes, "; "), "–")
  end

  timed("W1 1M random puts (lock/put/unlock each), force_commit", "w1", 0.9)
  if #runs_of("w1") > 0 then
    local function commits_size(runs)
      if not runs or #runs == 0 then return "–" end
      return fmt("%d commits, %s", stat(runs, function(x) return x.commits or 0 end),
        mib(stat(runs, function(x) return x.size end)))
    end
    row("W1 commits and file size", commits_size(runs_of("w1")), commits_size(results.w1.c), "–",
      commits_size(results.w1.etcd), "–", "–", "–")
  end
  timed("W2 1M seq_puts, 8-byte increasing keys", "w2", 1.2)
  local w2 = results.w2
  if w2 and #runs_of("w2") > 0 and #w2.c == #runs_of("w2") then
    local bound, lo, hi = stat(runs_of("w2"), function(x, i)
      return (x.floor_seconds + w2.c[i].seconds) / w2.c[i].seconds
    end)
    row("W2 floor: the same loop calling three C functions that do nothing (lock and unlock as methods), no engine",
      side_cell(runs_of("w2"), field("floor_seconds"), " s"), "–",
      "best possible: " .. cell(bound, lo, hi), "–", "–", "–", "–")
  end
  plain_row("W2, plain LMDB called from Lua: the floor's loop, the put into LMDB itself as C's side puts "
    .. "(bench/lmdb_lua.c), same heap and run", "w2", "plain_seconds", seconds)
  against_floor("W2 CPU seconds of every thread: ours (committing on a second thread), ÷ plain LMDB called "
    .. "from Lua's (committing on this one)", "w2", field("seconds_cpu"), field("plain_seconds_cpu"), nil,
    "plain LMDB from Lua's CPU seconds")
  timed("W3 1M random point reads via get, one view", "w3", 1.6)
  timed("W3 the same via range(b, k, nil, 0)", "w3", 2.0, field("range_seconds"), nil, nil, seconds)
  local w3 = results.w3
  if w3 and #runs_of("w3") > 0 and #w3.c == #runs_of("w3") then
    -- Ours >= Lua floor + the engine's lookup; the lookup is at best C's get
    -- less its own key fetch. So ours ÷ C >= (floor + C - fetch) ÷ C.
    local bound, lo, hi = stat(runs_of("w3"), function(x, i)
      local c = w3.c[i]
      return (x.floor_seconds + c.seconds - c.keys_seconds) / c.seconds
    end)
    local n = w3.c[1].gets
    row("W3 floor: the Lua loop and a C call returning a fresh 128-byte string, no engine (C: its key fetches)",
      side_cell(runs_of("w3"), function(x) return x.floor_seconds / n * 1e9 end, " ns/get"),
      side_cell(w3.c, function(x) return x.keys_seconds / n * 1e9 end, " ns/get"),
      "best possible: " .. cell(bound, lo, hi), "–", "–", "–", "–")
    bound, lo, hi = stat(runs_of("w3"), function(x, i)
      local c = w3.c[i]
      return (x.range_floor_seconds + c.seconds - c.keys_seconds) / c.seconds
    end)
    row("W3 range's floor: the same, and the two tables range returns, holding the key and the string",
      side_cell(runs_of("w3"), function(x) return x.range_floor_seconds / n * 1e9 end, " ns/get"),
      side_cell(w3.c, function(x) return x.keys_seconds / n * 1e9 end, " ns/get"),
      "best possible: " .. cell(bound, lo, hi), "–", "–", "–", "–")
  end
  plain_row("W3 via get, plain LMDB called from Lua: the same loop, mdb_get in one read txn, same heap "
    .. "and run, no engine", "w3", "plain_seconds", seconds)
  plain_row("W3 via range, plain LMDB called from Lua: the same, and range's two tables around the value",
    "w3", "plain_range_seconds", field("range_seconds"))
  timed("W3b 1M lookups, a new concurrent_read_tx and range(b, k, nil, 0) each (C: a read txn each)", "w3b", 2.5)
  local w3b = results.w3b
  if w3b and w3 and #runs_of("w3b") > 0 and #w3b.c == #runs_of("w3b") and #w3.c == #w3b.c then
    -- As W3's bound: ours >= the Lua floor + C's lookups less their key fetches.
    local bound, lo, hi = stat(runs_of("w3b"), function(x, i)
      return (x.floor_seconds + w3b.c[i].seconds - w3.c[i].keys_seconds) / w3b.c[i].seconds
    end)
    local n = w3.c[1].gets
    row("W3b floor: the Lua loop, an object made and closed, two tables, the key and a fresh 128-byte "
      .. "string a lookup, no engine (C: W3's key fetches)",
      side_cell(runs_of("w3b"), function(x) return x.floor_seconds / n * 1e9 end, " ns/lookup"),
      side_cell(w3.c, function(x) return x.keys_seconds / n * 1e9 end, " ns/lookup"),
      "best possible: " .. cell(bound, lo, hi), "–", "–", "–", "–")
  end
  plain_row("W3b, plain LMDB called from Lua: the floor's loop, the lookup in a read txn renewed and reset "
    .. "each (LMDB's cheapest), same heap and run", "w3b", "plain_seconds", seconds)
  local function c_file(name) return function(x) return x.c_file and x.c_file[name] end end
  on_our_file("W3b in C on a copy of ours' file: the engine's C API, a view a lookup (open, range of the key, "
    .. "close) (C: LMDB's, a read txn a lookup); not a target", "w3b", math.huge,
    c_file("core_seconds"), c_file("seconds"), c_file("core_seconds"), c_file("seconds"), " s")
  on_our_file("W3b in C, the same through a read-only backend on ours' file, beside ours (a view also "
    .. "checks for a writer's defrag) (C: the engine's C API on the copy, as above); not a target", "w3b",
    math.huge, c_file("core_readonly_seconds"), c_file("core_seconds"), c_file("core_readonly_seconds"),
    c_file("core_seconds"), " s")
  on_our_file("W3b, ours from Lua (C: the engine's C API on the copy, as above); not a target", "w3b",
    math.huge, seconds, c_file("core_seconds"), seconds, c_file("core_seconds"), " s")
  timed("W4 full scan in chunks of 1000 via range (C: cursor, copying every key and value)", "w4", 2.5)
  against_floor("W4 via range, ÷ the Lua floor (the same strings by string.sub, no engine)", "w4",
    seconds, field("sub_floor_seconds"), 1.3, "floor")
  against_floor("W4 via range, ÷ the same strings made by C into a table a chunk (string.unpack), no engine",
    "w4", seconds, field("floor_seconds"), nil, "C-made floor")
  plain_row("W4 via range, plain LMDB called from Lua: range's chunks, a cursor pushing every key and value "
    .. "from the map into two tables, same heap and run", "w4", "plain_seconds", seconds, nil, nil,
    { "the Lua floor", "sub_floor_seconds" })
  against_floor("W4 via rows, reading every key and value, ÷ the Lua floor", "w4",
    field("rows_seconds"), field("sub_floor_seconds"), 1.2, "floor")
  against_floor("W4 via rows, reading every key and value, ÷ that floor plus one allocation and copy of a "
    .. "chunk's size a chunk, as rows makes (a userdata)", "w4",
    field("rows_seconds"), field("alloc_floor_seconds"), nil, "floor + allocation")
  timed("W4 via rows, counting only (C: cursor scan)", "w4", 2, field("count_seconds"), nil, nil, seconds)
  against_floor("W4 via rows refilling one Rows (rows' fifth argument), reading every key and value, ÷ the Lua "
    .. "floor", "w4", field("refill_rows_seconds"), field("sub_floor_seconds"), 1.2, "floor")
  timed("W4 via rows refilling one Rows, counting only (C: cursor scan)", "w4", 2, field("refill_count_seconds"),
    nil, nil, seconds)
  -- Reading every row through rows costs at least the Lua loop as written
  -- (rows:key(i) is a method call: the floor by method) and the scan itself
  -- (C's cursor scan, copying every key and value, as a Rows holds them).
  local w4 = results.w4
  if w4 and #runs_of("w4") > 0 and #w4.c == #runs_of("w4") then
    for _, b in ipairs {
      { "a new Rows a chunk", "rows_seconds", "method_alloc_floor_seconds", "the method floor + the allocation" },
      { "one Rows refilled", "refill_rows_seconds", "method_floor_seconds", "the method floor" } } do
      if runs_of("w4")[1][b[3]] ~= nil then   -- no alloc floor without bench/lmdb_lua.c
        local function least(x, i) return x[b[3]] + w4.c[i].seconds end
        local runs = runs_of("w4")
        row(fmt("W4 via rows, %s, reading every key and value: best possible ÷ the Lua floor is (%s, buffer:sub "
            .. "called as rows:key(i) is, + C's cursor scan) ÷ the floor", b[1], b[4]),
          side_cell(runs, field(b[2]), " s"), side_cell(w4.c, seconds, " s"),
          "best possible: " .. cell(stat(runs, function(x, i) return least(x, i) / x.sub_floor_seconds end)),
          "–", "–", "ours ÷ that least: " .. cell(stat(runs, function(x, i) return x[b[2]] / least(x, i) end)), "–")
      end
    end
  end
  on_our_file("W6 hash of the 1M-key database (C: the same hash of our very file, opened read-only)", "w6", 1.1,
    seconds, function(x) return x.c_file and x.c_file.seconds end, seconds,
    function(x) return x.c_file.seconds end, " s")
  timed("W6 the same, C hashing its own file (another file: built in commits of 10,000 puts)", "w6", 1.1)
  on_our_file("W6 the first hash, untimed above (C: on our file too; not a target)",
    "w6", math.huge, field("first_seconds"), function(x) return x.c_file and x.c_file.first_seconds end,
    field("first_seconds"), function(x) return x.c_file.first_seconds end, " s")
  local function per_byte(x) return x.seconds / x.bytes end
  local function mb_s(x) return x.bytes / x.seconds / 1e6 end
  on_our_file("W7 snapshot written to a file (C: a plain copy of our very file, fsync'd; per byte)", "w7", 1.1,
    per_byte, function(x) return x.c_file and x.c_file.seconds / x.c_file.bytes end,
    mb_s, function(x) return x.c_file.bytes / x.c_file.seconds / 1e6 end, " MB/s")
  timed("W7 the same, C copying its own file (another file: built in commits of 10,000 puts; per byte)", "w7", 1.1,
    per_byte, mb_s, " MB/s")
  if #runs_of("w7") > 0 then
    row("W7 the run's first write_to, untimed above: memory for the page cache not warm (not a target)",
      side_cell(runs_of("w7"), function(x) return x.bytes / x.first_seconds / 1e6 end, " MB/s"),
      "–", "–", "–", "–", "–", "–")
  end
  against_floor("W10 export_bolt of the database (an etcd file, SHA-256 trailer), ÷ write_to of a snapshot of it",
    "w10", seconds, field("write_to_seconds"), 1.5, "write_to")
  on_our_file("W8 defrag after deleting every other key (C: a rewrite of our very file into a fresh LMDB file, "
      .. "right before)", "w8", 1.2,
    seconds, function(x) return x.c_file and x.c_file.seconds end, seconds,
    function(x) return x.c_file.seconds end, " s")
  timed("W8 the same, C rewriting its own file after the same deletes (another file: built in commits of 10,000 puts)",
    "w8", 1.2)
  local w8 = results.w8
  if w8 and #runs_of("w8") > 0 then
    local function sizes(runs)
      if not runs or #runs == 0 then return "–" end
      return mib(stat(runs, function(x) return x.size_before end)) .. " → " ..
        mib(stat(runs, function(x) return x.size_after end))
    end
    local after = field("size_after")
    local rc, rc_cell = ratio(runs_of("w8"), w8.c, after)
    local _, re_cell = ratio(runs_of("w8"), w8.etcd, after)
    row("W8 file size before → after defrag", sizes(runs_of("w8")), "rewrite: " .. sizes(w8.c):gsub(".* → ", ""),
      rc_cell, sizes(w8.etcd), re_cell, "after ≤ 1.2 × a fresh LMDB rewrite", rc ~= nil and rc <= 1.2)
  end
  if #runs_of("w11") > 0 then
    local runs = runs_of("w11")
    local function med(k) return (stat(runs, field(k))) end
    row("W11 online defrag of W8's shape while a Lua loop puts (lock/put/unlock) and reads a view opened before",
      fmt("%s, %d puts during it", side_cell(runs, seconds, " s"), med("puts")), "–", "–", "–", "–",
      fmt("÷ a blocking defrag of a copy: %s, target ≤ 2", cell(stat(runs, function(x)
        return x.seconds / x.stw_seconds end))), med("seconds") / med("stw_seconds") <= 2)
    row("W11 put latency during it", fmt("p50 %.2f µs, p99.9 %s µs, max %s µs, %g puts > 1 ms",
      med("p50_us"), cell(stat(runs, field("p999_us"))), cell(stat(runs, field("max_us"))),
      med("stalls_over_1ms")), "–", "–", "–", "–", "p99.9 ≤ 100 µs, max ≤ 5 ms (median of the runs)",
      med("p999_us") <= 100 and med("max_us") <= 5000)
    row("W11 writers' wait for the swap (pause_seconds), and the committer's pause",
      fmt("%s ms; committer %s ms", cell(stat(runs, field("pause_ms"))), cell(stat(runs, field("swap_ms")))),
      "–", "–", "–", "–", "pause ≤ 5 ms", med("pause_ms") <= 5)
    row("W11 the view's close after it, the replaced file's last reference (the file then closes on the "
      .. "reaper thread)", cell(stat(runs, field("view_close_ms"))) .. " ms", "–", "–", "–", "–", "–", "–")
    local function all(k)
      local c = 0
      for _, x in ipairs(runs) do c = c + x[k] end
      return c
    end
    local sm, slo, shi = stat(runs, function(x) return x.size_after / x.stw_size_after end)
    row("W11 size after, ÷ the blocking defrag's; the view's CRC before = after; data = the model's",
      fmt("%s → %s; view same in %d of %d runs, data same in %d of %d", mib(med("size_before")),
        mib(med("size_after")), all("view_same"), #runs, all("data_same"), #runs),
      "–", "–", "–", "–", fmt("size ÷ blocking: %s, target within 5 %%", cell(sm, slo, shi)),
      sm <= 1.05 and sm >= 0.95 and all("view_same") == #runs and all("data_same") == #runs)
  end
  if #runs_of("w5") > 0 then
    for _, b in ipairs { 0, 1000, 100000 } do
      local key = "ns_" .. b
      local m = stat(runs_of("w5"), field(key))
      row(fmt("W5 concurrent_read_tx open+close, %d writes buffered", b),
        side_cell(runs_of("w5"), field(key), " ns"), "–", "–",
        side_cell(results.w5.etcd, field(key), " ns"), select(2, ratio(runs_of("w5"), results.w5.etcd, field(key))),
        "≤ 200 ns", m <= 200)
    end
    row("W5 the Lua floor: an object made and closed by a method call, no engine",
      side_cell(runs_of("w5"), field("floor_ns"), " ns"), "–", "–", "–", "–", "(what Lua itself costs)", "–")
  end
  if #runs_of("w9") > 0 then
    local function latency(runs)
      if not runs or #runs == 0 then return "–" end
      local function med(k) return (stat(runs, field(k))) end
      return fmt("p50 %.2f µs, p99 %.2f µs, p99.9 %s, max %s, %g puts > 1 ms", med("p50_us"), med("p99_us"),
        cell(stat(runs, field("p999_us"))) .. " µs", cell(stat(runs, field("max_us"))) .. " µs",
        med("stalls_over_1ms"))
    end
    local p999 = stat(runs_of("w9"), field("p999_us"))
    local max = stat(runs_of("w9"), field("max_us"))
    row(fmt("W9 single put latency while commits run (%d puts, default config)", runs_of("w9")[1].puts),
      latency(runs_of("w9")), "–", "–", latency(results.w9.etcd), "–", "p99.9 ≤ 20 µs, max ≤ 1 ms",
      p999 <= 20 and max <= 1000)
    local function med(k) return (stat(runs_of("w9"), field(k))) end
    row("W9 floor: for as long, steps as long as the median put (a busy loop, no engine), "
      .. "while the committer writes what W9 queued",
      fmt("p50 %.2f µs, p99.9 %s µs, max %s µs, %g steps > 1 ms, %.0f steps, %.0f writes committed meanwhile",
        med("floor_p50_us"), cell(stat(runs_of("w9"), field("floor_p999_us"))),
        cell(stat(runs_of("w9"), field("floor_max_us"))), med("floor_stalls"), med("floor_steps"),
        med("floor_committed")), "–", "–", "–", "–",
      "(what any Lua loop sees here)", "–")
    if runs_of("w9")[1].anon_growth_bytes then
      local m, lo, hi = stat(runs_of("w9"), function(x) return x.anon_growth_bytes / x.written_bytes end)
      row("M1 peak anonymous memory (RssAnon) growth during W9, ÷ the bytes written",
        side_cell(runs_of("w9"), function(x) return x.anon_growth_bytes / 2^20 end, " MiB"), "–", "–", "–", "–",
        fmt("%s × the bytes written, target ≤ 2", cell(m, lo, hi)), m <= 2)
    end
  end
  if #runs_of("m1") > 0 then
    local m, lo, hi = stat(runs_of("m1"), field("overhead_bytes"))
    local rss = stat(runs_of("m1"), field("peak_rss_mib"))
    row("M1b memory per buffered write beyond key and value (1M buffered in one section)",
      cell(m, lo, hi, " B") .. fmt(", peak RSS %.0f MiB", rss), "–", "–", "–", "–", "≤ 64 B", m <= 64)
  end
  return table.concat(out, "\n")
end

--- build/bench/NAME of the tree this suite is in, if it is built.
function bench.built(name)
  local src = package.searchpath("bench.bench", package.path)
  local path = src and src:gsub("bench/bench%.lua$", "build/bench/" .. name)
  return path and uv.fs_stat(path) and path or nil
end

local function main(args)
  local opts = { lmdb = bench.built("lmdb_bench"), plain = bench.built("lmdb_plain.so") }
  local i = 1
  while args[i] do
    local a, v = args[i], args[i + 1]
    if a == "--n" then opts.n = math.tointeger(tonumber(v))
    elseif a == "--runs" then opts.runs = math.tointeger(tonumber(v))
    elseif a == "--lmdb" then opts.lmdb = v
    elseif a == "--etcd" then opts.etcd = v
    elseif a == "--plain" then opts.plain = v
    elseif a == "--only" then
      opts.only = {}
      for w in v:gmatch("[^,]+") do opts.only[w] = true end
    else
      error("usage: bench.lua [--n N] [--runs R] [--lmdb PATH] [--plain PATH] [--etcd PATH] [--only w1,w3,...]", 0)
    end
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
