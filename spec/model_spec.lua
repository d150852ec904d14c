-- Seeded random operation sequences run against the backend and the pure-Lua model
-- (lua/backend/model.lua), compared op by op.
--
--   BACKEND_SEED=n   replay one seed (its config is chosen by the seed)
--   BACKEND_OPS=n    operations per seed (default 500)
--   BACKEND_SEEDS=n  number of seeds when BACKEND_SEED is unset (default 8),
--   BACKEND_FIRST_SEED=n  starting at n (default 1)
--
-- A failure names the seed and the op index, and lists the last operations.
local H = require "spec.helper"
local model = require "backend.model"

local fmt = string.format

-- model.quote, abbreviating long strings
local function quote(s)
  if s ~= nil and #s > 24 then
    return fmt("%s..(%d bytes)", model.quote(s:sub(1, 12)), #s)
  end
  return model.quote(s)
end

-- ---------------------------------------------------------------------------
-- The model alone (no C module needed)

describe("model (pure Lua)", function()
  it("orders keys by bytes, shorter first", function()
    local t = model.sort { "b", "a\0", "a", "\255", "\0", "ab", "a\255", "" }
    assert.are.same({ "", "\0", "a", "a\0", "ab", "a\255", "b", "\255" }, t)
    assert.is_true(model.less("abcdefgh1", "abcdefgh2"))
    assert.is_false(model.less("abcdefgh2", "abcdefgh1"))
    assert.is_true(model.less("abcdefghij", "abcdefghijk"))
  end)

  it("crc32c check value and continuation", function()
    assert.are.equal(0xE3069283, model.crc32c("123456789"))
    assert.are.equal(0, model.crc32c(""))
    assert.are.equal(model.crc32c("hello world"), model.crc32c(" world", model.crc32c("hello")))
  end)

  it("TestBackendWriteback and TestConcurrentReadTx", function()
    local m = model.new()
    m:lock()
    m:create_bucket("key")
    m:put("key", "abc", "bar"); m:put("key", "def", "baz"); m:put("key", "overwrite", "1")
    m:unlock()
    m:lock(); m:put("key", "overwrite", "2"); m:unlock()
    local rtx = H.rlocked(m)
    assert.are.same({ { "abc" }, { "bar" } }, { rtx:range("key", "abc", nil, 0) })
    assert.are.same({ { "abc", "def" }, { "bar", "baz" } }, { rtx:range("key", "abc", "deg", 0) })
    assert.are.same({ { "abc" }, { "bar" } }, { rtx:range("key", "abc", "\255", 1) })
    assert.are.same({ { "abc", "def", "overwrite" }, { "bar", "baz", "2" } }, { rtx:range("key", "abc", "\255") })
    rtx:runlock()
    local ctx = m:concurrent_read_tx()
    assert.are.same({ "abc", "def", "overwrite" }, (ctx:range("key", "abc", "\255", 0)))
  end)

  it("views: BatchTx at once, ReadTx as of rlock, ConcurrentReadTx frozen", function()
    local m = model.new()
    m:lock(); m:create_bucket("b"); m:put("b", "k", "1"); m:unlock()
    local ctx = m:concurrent_read_tx()
    local rtx = H.rlocked(m)
    m:lock()
    m:put("b", "k", "2"); m:delete("b", "k"); m:put("b", "j", "3")
    assert.are.same({ "j" }, (m:range("b", "", "\255")))
    assert.are.equal("1", m:published():get("b", "k"))
    m:unlock()
    assert.are.equal("1", rtx:get("b", "k"))
    rtx:runlock()
    assert.has_error(function() rtx:get("b", "k") end, "backend: read tx is not locked")
    rtx:rlock()
    assert.is_nil(rtx:get("b", "k"))
    assert.are.equal("1", ctx:get("b", "k"))
    m:lock(); m:delete_bucket("b"); m:unlock()
    assert.are.equal("1", ctx:get("b", "k"))
    assert.are.same({}, (m:range("b", "", "\255")))
    assert.are.same({}, m:bucket_names())
  end)

  it("raises like the backend and leaves its data unchanged", function()
    local m = model.new { max_key_size = 511 }
    assert.has_error(function() m:put("b", "k", "v") end, "backend: batch tx is not locked")
    m:lock()
    m:create_bucket("b")
    local before = m:dump()
    assert.has_error(function() m:put("nope", "k", "v") end, "backend: bucket 'nope' does not exist")
    assert.has_error(function() m:put("b", "", "v") end, "backend: key must not be empty")
    assert.has_error(function() m:put("b", string.rep("x", 600), "v") end,
      "backend: key is too long (600 bytes; the limit is 511 bytes)")
    assert.has_error(function() m:put("b", 2, "v") end,
      "backend: bad argument #3 to 'put' (string expected, got number)")
    assert.has_error(function() m:put(2, "k", "v") end,
      "backend: bad argument #2 to 'put' (string expected, got number)")
    assert.has_error(function() m:lock() end, "backend: batch tx is already locked")
    assert.has_error(function() m:range("b", "a", "b", 1.5) end)
    assert.are.same(before, m:dump())
    assert.are.equal(1, m:pending())
    m:unlock()
  end)

  it("hash matches a hand-computed CRC", function()
    local m = model.new()
    m:lock(); m:create_bucket("b"); m:put("b", "k", "v"); m:create_bucket("a"); m:unlock()
    assert.are.equal(model.crc32c("abkv"), m:hash())
    assert.are.equal(model.crc32c("ab"), m:hash { b = { k = true } })
    assert.are.equal(0, model.new():hash())
  end)

  it("pending, commits and batch_limit", function()
    local m = model.new { batch_limit = 3 }
    m:lock(); m:create_bucket("b"); m:put("b", "1", "x"); m:unlock()
    assert.are.equal(2, m:pending())
    assert.is_nil(m:committed():get("b", "1"))
    m:lock(); m:put("b", "2", "x"); m:unlock()
    assert.are.equal(0, m:pending())
    assert.are.equal(1, m:commits())
    assert.are.equal("x", m:committed():get("b", "2"))
    m:force_commit()
    assert.are.equal(1, m:commits())
  end)
end)

-- ---------------------------------------------------------------------------
-- Random sequences against the backend

local have_backend, backend = pcall(require, "backend")

-- xorshift64: deterministic, independent of math.random
local function new_rng(seed)
  local s = (seed * 0x9E3779B97F4A7C15 + 0x2545F4914F6CDD1D) | 1
  local r = {}
  function r.next()
    s = s ~ (s << 13)
    s = s ~ (s >> 7)
    s = s ~ (s << 17)
    return s
  end
  function r.int(n) return (r.next() >> 1) % n + 1 end
  function r.chance(p) return r.int(1000000) <= p * 1000000 end
  function r.pick(t) return t[r.int(#t)] end
  -- weighted choice over { {name, weight}, ... }
  function r.choose(list)
    local total = 0
    for _, e in ipairs(list) do total = total + e[2] end
    local x = (r.next() >> 11) / (1 << 53) * total
    for _, e in ipairs(list) do
      x = x - e[2]
      if x < 0 then return e[1] end
    end
    return list[#list][1]
  end
  return r
end

local ALPHABET = { "a", "b", "\0", "\255" }
local BUCKETS = { "key", "lease", "b\0x", "\255" }
local LIMITS = { "nil", 0, -1, 1, 1, 2, 3, 5, 100 }
local HUGE_END = "\255\255\255\255\255"

local CONFIGS = {
  { name = "quiet (no background commits)", quiet = true,
    cfg = { batch_interval = 3600, batch_limit = 1000000000 } },
  { name = "busy (interval 1 ms, limit 3)", cfg = { batch_interval = 0.001, batch_limit = 3 } },
  { name = "small map (mmap_size 64 KiB, interval 5 ms, limit 100)",
    cfg = { batch_interval = 0.005, batch_limit = 100, mmap_size = 65536 } },
  { name = "no_fsync (interval 20 ms, limit 7)", cfg = { no_fsync = true, batch_interval = 0.02, batch_limit = 7 } },
}

local function config_of(seed)
  return CONFIGS[(seed - 1) % #CONFIGS + 1]
end

local MAX_KEY = have_backend and backend.max_key_size or 511

-- 1 to 3 bytes from ALPHABET; rarely a key of exactly the maximum length, and
-- (only when `for_write`) rarely one byte too long, which both sides must refuse
local function rand_key(r, for_write)
  local n = r.int(3)
  local t = {}
  for i = 1, n do t[i] = r.pick(ALPHABET) end
  local k = table.concat(t)
  local c = r.int(300)
  if c == 1 then
    return (k .. string.rep(r.pick(ALPHABET), MAX_KEY)):sub(1, MAX_KEY)
  elseif c == 2 and for_write then
    return (k .. string.rep(r.pick(ALPHABET), MAX_KEY + 1)):sub(1, MAX_KEY + 1)
  end
  return k
end

local function rand_value(r, i)
  local c = r.int(20)
  if c == 1 then return "" end
  if c == 2 then return string.rep(string.char(r.int(256) - 1), 3000 + r.int(3000)) end
  if c == 3 then return "\0v\255" .. i end
  return "v" .. i
end

local function rand_range(r)
  local key, stop
  local mode = r.int(10)
  if mode <= 3 then
    key = rand_key(r)
  elseif mode == 4 then
    key, stop = "", rand_key(r)
  elseif mode == 5 then
    key, stop = rand_key(r), HUGE_END
  elseif mode == 6 then
    key, stop = "", HUGE_END
  else
    key, stop = rand_key(r), rand_key(r)
  end
  local limit = r.pick(LIMITS)
  if limit == "nil" then limit = nil end
  return r.pick(BUCKETS), key, stop, limit
end

local function show_range(b, k, e, l)
  return fmt("(%s, %s, %s, %s)", quote(b), quote(k), e and quote(e) or "nil", tostring(l))
end

local function show_pairs(ks, vs)
  local out = {}
  for i = 1, #ks do
    local v = vs[i]
    if #v > 20 then v = v:sub(1, 8) .. fmt("...(%d bytes)", #v) end
    out[i] = quote(ks[i]) .. "=" .. quote(v)
  end
  return "{" .. table.concat(out, ", ") .. "}"
end

local function same_pairs(k1, v1, k2, v2)
  if type(k1) ~= "table" or type(v1) ~= "table" or #k1 ~= #k2 or #v1 ~= #v2 or #k1 ~= #v1 then return false end
  for i = 1, #k1 do
    if k1[i] ~= k2[i] or v1[i] ~= v2[i] then return false end
  end
  return true
end

local function run(seed, nops)
  local conf = config_of(seed)
  local r = new_rng(seed)
  local path = H.tmppath()
  local cfg = {}
  for k, v in pairs(conf.cfg) do cfg[k] = v end
  cfg.path = path

  local m = model.new { batch_limit = conf.quiet and math.maxinteger or cfg.batch_limit, max_key_size = MAX_KEY }
  local be = backend.open(cfg)
  local tx                      -- the BatchTx while locked, else nil
  local held = {}               -- { ctx = , view = , at = }
  local held_rtx                -- { rtx = , mrtx = , at = }: the shared ReadTx kept rlocked
  local snaps = {}              -- { snap = , view = , at = }
  local trace = {}
  local op_i, op_name = 0, "open"
  local others = {}             -- other backends to close on failure

  local function fail(msg)
    local lines = {}
    for i = math.max(1, #trace - 24), #trace do lines[#lines + 1] = "    " .. trace[i] end
    error(fmt("seed %d (BACKEND_SEED=%d, config %s), op %d (%s): %s\n  last ops:\n%s",
      seed, seed, conf.name, op_i, op_name, msg, table.concat(lines, "\n")), 0)
  end
  local function log(s) trace[#trace + 1] = fmt("#%d %s", op_i, s) end
  local function check(cond, msg, ...)
    if not cond then fail(fmt(msg, ...)) end
  end

  -- runs the same operation on the model and the backend; both raise or neither
  local function both(desc, fm, fb)
    local okm, em = pcall(fm)
    local okb, eb = pcall(fb)
    if okm ~= okb then
      fail(fmt("%s: model %s, backend %s", desc, okm and "succeeded" or ("raised " .. tostring(em)),
        okb and "succeeded" or ("raised " .. tostring(eb))))
    end
    if not okb then
      check(type(eb) == "string" and eb:find("^backend: ") ~= nil, "%s: error %q lacks 'backend: '", desc, tostring(eb))
      check(eb == em, "%s: backend raised %s, model raised %s", desc, quote(eb), quote(em))
    end
    return okb
  end

  local function cmp_range(who, reader, view, b, k, e, l)
    local ok, ks, vs = pcall(reader.range, reader, b, k, e, l)
    if not ok then fail(fmt("%s range%s raised %s", who, show_range(b, k, e, l), tostring(ks))) end
    local mk, mv = view:range(b, k, e, l)
    if not same_pairs(ks, vs, mk, mv) then
      fail(fmt("%s range%s = %s, model says %s", who, show_range(b, k, e, l),
        type(ks) == "table" and show_pairs(ks, vs) or tostring(ks), show_pairs(mk, mv)))
    end
  end

  local function cmp_get(who, reader, view, b, k)
    local ok, v = pcall(reader.get, reader, b, k)
    if not ok then fail(fmt("%s get(%s, %s) raised %s", who, quote(b), quote(k), tostring(v))) end
    local mv = view:get(b, k)
    check(v == mv, "%s get(%s, %s) = %s, model says %s", who, quote(b), quote(k),
      v and quote(v) or "nil", mv and quote(mv) or "nil")
  end

  -- every bucket, through for_each and through pairs
  local function cmp_full(who, reader, view)
    for _, b in ipairs(BUCKETS) do
      local ks, vs = {}, {}
      local ok, err = pcall(reader.for_each, reader, b, function(k, v) ks[#ks + 1] = k; vs[#vs + 1] = v end)
      if not ok then fail(fmt("%s for_each(%s) raised %s", who, quote(b), tostring(err))) end
      local mk, mv = {}, {}
      view:for_each(b, function(k, v) mk[#mk + 1] = k; mv[#mv + 1] = v end)
      if not same_pairs(ks, vs, mk, mv) then
        fail(fmt("%s for_each(%s) = %s, model says %s", who, quote(b), show_pairs(ks, vs), show_pairs(mk, mv)))
      end
      if r.chance(0.3) then
        local pk, pv = {}, {}
        for k, v in reader:pairs(b) do pk[#pk + 1] = k; pv[#pv + 1] = v end
        if not same_pairs(pk, pv, mk, mv) then
          fail(fmt("%s pairs(%s) = %s, model says %s", who, quote(b), show_pairs(pk, pv), show_pairs(mk, mv)))
        end
      end
    end
  end

  local function with_ctx(fn)
    local ctx = be:concurrent_read_tx()
    fn(ctx)
    ctx:close()
  end

  local function cmp_committed(n)
    local view = m:committed()
    for _ = 1, n do
      local b, k = r.pick(BUCKETS), rand_key(r)
      local v = be:_committed_get(b, k)
      local mv = view:get(b, k)
      check(v == mv, "_committed_get(%s, %s) = %s, model says %s", quote(b), quote(k),
        v and quote(v) or "nil", mv and quote(mv) or "nil")
    end
    local b = r.pick(BUCKETS)
    view:for_each(b, function(k, mv)
      local v = be:_committed_get(b, k)
      check(v == mv, "_committed_get(%s, %s) = %s, model says %s", quote(b), quote(k),
        v and quote(v) or "nil", quote(mv))
    end)
  end

  local function check_pending()
    if conf.quiet then
      local p = be:batch_tx():pending()
      check(p == m:pending(), "pending() = %d, model says %d", p, m:pending())
    end
  end

  local function check_commits()
    if conf.quiet then
      check(be:commits() == m:commits(), "commits() = %d, model says %d", be:commits(), m:commits())
    end
  end

  -- every held view must now raise `needle`; then close them
  local function drop_views(needle)
    for _, h in ipairs(held) do
      local ok, err = pcall(h.ctx.get, h.ctx, "key", "a")
      check(not ok and tostring(err):find(needle, 1, true), "ConcurrentReadTx from op %d: get gave %s, want %q",
        h.at, tostring(err), needle)
      h.ctx:close()
    end
    for _, s in ipairs(snaps) do
      local ok, err = pcall(s.snap.size, s.snap)
      check(not ok and tostring(err):find(needle, 1, true), "Snapshot from op %d: size gave %s, want %q",
        s.at, tostring(err), needle)
      s.snap:close()
    end
    held, snaps = {}, {}
  end

  local function release_rtx()
    if held_rtx then
      held_rtx.rtx:runlock()
      held_rtx = nil
    end
  end

  local function reopen(readonly_peek)
    release_rtx()
    be:close()
    drop_views("is closed")
    m:reopen()
    if readonly_peek then
      local ro = backend.open { path = path, readonly = true }
      others[#others + 1] = ro
      local ctx = ro:concurrent_read_tx()
      cmp_full("read-only ConcurrentReadTx", ctx, m:batch_view())
      ctx:close()
      local rtx = H.rlocked(ro)
      cmp_range("read-only ReadTx", rtx, m:batch_view(), rand_range(r))
      rtx:runlock()
      local ok, err = pcall(function()
        local t = ro:batch_tx()
        local ok2, e2 = pcall(function() t:lock(); t:put("key", "a", "x") end)
        pcall(t.unlock, t)
        if not ok2 then error(e2, 0) end
      end)
      check(not ok and tostring(err):find("read-only", 1, true), "read-only write gave %s", tostring(err))
      ro:close()
      others[#others] = nil
    end
    be = backend.open(cfg)
    with_ctx(function(ctx) cmp_full("reopened ConcurrentReadTx", ctx, m:batch_view()) end)
    check_pending()
  end

  local function snapshot_round_trip(s)
    local dest = H.tmppath("snap.db")
    local kind = r.int(3)
    local n
    if kind == 1 then
      n = s.snap:write_to(dest)
    elseif kind == 2 then
      local f = assert(io.open(dest, "wb"))
      n = s.snap:write_to(f)
      f:close()
    else
      local chunks = {}
      n = s.snap:write_to(function(c) chunks[#chunks + 1] = c end)
      H.write_file(dest, table.concat(chunks))
    end
    check(n == s.snap:size(), "write_to wrote %s bytes, size() is %s", tostring(n), tostring(s.snap:size()))
    check(H.file_size(dest) == n, "snapshot file has %s bytes, write_to said %s", tostring(H.file_size(dest)),
      tostring(n))
    s.snap:close()
    local nb = backend.open { path = dest, batch_interval = 3600 }
    others[#others + 1] = nb
    local ctx = nb:concurrent_read_tx()
    cmp_full(fmt("snapshot (op %d) ConcurrentReadTx", s.at), ctx, s.view)
    ctx:close()
    local h, mh = nb:hash(), s.view:hash(nil, backend.crc32c)
    check(h == mh, "hash of snapshot (op %d) = %08x, model says %08x", s.at, h, mh)
    nb:close()
    others[#others] = nil
    H.rm_rf(dest:match("^(.*)/[^/]+$"))
  end

  local LOCKED_OPS = {
    { "put", 30 }, { "seq_put", 5 }, { "delete", 12 }, { "create_bucket", 4 }, { "delete_bucket", 1.2 },
    { "batch_range", 8 }, { "batch_get", 4 }, { "batch_full", 0.5 },
    { "read_tx_range", 2 }, { "ctx_range", 2 }, { "hold_ctx", 1.5 }, { "held_ctx_range", 2 },
    { "hold_rtx", 0.5 }, { "commit", 1 }, { "unlock", 12 },
  }
  local UNLOCKED_OPS = {
    { "lock", 60 }, { "read_tx_range", 8 }, { "ctx_range", 5 }, { "hold_ctx", 4 }, { "held_ctx_range", 6 },
    { "hold_rtx", 1.5 },
    { "close_ctx", 3 }, { "force_commit", 4 }, { "hash", 2 }, { "snapshot", 1.2 }, { "write_snapshot", 1.2 },
    { "defrag", 0.7 }, { "reopen", 0.7 }, { "readonly_peek", 0.4 }, { "await_commit", conf.quiet and 0 or 1.5 },
  }

  local ok, err = pcall(function()
    for i = 1, nops do
      op_i = i
      local name = r.choose(tx and LOCKED_OPS or UNLOCKED_OPS)
      op_name = name
      if name == "put" or name == "seq_put" then
        local b, k, v = r.pick(BUCKETS), rand_key(r, true), rand_value(r, i)
        log(fmt("%s(%s, %s, %d bytes)", name, quote(b), quote(k), #v))
        both(name, function() m[name](m, b, k, v) end, function() tx[name](tx, b, k, v) end)
        if #k <= MAX_KEY and r.chance(0.2) then cmp_get("BatchTx", tx, m:batch_view(), b, k) end
        check_pending()
      elseif name == "delete" then
        local b, k = r.pick(BUCKETS), rand_key(r, true)
        if r.chance(0.5) then
          -- prefer an existing key
          local ks = m:range(b, "", HUGE_END)
          if #ks > 0 then k = r.pick(ks) end
        end
        log(fmt("delete(%s, %s)", quote(b), quote(k)))
        both(name, function() m:delete(b, k) end, function() tx:delete(b, k) end)
        if #k <= MAX_KEY and r.chance(0.3) then cmp_get("BatchTx", tx, m:batch_view(), b, k) end
        check_pending()
      elseif name == "create_bucket" or name == "delete_bucket" then
        local b = r.pick(BUCKETS)
        log(fmt("%s(%s)", name, quote(b)))
        both(name, function() m[name](m, b) end, function() tx[name](tx, b) end)
        check_pending()
      elseif name == "batch_range" then
        local b, k, e, l = rand_range(r)
        log("BatchTx range" .. show_range(b, k, e, l))
        cmp_range("BatchTx", tx, m:batch_view(), b, k, e, l)
      elseif name == "batch_get" then
        local b, k = r.pick(BUCKETS), rand_key(r)
        log(fmt("BatchTx get(%s, %s)", quote(b), quote(k)))
        cmp_get("BatchTx", tx, m:batch_view(), b, k)
      elseif name == "batch_full" then
        log("BatchTx full compare")
        cmp_full("BatchTx", tx, m:batch_view())
      elseif name == "read_tx_range" then
        local b, k, e, l = rand_range(r)
        local rtx, mrtx, who
        if held_rtx then
          rtx, mrtx = held_rtx.rtx, held_rtx.mrtx
          who = fmt("ReadTx rlocked since op %d", held_rtx.at)
        else
          rtx, mrtx, who = H.rlocked(be), H.rlocked(m), "ReadTx"
        end
        log(who .. " range" .. show_range(b, k, e, l))
        cmp_range(who, rtx, mrtx, b, k, e, l)
        if r.chance(0.3) then
          local gk = rand_key(r)
          cmp_get(who, rtx, mrtx, b, gk)
        end
        if r.chance(0.05) then cmp_full(who, rtx, mrtx.view) end
        if not held_rtx then rtx:runlock() end
      elseif name == "hold_rtx" then
        if held_rtx then
          log(fmt("runlock the ReadTx rlocked since op %d", held_rtx.at))
          cmp_full(fmt("ReadTx rlocked since op %d", held_rtx.at), held_rtx.rtx, held_rtx.mrtx.view)
          held_rtx.rtx:runlock()
          held_rtx = nil
        else
          log("rlock the shared ReadTx and keep it")
          held_rtx = { rtx = H.rlocked(be), mrtx = H.rlocked(m), at = i }
        end
      elseif name == "ctx_range" then
        local b, k, e, l = rand_range(r)
        log("new ConcurrentReadTx range" .. show_range(b, k, e, l))
        with_ctx(function(ctx)
          local view = m:concurrent_read_tx()
          cmp_range("ConcurrentReadTx", ctx, view, b, k, e, l)
          if r.chance(0.05) then cmp_full("ConcurrentReadTx", ctx, view) end
        end)
      elseif name == "hold_ctx" then
        if #held >= 6 then
          local h = table.remove(held, 1)
          cmp_full(fmt("ConcurrentReadTx held since op %d", h.at), h.ctx, h.view)
          h.ctx:close()
        end
        log("hold a ConcurrentReadTx")
        held[#held + 1] = { ctx = be:concurrent_read_tx(), view = m:concurrent_read_tx(), at = i }
      elseif name == "held_ctx_range" then
        if #held > 0 then
          local h = r.pick(held)
          local b, k, e, l = rand_range(r)
          log(fmt("held ConcurrentReadTx (op %d) range%s", h.at, show_range(b, k, e, l)))
          cmp_range(fmt("ConcurrentReadTx held since op %d", h.at), h.ctx, h.view, b, k, e, l)
        end
      elseif name == "close_ctx" then
        if #held > 0 then
          local h = table.remove(held, r.int(#held))
          log(fmt("close the ConcurrentReadTx of op %d", h.at))
          cmp_full(fmt("ConcurrentReadTx held since op %d", h.at), h.ctx, h.view)
          if r.chance(0.5) then h.ctx:runlock() else h.ctx:close() end
          local okc, errc = pcall(h.ctx.get, h.ctx, "key", "a")
          check(not okc and tostring(errc):find("is closed", 1, true), "closed ConcurrentReadTx: get gave %s",
            tostring(errc))
        end
      elseif name == "commit" then
        log("tx:commit()")
        tx:commit()
        m:commit()
        check_pending()
        check_commits()
        cmp_committed(5)
      elseif name == "unlock" then
        log("unlock")
        tx:unlock()
        m:unlock()
        tx = nil
        check_pending()
      elseif name == "lock" then
        log("lock")
        tx = be:batch_tx():lock()
        m:lock()
      elseif name == "force_commit" then
        log("force_commit")
        be:force_commit()
        m:force_commit()
        check(be:batch_tx():pending() == 0, "pending() = %d after force_commit", be:batch_tx():pending())
        check_commits()
        cmp_committed(10)
      elseif name == "await_commit" then
        log("wait for the background committer")
        check(H.wait_until(function() return be:batch_tx():pending() == 0 end, 10),
          "pending() still %d after 10 s (batch_interval %s)", be:batch_tx():pending(), tostring(cfg.batch_interval))
        m:force_commit()
        cmp_committed(10)
      elseif name == "hash" then
        local ignores
        if r.chance(0.3) then
          ignores = {}
          for _ = 1, 3 do
            local b = r.pick(BUCKETS)
            ignores[b] = ignores[b] or {}
            ignores[b][rand_key(r)] = true
          end
        end
        log("hash" .. (ignores and " (with ignores)" or ""))
        local h = be:hash(ignores)
        local mh = m:hash(ignores, backend.crc32c)
        check(h == mh, "hash() = %08x, model says %08x", h, mh)
        check_pending()
      elseif name == "snapshot" then
        if #snaps >= 2 then snapshot_round_trip(table.remove(snaps, 1)) end
        log("snapshot")
        snaps[#snaps + 1] = { snap = be:snapshot(), view = m:snapshot(), at = i }
        check_pending()
      elseif name == "write_snapshot" then
        if #snaps > 0 then
          local s = table.remove(snaps, r.int(#snaps))
          log(fmt("write the snapshot of op %d and open it", s.at))
          snapshot_round_trip(s)
        end
      elseif name == "defrag" then
        log("defrag")
        release_rtx()
        be:defrag()
        m:defrag()
        drop_views("invalidated")
        with_ctx(function(ctx) cmp_full("ConcurrentReadTx after defrag", ctx, m:batch_view()) end)
        check_pending()
        cmp_committed(10)
      elseif name == "reopen" then
        log("close and open again")
        reopen(false)
      elseif name == "readonly_peek" then
        log("close, open read-only and compare, open again")
        reopen(true)
      end
    end

    -- the end: everything agrees, through every reader, and after a reopen
    op_i, op_name = nops + 1, "final checks"
    if tx then tx:unlock(); m:unlock(); tx = nil end
    release_rtx()
    for _, h in ipairs(held) do
      cmp_full(fmt("ConcurrentReadTx held since op %d", h.at), h.ctx, h.view)
      h.ctx:close()
    end
    held = {}
    for _, s in ipairs(snaps) do snapshot_round_trip(s) end
    snaps = {}
    local t = be:batch_tx():lock()
    cmp_full("BatchTx", t, m:batch_view())
    t:unlock()
    local rtx = H.rlocked(be)
    cmp_full("ReadTx", rtx, m:published())
    rtx:runlock()
    with_ctx(function(ctx) cmp_full("ConcurrentReadTx", ctx, m:batch_view()) end)
    local h, mh = be:hash(), m:hash(nil, backend.crc32c)
    check(h == mh, "final hash() = %08x, model says %08x", h, mh)
    reopen(false)
    be:close()
  end)
  if not ok then
    for _, h in ipairs(held) do pcall(h.ctx.close, h.ctx) end
    for _, s in ipairs(snaps) do pcall(s.snap.close, s.snap) end
    if tx then pcall(tx.unlock, tx) end
    if held_rtx then pcall(held_rtx.rtx.runlock, held_rtx.rtx) end
    for _, o in ipairs(others) do pcall(o.close, o) end
    pcall(be.close, be)
    if type(err) == "string" and not err:find("^seed %d+") then
      err = fmt("seed %d (BACKEND_SEED=%d, config %s), op %d (%s): %s\n  last ops:\n    %s", seed, seed,
        conf.name, op_i, op_name, err, table.concat(trace, "\n    ", math.max(1, #trace - 24)))
    end
    error(err, 0)
  end
  H.rm_rf(path:match("^(.*)/[^/]+$"))
end

describe("backend against the model", function()
  if not have_backend then
    it("needs the C module", function()
      error("require 'backend' failed: " .. tostring(backend))
    end)
    return
  end
  teardown(H.cleanup)

  local nops = tonumber(os.getenv("BACKEND_OPS")) or 500
  local seeds = {}
  if os.getenv("BACKEND_SEED") then
    seeds[1] = assert(math.tointeger(tonumber(os.getenv("BACKEND_SEED"))), "BACKEND_SEED must be an integer")
  else
    local first = math.tointeger(tonumber(os.getenv("BACKEND_FIRST_SEED"))) or 1
    for s = first, first + (tonumber(os.getenv("BACKEND_SEEDS")) or 8) - 1 do seeds[#seeds + 1] = s end
  end
  for _, seed in ipairs(seeds) do
    it(fmt("seed %d, %s, %d ops", seed, config_of(seed).name, nops), function()
      run(seed, nops)
    end)
  end
end)
