-- Every error the API promises: the message, and that the data are unchanged after it.
local H = require "spec.helper"
local backend = require "backend"

local HOUR = 3600
local BUCKETS = { "test", "other", "nope", "new" }

-- everything a reader can see, plus the pending count
local function state(be)
  local ctx = be:concurrent_read_tx()
  local out = {}
  for _, b in ipairs(BUCKETS) do
    local ks, vs = H.all(ctx, b)
    out[b] = { keys = ks, vals = vs }
  end
  ctx:close()
  out.pending = be:stats().pending
  return out
end

local function fill(be)
  local tx = be:batch_tx():lock()
  tx:create_bucket("test")
  tx:put("test", "k1", "v1")
  tx:put("test", "k2", "v2")
  tx:unlock()
  be:force_commit()
  tx:lock()
  tx:create_bucket("other")
  tx:put("other", "x", "buffered")
  tx:unlock()
end

local TYPES = {
  { value = 1, name = "number" },
  { value = 1.5, name = "number" },
  { value = {}, name = "table" },
  { value = true, name = "boolean" },
  { value = print, name = "function" },
}

-- "bad argument #N to 'fname' (string expected, got T)"; returns N
local function bad_arg(err, fname, tname)
  local n, f, got = err:match("^backend: bad argument #(%d+) to '([%w_]+)' %(string expected, got ([%w ]+)%)$")
  assert(n, "unexpected message: " .. err)
  assert.are.equal(fname, f)
  if tname == "nil" then
    assert(got == "nil" or got == "no value", err)
  else
    assert.are.equal(tname, got)
  end
  return tonumber(n)
end

