-- Object lifecycles: <close>, __gc, tostring, children of a closed backend,
-- update/view, read views across later writes, snapshots, stats, module functions.
local H = require "spec.helper"
local backend = require "backend"
local model = require "backend.tools.model"

local HOUR = 3600

local function section(be, fn)
  local tx = be:batch_tx():lock()
  fn(tx)
  tx:unlock()
end

-- { bucket = { keys, vals } } through any reader
local function dump(r, buckets)
  local out = {}
  for _, b in ipairs(buckets) do out[b] = { H.all(r, b) } end
  return out
end

local function closed_str(obj)
  return tostring(obj):find("(closed)", 1, true) ~= nil
end

describe("lifecycle", function()
  local be
  before_each(function()
    be = backend.open_tmp { batch_interval = HOUR, batch_limit = 10000 }
    section(be, function(tx)
      tx:create_bucket("test")
      tx:put("test", "a", "1")
      tx:put("test", "b", "2")
    end)
  end)
  after_each(function()
    if be then pcall(be.close, be) end
    be = nil
  end)
  teardown(H.cleanup)

  describe("<close>", function()
    it("closes a Backend (commits, releases the path)", function()
      local path = H.tmppath()
      local keep
      do
        local b <close> = backend.open(path)
        keep = b
        section(b, function(tx) tx:create_bucket("t"); tx:put("t", "k", "v") end)
      end
      assert.is_true(closed_str(keep))
      H.raises("is closed", keep.batch_tx, keep)
      local b2 <close> = backend.open(path)
      assert.are.equal("v", b2:_committed_get("t", "k"))
    end)

    it("closes a ConcurrentReadTx and a Snapshot", function()
      local c, s
      do
        local ctx <close> = be:concurrent_read_tx()
        local snap <close> = be:snapshot()
        c, s = ctx, snap
        assert.are.equal("1", ctx:get("test", "a"))
        assert.is_false(closed_str(ctx))
        assert.is_false(closed_str(snap))
      end
      assert.is_true(closed_str(c))
      assert.is_true(closed_str(s))
      H.raises("is closed", c.get, c, "test", "a")
      H.raises("is closed", s.size, s)
    end)

    it("unlocks a BatchTx; rolls its section back when the block raises", function()
      do
        local w <close> = be:batch_tx():lock()
        w:put("test", "c", "3")
      end
      local rtx = H.rlocked(be)
      assert.are.equal("3", rtx:get("test", "c"))
      rtx:runlock()
      local ok, err = pcall(function()
        local w <close> = be:batch_tx():lock()
        w:put("test", "d", "4")
        error("boom")
      end)
      assert.is_false(ok)
      assert.is_truthy(tostring(err):find("boom", 1, true))
      local tx = be:batch_tx():lock()   -- would raise "already locked" if <close> had not ended it
      assert.is_nil(tx:get("test", "d"))
      tx:unlock()
    end)
  end)

  describe("__gc", function()
    it("collects an unreachable Backend: closed, committed, path free again", function()
      local path = H.tmppath()
      local weak = setmetatable({}, { __mode = "v" })
      local function scope()
        local b = backend.open { path = path, batch_interval = HOUR }
        local tx = b:batch_tx():lock()
        tx:create_bucket("t")
        tx:put("t", "k", "v")
        tx:unlock()
        local ctx = b:concurrent_read_tx()
        local snap = b:snapshot()
        weak[1], weak[2], weak[3], weak[4] = b, tx, ctx, snap
      end
      scope()
      collectgarbage()
      collectgarbage()
      assert.is_nil(weak[1], "backend still reachable")
      local b2 = backend.open(path)
      finally(function() b2:close() end)
      assert.are.equal("v", b2:_committed_get("t", "k"))
    end)

    it("collects unreachable ConcurrentReadTx and Snapshot objects", function()
      local base = be:open_read_tx_n()
      local function scope()
        for _ = 1, 20 do
          local ctx = be:concurrent_read_tx()
          assert.are.equal("1", ctx:get("test", "a"))
        end
        for _ = 1, 5 do
          local snap = be:snapshot()
          assert.is_true(snap:size() > 0)
        end
      end
      scope()
      collectgarbage()
      collectgarbage()
      assert.is_true(H.wait_until(function() return be:open_read_tx_n() <= base end, 10),
        string.format("open_read_tx_n = %d, was %d", be:open_read_tx_n(), base))
      be:defrag()
      section(be, function(tx) tx:put("test", "z", "26") end)
      be:force_commit()
      assert.are.equal("26", be:_committed_get("test", "z"))
    end)

    it("a ConcurrentReadTx has no finalizer: left open, its group closes it once every tx of the group is collected",
      function()
      assert.is_nil(getmetatable(be:concurrent_read_tx()).__gc)
      collectgarbage(); collectgarbage()
      local base = be:open_read_tx_n()
      local kept = {}
      local function scope()
        for i = 1, 200 do   -- groups of 16: views 1-16, ..., 145-160, ..., 193-200
          local ctx = be:concurrent_read_tx()
          if i == 10 or i == 150 then kept[#kept + 1] = ctx end
        end
      end
      scope()
      collectgarbage(); collectgarbage()
      -- the groups of the two kept txs stay, with all their open views
      assert.are.equal(base + 32, be:open_read_tx_n())
      section(be, function(tx) tx:put("test", "a", "changed") end)
      be:force_commit()
      for _, ctx in ipairs(kept) do assert.are.equal("1", ctx:get("test", "a")) end
      kept[1]:close()
      collectgarbage(); collectgarbage()
      assert.are.equal(base + 31, be:open_read_tx_n())
      kept = nil -- luacheck: ignore 311
      collectgarbage(); collectgarbage()
      assert.are.equal(base, be:open_read_tx_n())
      section(be, function(tx) tx:put("test", "a", "1") end)
    end)

    it("a finalizer that reaches a ConcurrentReadTx after its group closed it finds it closed", function()
      collectgarbage(); collectgarbage()
      local base = be:open_read_tx_n()
      local seen = {}
      do   -- the owner's finalizer is set before the tx's group exists: the group's runs first
        local owner = setmetatable({}, { __gc = function(o)
          seen[#seen + 1] = tostring(o.crt)
          seen[#seen + 1] = select(2, pcall(o.crt.get, o.crt, "test", "a"))
          o.crt:close()
          seen.crt = o.crt   -- resurrected for good
        end })
        owner.crt = be:concurrent_read_tx()
      end
      collectgarbage(); collectgarbage()
      assert.are.equal(base, be:open_read_tx_n())
      assert.are.equal("backend.ConcurrentReadTx (closed)", seen[1])
      assert.matches("concurrent read tx is closed", seen[2], 1, true)
      -- the views handed out next are not the closed one's
      section(be, function(tx) tx:put("test", "a", "changed") end)
      local c1, c2 = be:concurrent_read_tx(), be:concurrent_read_tx()
      H.raises("concurrent read tx is closed", seen.crt.get, seen.crt, "test", "a")
      seen.crt:close()
      c1:close()
      assert.are.equal("changed", c2:get("test", "a"))
      c2:close()
      assert.are.equal(base, be:open_read_tx_n())
      section(be, function(tx) tx:put("test", "a", "1") end)
    end)

    it("many short-lived read txs do not exhaust reader slots", function()
      local b = backend.open_tmp { max_readers = 16 }
      finally(function() b:close() end)
      for i = 1, 200 do
        local ctx = b:concurrent_read_tx()
        if i % 2 == 0 then ctx:close() end
        if i % 4 == 0 then collectgarbage() end
      end
      collectgarbage(); collectgarbage()
      local c <close> = b:concurrent_read_tx()
      assert.is_nil(c:get("t", "k"))
    end)
  end)

  describe("a closed backend's children raise 'is closed' and never crash", function()
    it("BatchTx, ReadTx, ConcurrentReadTx, Snapshot, iterators", function()
      local tx = be:batch_tx()
      local rtx = be:read_tx()
      local ctx = be:concurrent_read_tx()
      local snap = be:snapshot()
      local it = ctx:pairs("test")
      assert.are.equal("a", it())
      be:close()
      assert.is_true(closed_str(be))
      H.raises("is closed", tx.lock, tx)
      H.raises("is closed", tx.put, tx, "test", "x", "y")
      H.raises("is closed", tx.range, tx, "test", "a")
      H.raises("is closed", tx.get, tx, "test", "a")
      H.raises("is closed", tx.commit, tx)
      H.raises("is closed", rtx.rlock, rtx)
      H.raises("is closed", rtx.range, rtx, "test", "a")
      H.raises("is closed", ctx.get, ctx, "test", "a")
      H.raises("is closed", ctx.range, ctx, "test", "", "\255")
      H.raises("is closed", ctx.for_each, ctx, "test", function() end)
      H.raises("is closed", it)
      H.raises("is closed", snap.write_to, snap, H.tmppath())
      H.raises("is closed", snap.size, snap)
      for _, o in ipairs { tx, rtx, ctx, snap } do
        assert.is_true(closed_str(o), tostring(o))
      end
      -- closing children after the parent is fine
      ctx:close()
      ctx:runlock()
      snap:close()
      pcall(tx.unlock, tx)
      pcall(tx.pending, tx)
      be:close()
      collectgarbage(); collectgarbage()
    end)

    it("closing while the BatchTx is locked and while iterating", function()
      local path = be:path()
      local tx = be:batch_tx():lock()
      tx:put("test", "c", "3")
      local it = tx:pairs("test")
      assert.are.equal("a", it())
      local ok = pcall(be.close, be)
      if not ok then
        -- refusing is acceptable; the backend must then still work
        assert.are.equal("b", it())
        tx:unlock()
        be:close()
      end
      assert.is_true(closed_str(be))
      assert.is_false(pcall(it))
      assert.is_false(pcall(tx.put, tx, "test", "d", "4"))
      pcall(tx.unlock, tx)
      assert.is_false(H.exists(path))
      collectgarbage(); collectgarbage()
    end)

    it("the children of a backend closed by __gc", function()
      local ctx, tx
      local function scope()
        local b = backend.open_tmp()
        ctx = b:concurrent_read_tx()
        tx = b:batch_tx()
      end
      scope()
      collectgarbage(); collectgarbage()
      -- the children keep their backend alive, or report it closed: never crash
      local ok, err = pcall(ctx.get, ctx, "t", "k")
      assert.is_true(ok or tostring(err):find("is closed", 1, true) ~= nil, tostring(err))
      pcall(tx.lock, tx)
      pcall(tx.unlock, tx)
      ctx:close()
      ctx, tx = nil, nil -- luacheck: ignore 311
      collectgarbage(); collectgarbage()
    end)
  end)

  describe("update and view", function()
    it("update(fn) locks, calls fn(tx), unlocks", function()
      be:update(function(tx)
        tx:put("test", "c", "3")
        assert.are.equal("3", tx:get("test", "c"))
        H.raises("already locked", tx.lock, tx)
      end)
      local rtx = H.rlocked(be)
      assert.are.equal("3", rtx:get("test", "c"))
      rtx:runlock()
      be:batch_tx():lock():unlock()
    end)

    it("update(fn) unlocks when fn raises, and re-raises the same error", function()
      local e = { "boom" }
      local ok, err = pcall(be.update, be, function(tx)
        tx:put("test", "c", "3")
        error(e)
      end)
      assert.is_false(ok)
      assert.are.equal(e, err)
      local ok2, err2 = pcall(be.update, be, function() error("text error") end)
      assert.is_false(ok2)
      assert.is_truthy(tostring(err2):find("text error", 1, true))
      local tx = be:batch_tx():lock()    -- not left locked
      tx:put("test", "d", "4")
      tx:unlock()
      be:force_commit()
      assert.are.equal("4", be:_committed_get("test", "d"))
    end)

    it("view(fn) gives a consistent read tx and closes it, even on error", function()
      local base = be:open_read_tx_n()
      local seen
      be:view(function(r)
        seen = r
        assert.are.equal("1", r:get("test", "a"))
        section(be, function(tx) tx:put("test", "a", "changed") end)
        assert.are.equal("1", r:get("test", "a"))
      end)
      H.raises("is closed", seen.get, seen, "test", "a")
      local e = {}
      local ok, err = pcall(be.view, be, function(r) seen = r; error(e) end)
      assert.is_false(ok)
      assert.are.equal(e, err)
      H.raises("is closed", seen.get, seen, "test", "a")
      assert.is_true(H.wait_until(function() return be:open_read_tx_n() <= base end, 10))
    end)
  end)

  describe("read views", function()
    it("a ConcurrentReadTx stays as of its creation across writes, commits, deletes, defrag-free", function()
      local b = backend.open_tmp { batch_interval = 0.001, batch_limit = 2 }
      finally(function() b:close() end)
      section(b, function(tx)
        tx:create_bucket("key"); tx:create_bucket("lease")
        for i = 1, 50 do tx:put("key", string.format("%03d", i), "v" .. i) end
        tx:put("lease", "l1", "x")
      end)
      b:force_commit()
      section(b, function(tx) tx:put("key", "051", "buffered"); tx:delete("key", "001") end)
      local ctx = b:concurrent_read_tx()
      local want = dump(ctx, { "key", "lease", "gone" })
      assert.are.equal(50, #want.key[1])
      assert.are.equal("buffered", ctx:get("key", "051"))
      assert.is_nil(ctx:get("key", "001"))
      local rng = 12345
      for round = 1, 30 do
        section(b, function(tx)
          for _ = 1, 20 do
            rng = (rng * 1103515245 + 12345) % 2147483648
            local k = string.format("%03d", rng % 80)
            if rng % 3 == 0 then tx:delete("key", k) else tx:put("key", k, "r" .. round) end
          end
          if round % 7 == 0 then tx:delete_bucket("lease") end
          if round % 7 == 3 then tx:create_bucket("lease"); tx:put("lease", "l" .. round, "y") end
          if round == 10 then tx:create_bucket("gone"); tx:put("gone", "g", "1") end
        end)
        if round % 5 == 0 then b:force_commit() end
        assert.are.same(want, dump(ctx, { "key", "lease", "gone" }), "round " .. round)
        local k, v = ctx:range("key", "010", "020", 3)
        assert.are.same({ "010", "011", "012" }, k)
        assert.are.same({ "v10", "v11", "v12" }, v)
      end
      -- the background committer ran meanwhile
      assert.is_true(H.wait_until(function() return b:batch_tx():pending() == 0 end, 10))
      assert.are.same(want, dump(ctx, { "key", "lease", "gone" }))
      ctx:close()
      H.raises("is closed", ctx.get, ctx, "key", "002")
    end)

    it("the shared ReadTx sees writes as of rlock()", function()
      local rtx = H.rlocked(be)
      assert.are.equal("1", rtx:get("test", "a"))
      section(be, function(tx) tx:put("test", "a", "new"); tx:put("test", "c", "3") end)
      be:force_commit()
      assert.are.equal("1", rtx:get("test", "a"))
      assert.is_nil(rtx:get("test", "c"))
      rtx:runlock()
      rtx:rlock()
      assert.are.equal("new", rtx:get("test", "a"))
      assert.are.same({ "a", "b", "c" }, (rtx:range("test", "", "\255")))
      rtx:runlock()
    end)

    it("readers do not see a section's writes before unlock (the BatchTx does)", function()
      local tx = be:batch_tx():lock()
      tx:put("test", "c", "3")
      tx:delete("test", "a")
      assert.are.equal("3", tx:get("test", "c"))
      assert.is_nil(tx:get("test", "a"))
      local ctx = be:concurrent_read_tx()
      assert.is_nil(ctx:get("test", "c"))
      assert.are.equal("1", ctx:get("test", "a"))
      local rtx = H.rlocked(be)
      assert.is_nil(rtx:get("test", "c"))
      rtx:runlock()
      ctx:close()
      tx:unlock()
      ctx = be:concurrent_read_tx()
      assert.are.equal("3", ctx:get("test", "c"))
      assert.is_nil(ctx:get("test", "a"))
      ctx:close()
    end)

    it("tx:commit() while locked raises and publishes nothing", function()
      local tx = be:batch_tx():lock()
      tx:put("test", "c", "3")
      H.raises("unlock or rollback first", tx.commit, tx)
      assert.is_nil(be:_committed_get("test", "c"))
      local ctx = be:concurrent_read_tx()
      assert.is_nil(ctx:get("test", "c"))
      ctx:close()
      tx:unlock()
    end)

    it("pairs(bucket, from, to) iterates in key order and supports break", function()
      section(be, function(tx)
        for _, k in ipairs { "e", "c", "d", "f" } do tx:put("test", k, k:upper()) end
      end)
      local function collect(r, ...)
        local ks = {}
        for k, v in r:pairs("test", ...) do
          ks[#ks + 1] = k .. "=" .. v
        end
        return table.concat(ks, ",")
      end
      local ctx <close> = be:concurrent_read_tx()
      local rtx = H.rlocked(be)
      local tx = be:batch_tx():lock()
      for _, r in ipairs { ctx, rtx, tx } do
        assert.are.equal("a=1,b=2,c=C,d=D,e=E,f=F", collect(r))
        assert.are.equal("c=C,d=D,e=E,f=F", collect(r, "bb"))
        assert.are.equal("b=2,c=C", collect(r, "b", "d"))
        assert.are.equal("", collect(r, "x"))
        assert.are.equal("", collect(r, "c", "c"))
        local n = 0
        for _ in r:pairs("test") do
          n = n + 1
          if n == 2 then break end
        end
        assert.are.equal(2, n)
      end
      tx:unlock()
      rtx:runlock()
    end)
  end)

  describe("snapshots", function()
    local function open_copy(path)
      local b = backend.open { path = path, batch_interval = HOUR }
      local ctx = b:concurrent_read_tx()
      local d = dump(ctx, { "test", "after" })
      ctx:close()
      b:close()
      return d
    end

    it("hold the data as of snapshot(); write_to a path, a file, a function", function()
      section(be, function(tx) tx:put("test", "big", string.rep("x", 100000)) end)
      local snap = be:snapshot()
      finally(function() snap:close() end)
      section(be, function(tx)
        tx:put("test", "a", "after"); tx:delete("test", "b")
        tx:create_bucket("after"); tx:put("after", "k", "v")
      end)
      be:force_commit()
      local want = { test = { { "a", "b", "big" }, { "1", "2", string.rep("x", 100000) } }, after = { {}, {} } }
      local size = snap:size()
      assert.is_true(size > 0)

      local p1 = H.tmppath("snap1.db")
      local calls, last, total = 0, -1, nil
      local n1 = snap:write_to(p1, function(done, tot)
        calls = calls + 1
        assert.is_true(done >= last, "progress goes forward")
        last, total = done, tot
      end)
      assert.are.equal(size, n1)
      assert.are.equal(size, H.file_size(p1))
      assert.is_true(calls >= 1)
      assert.are.equal(size, total)
      assert.is_true(last <= size)

      local p2 = H.tmppath("snap2.db")
      local f = assert(io.open(p2, "wb"))
      local n2 = snap:write_to(f)
      f:close()
      assert.are.equal(size, n2)
      assert.are.equal(size, H.file_size(p2))

      local chunks = {}
      local n3 = snap:write_to(function(chunk)
        assert.is_string(chunk)
        chunks[#chunks + 1] = chunk
      end)
      assert.are.equal(size, n3)
      local bytes = table.concat(chunks)
      assert.are.equal(size, #bytes)
      local p3 = H.tmppath("snap3.db")
      H.write_file(p3, bytes)
      assert.are.equal(H.read_file(p1), bytes, "every destination gets the same bytes")

      for _, p in ipairs { p1, p2, p3 } do
        assert.are.same(want, open_copy(p), p)
        assert.is_true(os.execute("mdb_stat -n -a " .. H.q(p) .. " >/dev/null 2>&1"), "mdb_stat -n -a " .. p)
      end
    end)

    it("include pending writes (snapshot commits first)", function()
      section(be, function(tx) tx:put("test", "c", "pending") end)
      local snap = be:snapshot()
      local p = H.tmppath()
      snap:write_to(p)
      snap:close()
      local b = backend.open(p)
      finally(function() b:close() end)
      assert.are.equal("pending", b:_committed_get("test", "c"))
    end)

    it("an error raised by the chunk function propagates", function()
      local snap <close> = be:snapshot()
      local e = {}
      local ok, err = pcall(snap.write_to, snap, function() error(e) end)
      assert.is_false(ok)
      assert.are.equal(e, err)
      -- still usable
      assert.are.equal(snap:size(), snap:write_to(function() end))
    end)
  end)

  describe("hash, sizes, stats", function()
    it("crc32c: the check value, continuation, and the model's pure-Lua one agree", function()
      assert.are.equal(0xE3069283, backend.crc32c("123456789"))
      assert.are.equal(0, backend.crc32c(""))
      assert.are.equal(backend.crc32c("123456789"), backend.crc32c("6789", backend.crc32c("12345")))
      local rng = 7
      for n = 0, 300, 7 do
        local t = {}
        for i = 1, n do
          rng = (rng * 1103515245 + 12345) % 2147483648
          t[i] = string.char(rng % 256)
        end
        local s = table.concat(t)
        assert.are.equal(model.crc32c(s), backend.crc32c(s))
        assert.are.equal(model.crc32c(s, 0x12345678), backend.crc32c(s, 0x12345678))
      end
    end)

    it("hash is 0 for an empty database and equals the model's", function()
      local b <close> = backend.open_tmp()
      assert.are.equal(0, b:hash())
      local m = model.new()
      m:lock()
      b:update(function(tx)
        for _, name in ipairs { "key", "meta", "a\1b", "empty" } do
          tx:create_bucket(name); m:create_bucket(name)
        end
        for i = 1, 100 do
          local k, v = string.format("k%03d\0", i), string.rep("v", i)
          local bucket = i % 2 == 0 and "key" or (i % 3 == 0 and "meta" or "a\1b")
          tx:put(bucket, k, v); m:put(bucket, k, v)
        end
      end)
      m:unlock()
      local h = b:hash()
      assert.are.equal(m:hash(nil, backend.crc32c), h)
      assert.are.equal(m:hash(), h)
      local ign = { meta = { ["k003\0"] = true, ["k009\0"] = true }, key = { ["k002\0"] = false } }
      assert.are.equal(m:hash(ign, backend.crc32c), b:hash(ign))
      assert.are_not.equal(h, b:hash(ign))
      assert.is_true(math.type(h) == "integer" and h >= 0 and h <= 0xFFFFFFFF)
    end)

    it("sizes and stats", function()
      be:force_commit()
      local s = be:stats()
      for _, f in ipairs { "commits", "pending", "buffered_writes", "buffered_bytes", "last_commit_seconds",
        "total_commit_seconds", "defrag_seconds", "snapshot_seconds", "map_size", "page_size", "size",
        "size_in_use", "open_read_tx_n", "backpressure_waits", "backpressure_seconds" } do
        assert.is_number(s[f], "stats." .. f)
        assert.is_true(s[f] >= 0, "stats." .. f)
      end
      assert.are.equal(be:commits(), s.commits)
      assert.are.equal(0, s.pending)
      assert.are.equal(be:size(), s.size)
      assert.are.equal(be:size_in_use(), s.size_in_use)
      assert.is_true(s.page_size >= 512 and s.page_size & (s.page_size - 1) == 0)
      assert.is_true(be:size() >= be:size_in_use() and be:size_in_use() > 0)
      assert.are.equal(0, be:size() % s.page_size)
      local size0 = be:size()
      section(be, function(tx)
        for i = 1, 2000 do tx:put("test", string.format("key%06d", i), string.rep("v", 100)) end
      end)
      s = be:stats()
      assert.are.equal(2000, s.pending)
      assert.are.equal(2000, s.buffered_writes)
      assert.is_true(s.buffered_bytes >= 2000 * 109)
      be:force_commit()
      assert.is_true(be:size() > size0)
      s = be:stats()
      assert.are.equal(0, s.pending)
      assert.are.equal(0, s.buffered_writes)
      assert.is_true(s.total_commit_seconds >= s.last_commit_seconds)
      be:defrag()
      s = be:stats()
      assert.is_true(s.defrag_seconds >= 0)
      assert.is_true(be:size() >= be:size_in_use())
    end)

    it("open_tmp: path, removed on close unless keep", function()
      local b, p = backend.open_tmp()
      assert.are.equal(p, b:path())
      assert.is_true(H.exists(p))
      b:close()
      assert.is_false(H.exists(p))
      local b2, p2 = backend.open_tmp { keep = true }
      section(b2, function(tx) tx:create_bucket("t"); tx:put("t", "k", "v") end)
      b2:close()
      assert.is_true(H.exists(p2))
      local b3 = backend.open(p2)
      assert.are.equal("v", b3:_committed_get("t", "k"))
      b3:close()
      os.remove(p2)
      os.remove(p2 .. "-lock")
      local dir = p2:match("^(.*)/[^/]+$")
      if dir and dir:find("^/tmp/.") then os.remove(dir) end
    end)
  end)

  describe("growth and big values", function()
    it("a 64 KiB initial map accepts megabytes of writes", function()
      local path = H.tmppath()
      local b = backend.open { path = path, mmap_size = 65536, batch_interval = 0.01, batch_limit = 50 }
      local v4k = string.rep("0123456789abcdef", 256)
      section(b, function(tx) tx:create_bucket("big") end)
      for s = 1, 20 do
        section(b, function(tx)
          for i = 1, 50 do tx:put("big", string.format("%04d-%03d", s, i), v4k) end
        end)
      end
      local huge = string.rep("z", 2 * 1024 * 1024)
      section(b, function(tx) tx:put("big", "huge", huge) end)
      b:force_commit()
      assert.is_true(b:stats().map_size >= 6 * 1024 * 1024)
      assert.are.equal(huge, b:_committed_get("big", "huge"))
      local ctx = b:concurrent_read_tx()
      assert.are.equal(1001, #(ctx:range("big", "", "\255")))
      ctx:close()
      b:close()
      b = backend.open { path = path, mmap_size = 65536 }
      finally(function() b:close() end)
      local c2 <close> = b:concurrent_read_tx()
      assert.are.equal(huge, c2:get("big", "huge"))
      assert.are.equal(v4k, c2:get("big", "0020-050"))
      section(b, function(tx) tx:put("big", "huge2", huge) end)
      b:force_commit()
      assert.are.equal(huge, b:_committed_get("big", "huge2"))
    end)

    it("1.5 MiB values (etcd's request limit) round-trip through every reader", function()
      local v = string.rep("\0\1\2\255", 3 * 128 * 1024)
      section(be, function(tx) tx:put("test", "v", v); assert.are.equal(v, tx:get("test", "v")) end)
      local ctx <close> = be:concurrent_read_tx()
      assert.are.equal(v, ctx:get("test", "v"))
      be:force_commit()
      assert.are.equal(v, be:_committed_get("test", "v"))
      assert.are.equal(v, ctx:get("test", "v"))
    end)
  end)

  describe("robustness", function()
    it("the map grows while a ConcurrentReadTx, a Snapshot and the ReadTx are held", function()
      local b = backend.open_tmp { batch_interval = 0.01, batch_limit = 10, mmap_size = 65536 }
      finally(function() b:close() end)
      b:update(function(tx) tx:create_bucket("t"); tx:put("t", "a", "1") end)
      b:force_commit()
      local ctx = b:concurrent_read_tx()
      local snap = b:snapshot()
      local size = snap:size()
      local rtx = H.rlocked(b)
      local v = string.rep("x", 4096)
      for s = 1, 100 do
        b:update(function(tx) for i = 1, 20 do tx:put("t", string.format("%03d-%02d", s, i), v) end end)
      end
      b:force_commit()
      assert.is_true(b:stats().map_size >= 8 * 1024 * 1024)
      assert.are.same({ "a" }, (ctx:range("t", "", "\255")))
      assert.are.same({ "a" }, (rtx:range("t", "", "\255")))
      rtx:runlock()
      assert.are.equal(size, snap:write_to(function() end))
      ctx:close()
      snap:close()
      local c2 <close> = b:concurrent_read_tx()
      assert.are.equal(2001, #(c2:range("t", "", "\255")))
    end)

    it("pairs and for_each across many keys, with a maximum-length key", function()
      local max = backend.max_key_size
      local keys = {}
      for i = 0, 999 do keys[#keys + 1] = string.format("k%04d", i) end
      -- a maximum-length key at several positions, followed by its own successor
      for _, at in ipairs { 1, 255, 256, 257, 511, 512, 700 } do
        local long = string.format("k%04d", at) .. string.rep("\255", max - 5)
        keys[#keys + 1] = long
      end
      model.sort(keys)
      section(be, function(tx)
        tx:create_bucket("many")
        for _, k in ipairs(keys) do tx:put("many", k, "v" .. #k) end
      end)
      local ctx <close> = be:concurrent_read_tx()
      local rtx = H.rlocked(be)
      local tx = be:batch_tx():lock()
      for _, r in ipairs { ctx, rtx, tx } do
        local got = {}
        for k in r:pairs("many") do got[#got + 1] = k end
        assert.are.same(keys, got)
        local fe = {}
        r:for_each("many", function(k) fe[#fe + 1] = k end)
        assert.are.same(keys, fe)
        local part = {}
        for k in r:pairs("many", "k0250", "k0600") do part[#part + 1] = k end
        assert.are.equal("k0250", part[1])
        assert.are.equal("k0599", part[#part])
        assert.are.equal(350 + 5, #part)   -- the long keys after k0255, k0256, k0257, k0511, k0512
        assert.are.same(keys, (r:range("many", "", string.rep("\255", max + 10))))
      end
      tx:unlock()
      rtx:runlock()
    end)

    it("writes during a BatchTx pairs loop do not crash; a ConcurrentReadTx loop is unaffected", function()
      section(be, function(tx)
        for i = 1, 600 do tx:put("test", string.format("n%04d", i), "x") end
      end)
      local ctx <close> = be:concurrent_read_tx()
      local want = {}
      for k in ctx:pairs("test") do want[#want + 1] = k end
      local tx = be:batch_tx():lock()
      local n = 0
      local seen = {}
      for k in tx:pairs("test") do
        n = n + 1
        seen[#seen + 1] = k
        if n % 3 == 0 then tx:delete("test", k) end
        tx:put("test", k .. "+", "y")
        assert.is_true(n < 10000, "the loop terminates")
      end
      tx:unlock()
      for i = 2, #seen do assert.is_true(model.less(seen[i - 1], seen[i]), "strictly increasing") end
      local got = {}
      for k in ctx:pairs("test") do got[#got + 1] = k end
      assert.are.same(want, got)
    end)

    it("a locked BatchTx in a coroutine: coroutine.close runs its <close> and unlocks", function()
      local co = coroutine.create(function()
        local w <close> = be:batch_tx():lock()
        w:put("test", "co", "1")
        coroutine.yield()
        w:put("test", "co", "2")
      end)
      assert.is_true(coroutine.resume(co))
      H.raises("already locked", function() be:batch_tx():lock() end)
      assert.is_true(coroutine.close(co))
      local tx = be:batch_tx():lock()
      assert.are.equal("1", tx:get("test", "co"))
      tx:unlock()
    end)

    it("a ConcurrentReadTx iterator used across coroutine yields", function()
      local ctx <close> = be:concurrent_read_tx()
      local co = coroutine.wrap(function()
        for k, v in ctx:pairs("test") do coroutine.yield(k .. "=" .. v) end
      end)
      assert.are.equal("a=1", co())
      section(be, function(tx) tx:put("test", "aa", "new"); tx:delete("test", "b") end)
      be:force_commit()
      assert.are.equal("b=2", co())
    end)

    it("write_to: unwritable destinations raise; the snapshot stays usable", function()
      local snap <close> = be:snapshot()
      local ro_path = H.tmppath("ro")
      H.write_file(ro_path, "")
      local f = assert(io.open(ro_path, "rb"))
      H.raises("", snap.write_to, snap, f)
      f:close()
      H.raises("", snap.write_to, snap, f)            -- a closed file
      local missing = H.tmpdir() .. "/no/such/dir/db"
      local err = H.raises("", snap.write_to, snap, missing)
      assert.is_truthy(err:find(missing, 1, true), err)
      H.raises("", snap.write_to, snap, 42)
      local p = H.tmppath()
      assert.are.equal(snap:size(), snap:write_to(p))
      local b <close> = backend.open(p)
      assert.are.equal("1", b:_committed_get("test", "a"))
    end)

    it("reopening with a smaller mmap_size than the file, and with other options", function()
      local path = H.tmppath()
      local b = backend.open { path = path, batch_interval = 3600 }
      section(b, function(tx)
        tx:create_bucket("t")
        for i = 1, 3000 do tx:put("t", string.format("%05d", i), string.rep("v", 1000)) end
      end)
      b:close()
      local n = 3000
      for _, cfg in ipairs {
        { path = path, mmap_size = 65536 },
        { path = path, no_fsync = true, batch_limit = 1 },
        { path = path, max_readers = 4 },
        { path = path, readonly = true, mmap_size = 4096 },
      } do
        b = backend.open(cfg)
        local ctx = b:concurrent_read_tx()
        assert.are.equal(n, #(ctx:range("t", "", "\255")))
        ctx:close()
        if not cfg.readonly then
          section(b, function(tx) tx:put("t", "extra", "x") end)
          n = 3001
          b:force_commit()
        end
        b:close()
      end
    end)
  end)

  describe("logging", function()
    it("a logger function receives (level, message, fields) on this thread", function()
      local log = {}
      local b = backend.open_tmp { logger = function(level, msg, fields) log[#log + 1] = { level, msg, fields } end }
      finally(function() b:close() end)
      section(b, function(tx) tx:create_bucket("t"); tx:put("t", "k", "v") end)
      b:defrag()
      b:force_commit()
      assert.is_true(#log >= 1, "defrag is logged")
      for _, e in ipairs(log) do
        assert.is_truthy(({ debug = 1, info = 1, warn = 1, error = 1 })[e[1]], tostring(e[1]))
        assert.is_string(e[2])
        assert.is_table(e[3])
      end
    end)

    it("logger = 'stderr' writes JSON lines", function()
      local p, errfile = H.spawn([[
        local backend = require "backend"
        local b = backend.open_tmp { logger = "stderr" }
        b:update(function(tx) tx:create_bucket("t"); tx:put("t", "k", "v") end)
        b:defrag()
        b:close()
        print("done")
      ]])
      local out = p:read("a")
      p:close()
      local err = H.child_stderr(errfile)
      assert.are.equal("done\n", out, err)
      local n = 0
      for line in err:gmatch("[^\n]+") do
        n = n + 1
        assert.is_truthy(line:find("^%s*{.*}%s*$"), line)
      end
      assert.is_true(n >= 1, "defrag logged to stderr")
    end)
  end)
end)