describe("errors", function()
  local be
  before_each(function()
    be = backend.open_tmp { batch_interval = HOUR, batch_limit = 10000 }
    fill(be)
  end)
  after_each(function()
    if be then
      pcall(function() be:batch_tx():unlock() end)
      pcall(be.close, be)
    end
    be = nil
  end)
  teardown(H.cleanup)

  describe("wrong argument types name the argument", function()
    it("put / seq_put: bucket, key, value are numbered in order", function()
      local before = state(be)
      local tx = be:batch_tx():lock()
      for _, fname in ipairs { "put", "seq_put" } do
        for _, t in ipairs(TYPES) do
          local nb = bad_arg(H.error_of(tx[fname], tx, t.value, "k", "v"), fname, t.name)
          local nk = bad_arg(H.error_of(tx[fname], tx, "test", t.value, "v"), fname, t.name)
          local nv = bad_arg(H.error_of(tx[fname], tx, "test", "k", t.value), fname, t.name)
          assert.is_true(nb == 1 or nb == 2, "bucket is argument #1 (or #2 counting self)")
          assert.are.equal(nb + 1, nk)
          assert.are.equal(nb + 2, nv)
        end
        bad_arg(H.error_of(tx[fname], tx, "test", nil, "v"), fname, "nil")
        bad_arg(H.error_of(tx[fname], tx, "test", "k", nil), fname, "nil")
        bad_arg(H.error_of(tx[fname], tx, "test", "k"), fname, "nil")
      end
      -- the documented example, verbatim (self is argument #1)
      assert.are.equal("backend: bad argument #2 to 'put' (string expected, got number)",
        H.error_of(tx.put, tx, 2, "k", "v"))
      assert.are.equal(before.pending, tx:pending())
      tx:unlock()
      assert.are.same(before, state(be))
    end)

    it("every other tx method", function()
      local before = state(be)
      local tx = be:batch_tx():lock()
      local ctx = be:concurrent_read_tx()
      local rtx = H.rlocked(be)
      for _, t in ipairs(TYPES) do
        bad_arg(H.error_of(tx.delete, tx, t.value, "k"), "delete", t.name)
        bad_arg(H.error_of(tx.delete, tx, "test", t.value), "delete", t.name)
        bad_arg(H.error_of(tx.create_bucket, tx, t.value), "create_bucket", t.name)
        bad_arg(H.error_of(tx.delete_bucket, tx, t.value), "delete_bucket", t.name)
        for _, r in ipairs { tx, ctx, rtx } do
          bad_arg(H.error_of(r.get, r, t.value, "k"), "get", t.name)
          bad_arg(H.error_of(r.get, r, "test", t.value), "get", t.name)
          bad_arg(H.error_of(r.range, r, t.value, "k"), "range", t.name)
          bad_arg(H.error_of(r.range, r, "test", t.value), "range", t.name)
          bad_arg(H.error_of(r.range, r, "test", "k", t.value), "range", t.name)
          bad_arg(H.error_of(r.for_each, r, t.value, function() end), "for_each", t.name)
          bad_arg(H.error_of(r.pairs, r, t.value), "pairs", t.name)
        end
      end
      for _, r in ipairs { tx, ctx, rtx } do
        H.raises("bad argument", r.for_each, r, "test", "not a function")
        H.raises("bad argument", r.for_each, r, "test")
        H.raises("bad argument", r.pairs, r, "test", 1)
        H.raises("bad argument", r.range, r, "test", "k1", "k9", "lots")
      end
      rtx:runlock()
      ctx:close()
      tx:unlock()
      assert.are.same(before, state(be))
    end)

    it("a non-integer limit raises", function()
      local tx = be:batch_tx():lock()
      H.raises("", tx.range, tx, "test", "k1", "k9", 1.5)
      tx:unlock()
      local ctx <close> = be:concurrent_read_tx()
      H.raises("", ctx.range, ctx, "test", "k1", "k9", 0.5)
      -- an integral float is an integer
      assert.are.same({ "k1" }, (ctx:range("test", "k1", "k9", 1.0)))
    end)

    it("backend.open, open_tmp and config fields", function()
      H.raises("", backend.open, 42)
      H.raises("", backend.open)
      H.raises("", backend.open, { path = 42 })
      H.raises("", backend.open_tmp, { batch_limit = "many" })
      H.raises("", backend.open_tmp, { batch_interval = "soon" })
      H.raises("", backend.open_tmp, { mmap_size = {} })
      H.raises("", backend.open_tmp, { logger = 42 })
      H.raises("", backend.crc32c, false)
      H.raises("", backend.crc32c, "abc", "not a number")
    end)
  end)

  it("empty keys and bucket names: 'must not be empty'", function()
    local before = state(be)
    local tx = be:batch_tx():lock()
    H.raises("must not be empty", tx.put, tx, "", "k", "v")
    H.raises("must not be empty", tx.put, tx, "test", "", "v")
    H.raises("must not be empty", tx.seq_put, tx, "test", "", "v")
    H.raises("must not be empty", tx.delete, tx, "test", "")
    H.raises("must not be empty", tx.delete, tx, "", "k1")
    H.raises("must not be empty", tx.create_bucket, tx, "")
    H.raises("must not be empty", tx.delete_bucket, tx, "")
    H.raises("must not be empty", tx.get, tx, "test", "")
    H.raises("must not be empty", tx.range, tx, "test", "")
    H.raises("must not be empty", tx.range, tx, "test", "", nil, 5)
    H.raises("must not be empty", tx.range, tx, "", "k1", "k9")
    assert.are.equal(before.pending, tx:pending())
    -- "" is a valid start when an end key is given, and a valid value
    assert.are.same({ "k1", "k2" }, (tx:range("test", "", "k9")))
    tx:put("test", "empty", "")
    assert.are.equal("", tx:get("test", "empty"))
    tx:delete("test", "empty")
    tx:unlock()
    local ctx <close> = be:concurrent_read_tx()
    H.raises("must not be empty", ctx.get, ctx, "test", "")
    H.raises("must not be empty", ctx.range, ctx, "test", "")
    H.raises("must not be empty", ctx.range, ctx, "", "a", "b")
    before.pending = before.pending + 2
    assert.are.same(before, state(be))
  end)

  it("keys longer than backend.max_key_size", function()
    local max = backend.max_key_size
    assert.is_number(max)
    assert.is_true(max >= 100)
    local before = state(be)
    local long = string.rep("x", max + 89)
    local msg = string.format("key is too long (%d bytes; the limit is %d bytes)", #long, max)
    if max == 511 then
      assert.are.equal("key is too long (600 bytes; the limit is 511 bytes)", msg)
    end
    local tx = be:batch_tx():lock()
    assert.are.equal("backend: " .. msg, H.error_of(tx.put, tx, "test", long, "v"))
    H.raises(msg, tx.seq_put, tx, "test", long, "v")
    H.raises(msg, tx.delete, tx, "test", long)
    H.raises("too long", tx.create_bucket, tx, long)
    assert.are.equal(before.pending, tx:pending())
    -- reading a key that cannot exist: nil or an error, never a crash
    local ok, v = pcall(tx.get, tx, "test", long)
    assert.is_true((ok and v == nil) or (not ok and tostring(v):find("^backend: ") ~= nil), tostring(v))
    -- exactly max bytes is fine, everywhere
    local edge = string.rep("y", max)
    tx:put("test", edge, "edge")
    assert.are.equal("edge", tx:get("test", edge))
    tx:unlock()
    be:force_commit()
    assert.are.equal("edge", be:_committed_get("test", edge))
    local ctx <close> = be:concurrent_read_tx()
    assert.are.same({ edge }, (ctx:range("test", edge, nil)))
    tx:lock()
    tx:delete("test", edge)
    tx:unlock()
    be:force_commit()
    local after = state(be)
    before.pending = 0
    assert.are.same(before.test, after.test)
  end)

  it("writes to a missing bucket: bucket 'name' does not exist", function()
    local before = state(be)
    local tx = be:batch_tx():lock()
    assert.are.equal("backend: bucket 'nope' does not exist", H.error_of(tx.put, tx, "nope", "k", "v"))
    H.raises("bucket 'nope' does not exist", tx.seq_put, tx, "nope", "k", "v")
    H.raises("bucket 'nope' does not exist", tx.delete, tx, "nope", "k")
    assert.are.equal(before.pending, tx:pending())
    -- reads of it are empty, and deleting a missing bucket is not an error (v3.5)
    assert.are.same({}, (tx:range("nope", "", "\255")))
    tx:unlock()
    assert.are.same(before, state(be))
    be:force_commit()
    assert.is_nil(be:_committed_get("nope", "k"))
  end)

  it("the BatchTx must be locked: 'batch tx is not locked'", function()
    local before = state(be)
    local tx = be:batch_tx()
    H.raises("batch tx is not locked", tx.put, tx, "test", "k1", "X")
    H.raises("batch tx is not locked", tx.seq_put, tx, "test", "k9", "X")
    H.raises("batch tx is not locked", tx.delete, tx, "test", "k1")
    H.raises("batch tx is not locked", tx.create_bucket, tx, "new")
    H.raises("batch tx is not locked", tx.delete_bucket, tx, "test")
    H.raises("batch tx is not locked", tx.range, tx, "test", "k1")
    H.raises("batch tx is not locked", tx.range, tx, "test", "", "\255", 0)
    H.raises("batch tx is not locked", tx.get, tx, "test", "k1")
    H.raises("batch tx is not locked", tx.for_each, tx, "test", function() end)
    H.raises("batch tx is not locked", tx.pairs, tx, "test")
    assert.are.same(before, state(be))
    -- a pairs iterator made under the lock raises once the lock is gone
    tx:lock()
    local it = tx:pairs("test")
    tx:unlock()
    H.raises("batch tx is not locked", it)
  end)

  it("locking twice: 'already locked', and the lock is kept", function()
    local before = state(be)
    local tx = be:batch_tx():lock()
    H.raises("already locked", tx.lock, tx)
    H.raises("already locked", function() be:batch_tx():lock() end)
    tx:put("test", "k3", "v3")         -- still locked
    tx:unlock()
    H.raises("batch tx is not locked", tx.put, tx, "test", "k4", "v4")
    local after = state(be)
    assert.are.same({ "k1", "k2", "k3" }, after.test.keys)
    before.test = after.test
    before.pending = before.pending + 1
    assert.are.same(before, after)
  end)

  it("the shared ReadTx must be rlocked: 'read tx is not locked'", function()
    local rtx = be:read_tx()
    H.raises("read tx is not locked", rtx.range, rtx, "test", "k1")
    H.raises("read tx is not locked", rtx.get, rtx, "test", "k1")
    H.raises("read tx is not locked", rtx.for_each, rtx, "test", function() end)
    H.raises("read tx is not locked", rtx.pairs, rtx, "test")
    rtx:rlock()
    assert.are.equal("v1", rtx:get("test", "k1"))
    rtx:runlock()
    H.raises("read tx is not locked", rtx.get, rtx, "test", "k1")
    rtx:lock()     -- same as rlock
    assert.are.equal("v1", rtx:get("test", "k1"))
    rtx:unlock()
    H.raises("read tx is not locked", rtx.get, rtx, "test", "k1")
  end)

  describe("closed objects: 'is closed'", function()
    it("a closed ConcurrentReadTx", function()
      local ctx = be:concurrent_read_tx()
      assert.are.equal("v1", ctx:get("test", "k1"))
      ctx:runlock()
      assert.are.equal("backend: concurrent read tx is closed", H.error_of(ctx.get, ctx, "test", "k1"))
      H.raises("is closed", ctx.range, ctx, "test", "", "\255")
      H.raises("is closed", ctx.for_each, ctx, "test", function() end)
      H.raises("is closed", ctx.pairs, ctx, "test")
      ctx:close()   -- closing again is fine
      ctx:runlock()
      local ctx2 = be:concurrent_read_tx()
      local it = ctx2:pairs("test")
      assert.are.equal("k1", it())
      ctx2:close()
      H.raises("is closed", it)
    end)

    it("a closed Snapshot", function()
      local snap = be:snapshot()
      snap:close()
      H.raises("is closed", snap.write_to, snap, H.tmppath())
      H.raises("is closed", snap.size, snap)
      snap:close()
    end)

    it("a closed backend", function()
      local path = be:path()
      be:close()
      assert.are.equal("backend: backend is closed", H.error_of(be.batch_tx, be))
      for _, m in ipairs { "read_tx", "concurrent_read_tx", "snapshot", "hash", "size", "size_in_use",
        "open_read_tx_n", "defrag", "force_commit" } do
        H.raises("is closed", be[m], be)
      end
      H.raises("is closed", be.update, be, function() end)
      H.raises("is closed", be.view, be, function() end)
      H.raises("is closed", be._committed_get, be, "test", "k1")
      be:close()   -- idempotent
      -- open_tmp removed the files
      assert.is_false(H.exists(path))
      be = nil
    end)
  end)

  describe("config", function()
    it("unknown config field 'foo'", function()
      assert.are.equal("backend: unknown config field 'foo'", H.error_of(backend.open_tmp, { foo = 1 }))
      local path = H.tmppath()
      H.raises("unknown config field 'batch_intervall'", backend.open, { path = path, batch_intervall = 1 })
      assert.is_false(H.exists(path), "nothing is created")
      -- a fresh default config is accepted as it is
      local cfg = backend.default_config()
      cfg.path = path
      local b2 = backend.open(cfg)
      b2:close()
    end)

    it("default_config() is a fresh table with etcd's defaults", function()
      local a, b = backend.default_config(), backend.default_config()
      assert.are_not.equal(a, b)
      assert.are.equal(0.1, a.batch_interval)
      assert.are.equal(10000, a.batch_limit)
      assert.are.equal(256 * 1024 * 1024, a.max_buffered_bytes)
      a.batch_limit = 1
      assert.are.equal(10000, backend.default_config().batch_limit)
      assert.is_string(backend.version)
    end)
  end)

  describe("read-only backends", function()
    it("see committed data only; every write raises 'read-only'; nothing changes", function()
      local path = H.tmppath()
      local w = backend.open { path = path, batch_interval = HOUR }
      local tx = w:batch_tx():lock()
      tx:create_bucket("test")
      tx:put("test", "a", "1")
      tx:put("test", "b", "2")
      tx:unlock()
      w:close()

      local r = backend.open { path = path, readonly = true }
      finally(function() pcall(r.close, r) end)
      local ctx = r:concurrent_read_tx()
      assert.are.same({ "a", "b" }, (ctx:range("test", "", "\255")))
      ctx:close()
      local hash = r:hash()
      local rtx = H.rlocked(r)
      assert.are.equal("2", rtx:get("test", "b"))
      rtx:runlock()

      local function write(fn)
        local err = H.error_of(function()
          local t = r:batch_tx()
          local ok, e = pcall(function() t:lock(); fn(t) end)
          pcall(t.unlock, t)
          if not ok then error(e, 0) end
        end)
        assert.is_truthy(err:find("^backend: "), err)
        assert.is_truthy(err:find("read-only", 1, true), err)
      end
      write(function(t) t:put("test", "a", "X") end)
      write(function(t) t:seq_put("test", "z", "X") end)
      write(function(t) t:delete("test", "a") end)
      write(function(t) t:create_bucket("new") end)
      write(function(t) t:delete_bucket("test") end)
      H.raises("read-only", r.defrag, r)
      assert.are.equal(hash, r:hash())
      r:close()

      local w2 = backend.open { path = path }
      local c2 = w2:concurrent_read_tx()
      assert.are.same({ { "a", "b" }, { "1", "2" } }, { c2:range("test", "", "\255") })
      assert.is_false(c2:get("new", "x") ~= nil)
      c2:close()
      w2:close()
    end)

    it("a missing file cannot be opened read-only, and is not created", function()
      local path = H.tmppath()
      H.raises("", backend.open, { path = path, readonly = true })
      assert.is_false(H.exists(path))
    end)
  end)

  describe("opening a path twice in one process: 'already open in this process'", function()
    it("read-write and read-only, under any spelling of the path", function()
      local path = be:path()
      local dir, base = path:match("^(.*)/([^/]+)$")
      H.raises("already open in this process", backend.open, path)
      H.raises("already open in this process", backend.open, { path = path })
      H.raises("already open in this process", backend.open, { path = path, readonly = true })
      H.raises("already open in this process", backend.open, { path = dir .. "/./" .. base })
      H.raises("already open in this process", backend.open, { path = dir .. "//" .. base })
      local link = H.tmpdir() .. "/link"
      os.execute("ln -s " .. H.q(path) .. " " .. H.q(link))
      H.raises("already open in this process", backend.open, { path = link })
      -- the first handle still works
      local tx = be:batch_tx():lock()
      tx:put("test", "k3", "v3")
      tx:unlock()
      be:force_commit()
      assert.are.equal("v3", be:_committed_get("test", "k3"))
    end)

    it("works again once closed", function()
      local path = H.tmppath()
      local a = backend.open(path)
      a:close()
      local b = backend.open(path)
      b:close()
    end)
  end)

  describe("files that are not ours", function()
    it("a text file: 'is not a backend database', and the file is untouched", function()
      local path = H.tmppath("notes.txt")
      local text = string.rep("hello, this is not a database\n", 300)
      H.write_file(path, text)
      H.raises("is not a backend database", backend.open, path)
      H.raises("is not a backend database", backend.open, { path = path, readonly = true })
      assert.are.equal(text, H.read_file(path))
    end)

    it("an etcd (bbolt) file: says 'bbolt file', and the file is untouched", function()
      local src = H.fixture("tiny.db")
      local path = H.tmppath("db")
      local data = H.read_file(src)
      H.write_file(path, data)
      H.raises("bbolt file", backend.open, path)
      H.raises("bbolt file", backend.open, { path = path, readonly = true })
      assert.are.equal(data, H.read_file(path))
    end)
  end)

  describe("defrag keeps read views and snapshots working", function()
    it("ConcurrentReadTx, a pairs iterator and Snapshot read what they saw; data kept", function()
      local before = state(be)
      local ctx = be:concurrent_read_tx()
      local snap = be:snapshot()
      local it = ctx:pairs("test")
      local seen = ctx:range("test", "", "\255")
      local size = snap:size()
      local want = be:hash()
      be:update(function(tx) tx:put("test", "k1", "after defrag") end)
      local r = be:defrag()
      assert.is_true(r.size_after > 0 and r.seconds >= 0 and r.pause_seconds >= 0)
      assert.are.same(seen, ctx:range("test", "", "\255"))
      assert.are.equal("v1", ctx:get("test", "k1"))
      assert.is_not_nil(it())
      assert.are.equal(size, snap:size())
      local copy = H.tmppath()
      snap:write_to(copy)
      local sb <close> = backend.open { path = copy, readonly = true }
      assert.are.equal(want, sb:hash())
      ctx:close()
      snap:close()
      be:update(function(tx) tx:put("test", "k1", "v1") end)
      local after = state(be)
      before.pending, after.pending = 0, 0
      assert.are.same(before, after)
      -- new ones work
      local c2 <close> = be:concurrent_read_tx()
      assert.are.equal("buffered", c2:get("other", "x"))
    end)
  end)

  describe("errors raised by callbacks propagate unchanged", function()
    it("for_each stops at the error and the tx stays usable", function()
      local tx = be:batch_tx():lock()
      local e = {}
      local calls = 0
      local ok, err = pcall(tx.for_each, tx, "test", function() calls = calls + 1; error(e) end)
      assert.is_false(ok)
      assert.are.equal(e, err)
      assert.are.equal(1, calls)
      local ok2, err2 = pcall(tx.for_each, tx, "test", function() error("boom") end)
      assert.is_false(ok2)
      assert.is_truthy(tostring(err2):find("boom", 1, true))
      tx:put("test", "k3", "v3")
      tx:unlock()
      local ctx <close> = be:concurrent_read_tx()
      local ok3, err3 = pcall(ctx.for_each, ctx, "test", function(k) if k == "k2" then error(e) end end)
      assert.is_false(ok3)
      assert.are.equal(e, err3)
      assert.are.equal("v3", ctx:get("test", "k3"))
    end)
  end)
end)
