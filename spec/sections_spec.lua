-- A locked section of the batch tx is all or nothing: unlock() makes every
-- write of it visible at once, rollback() (and update or <close> when they are
-- left by an error) discards every one of them, and nothing ever commits a
-- section that is still open.
local H = require "spec.helper"
local backend = require "backend"

local HOUR = 3600

-- { { k, v }, ... } of a bucket, in key order.
local function pairs_of(r, bucket)
  local out = {}
  for k, v in r:pairs(bucket) do out[#out + 1] = { k, v } end
  return out
end

-- Everything a reader can see: a new view, the shared ReadTx, LMDB, the hash.
local function seen(be)
  local out = {}
  local function dump(r)
    local parts = {}
    for _, b in ipairs(r:buckets()) do
      parts[#parts + 1] = b .. "{" .. H.show(H.all(r, b)) .. "}"
    end
    return table.concat(parts, " ")
  end
  out.view = be:view(dump)
  local rtx = H.rlocked(be)
  out.read = dump(rtx)
  rtx:runlock()
  out.hash = be:hash()   -- commits first: a write that leaked would count
  out.committed = tostring(be:_committed_get("acct", "alice"))
  return out
end

local function open(config)
  local cfg = { batch_interval = HOUR }
  for k, v in pairs(config or {}) do cfg[k] = v end
  local be = backend.open_tmp(cfg)
  be:update(function(tx)
    tx:create_bucket("acct")
    tx:put("acct", "alice", "100")
    tx:put("acct", "bob", "0")
    tx:create_bucket("old")
    tx:put("old", "k", "v")
  end)
  return be
end

describe("sections", function()
  local be, logs
  before_each(function()
    logs = {}
    be = open { logger = function(level, message) logs[#logs + 1] = level .. ": " .. message end }
  end)
  after_each(function()
    if be then pcall(be.close, be) end
    be = nil
    collectgarbage()
    H.cleanup()
  end)

  describe("update", function()
    it("rolls back every write when fn raises, buckets included, and re-raises the error", function()
      local before = seen(be)
      local err = {}
      local ok, got = pcall(be.update, be, function(tx)
        tx:put("acct", "alice", "50")
        tx:put("acct", "carol", "50")
        tx:delete("acct", "bob")
        tx:create_bucket("new")
        tx:put("new", "k", "v")
        tx:delete_bucket("old")
        assert.are.equal("50", tx:get("acct", "alice"))   -- the section reads its own writes
        assert.is_nil(tx:get("acct", "bob"))
        assert.are.same({ "acct", "new" }, tx:buckets())
        error(err)
      end)
      assert.is_false(ok)
      assert.are.equal(err, got)   -- the very error object
      assert.are.same(before, seen(be))
      assert.are.equal(1, be:stats().rollbacks)
      be:update(function(tx)
        assert.are.same({ "acct", "old" }, tx:buckets())
        H.raises("bucket 'new' does not exist", tx.put, tx, "new", "k", "v")
        tx:put("old", "k2", "v2")   -- the bucket the section deleted is there for writes
      end)
      assert.are.equal(1, be:stats().pending)
    end)

    it("unlocks and returns fn's results when fn returns", function()
      local a, b, c = be:update(function(tx) tx:put("acct", "alice", "90"); return 1, nil, "x" end)
      assert.are.same({ 1, nil, "x" }, { a, b, c })
      assert.are.equal("90", be:view(function(r) return r:get("acct", "alice") end))
      assert.are.equal(0, be:stats().rollbacks)
    end)

    it("leaves alone a section fn ended itself", function()
      be:update(function(tx) tx:put("acct", "alice", "1"); tx:rollback() end)
      be:update(function(tx) tx:put("acct", "bob", "2"); tx:unlock() end)
      assert.are.same({ "100", "2" }, be:view(function(r) return { r:get("acct", "alice"), r:get("acct", "bob") } end))
      local ok = pcall(be.update, be, function(tx) tx:unlock(); error("after the end") end)
      assert.is_false(ok)
      assert.are.equal(1, be:stats().rollbacks)
    end)

    it("rolls back when the coroutine running it is closed", function()
      local co = coroutine.create(function()
        be:update(function(tx) tx:put("acct", "alice", "0"); coroutine.yield("inside") end)
      end)
      assert.are.same({ true, "inside" }, { coroutine.resume(co) })
      assert.is_true(coroutine.close(co))
      local tx = be:batch_tx():lock()   -- "already locked" if the lock were still held
      assert.are.equal("100", tx:get("acct", "alice"))
      tx:unlock()
      assert.are.equal(1, be:stats().rollbacks)
    end)

    it("rolls back when fn raises after a yield, and returns quietly when fn closed the backend", function()
      local co = coroutine.wrap(function()
        return be:update(function(tx) tx:put("acct", "alice", "0"); coroutine.yield(1); error("late", 0) end)
      end)
      assert.are.equal(1, co())
      assert.are.same({ false, "late" }, { pcall(co) })
      assert.are.equal("100", be:view(function(r) return r:get("acct", "alice") end))
      be:update(function(tx) tx:put("acct", "alice", "1"); be:close() end)   -- close rolled it back
      assert.is_truthy(table.concat(logs, "\n"):find("closing the backend: rolled back", 1, true))
    end)

    it("nested in a section raises and leaves the section open", function()
      be:update(function(tx)
        tx:put("acct", "alice", "70")
        H.raises("already locked", be.update, be, function() end)
        assert.are.equal("70", tx:get("acct", "alice"))   -- a read that needs the lock
      end)
      assert.are.equal("70", be:view(function(r) return r:get("acct", "alice") end))
    end)

    it("a loop of failing updates stays bounded in memory and commits nothing", function()
      be:close()
      -- the rolled-back batches are queued and dropped by the committer; a writer
      -- that outruns it waits in lock() once 2 MiB are buffered
      be = open { batch_limit = 100, max_buffered_bytes = 2 << 20 }
      local value = string.rep("v", 10000)
      local hash = be:hash()
      local most = 0
      for i = 1, 3000 do
        pcall(be.update, be, function(tx) tx:put("acct", "k" .. i, value); error("no") end)
        most = math.max(most, be:stats().buffered_bytes)
      end
      -- 30 MB rolled back; never more than the bound and the batch being written
      assert.is_true(most < 4 * 1024 * 1024, "buffered bytes reached " .. most)
      assert.are.equal(3000, be:stats().rollbacks)
      assert.are.equal(0, be:stats().pending)
      assert.are.equal(hash, be:hash())
      assert.are.equal(0, be:commits() - 1)   -- the hash's commit of the setup only
    end)
  end)

  describe("rollback", function()
    it("discards the section's writes; readers never see them", function()
      local before = seen(be)
      local tx = be:batch_tx():lock()
      local early = be:concurrent_read_tx()
      tx:put("acct", "alice", "0")
      tx:delete("acct", "bob")
      tx:delete_bucket("acct")
      tx:create_bucket("acct")
      tx:put("acct", "eve", "1")
      local during = be:concurrent_read_tx()
      assert.are.same({ "eve" }, (tx:range("acct", "", "\255")))
      tx:rollback()
      local after = be:concurrent_read_tx()
      for _, r in ipairs { early, during, after } do
        assert.are.same({ { "alice", "100" }, { "bob", "0" } }, pairs_of(r, "acct"))
        r:close()
      end
      assert.are.same(before, seen(be))
    end)

    it("raises 'not locked' outside a section, as unlock does", function()
      local tx = be:batch_tx()
      H.raises("batch tx is not locked", tx.rollback, tx)
      H.raises("batch tx is not locked", tx.unlock, tx)
      tx:lock()
      tx:rollback()
      H.raises("batch tx is not locked", tx.rollback, tx)
      H.raises("batch tx is not locked", tx.put, tx, "acct", "x", "y")
    end)

    it("keeps the writes unlocked before it", function()
      local tx = be:batch_tx()
      tx:lock(); tx:put("acct", "alice", "1"); tx:unlock()
      tx:lock(); tx:put("acct", "alice", "2"); tx:put("acct", "alice", "3"); tx:rollback()
      tx:lock(); tx:put("acct", "bob", "4"); tx:unlock()
      assert.are.same({ { "alice", "1" }, { "bob", "4" } }, be:view(function(r) return pairs_of(r, "acct") end))
      be:force_commit()
      assert.are.equal("1", be:_committed_get("acct", "alice"))
      assert.are.equal(0, tx:pending())
    end)
  end)

  describe("<close>", function()
    it("unlocks on a normal exit and rolls back on an error", function()
      do
        local tx <close> = be:batch_tx():lock()
        tx:put("acct", "alice", "1")
      end
      assert.is_false(pcall(function()
        local tx <close> = be:batch_tx():lock()
        tx:put("acct", "bob", "2")
        error("boom")
      end))
      assert.are.same({ "1", "0" }, be:view(function(r) return { r:get("acct", "alice"), r:get("acct", "bob") } end))
    end)

    it("does nothing when the section was ended already, or is another coroutine's", function()
      do
        local tx <close> = be:batch_tx():lock()
        tx:put("acct", "alice", "1")
        tx:unlock()
        local co = coroutine.wrap(function()
          local t = be:batch_tx():lock()
          t:put("acct", "alice", "2")
          coroutine.yield()
        end)
        co()   -- another coroutine holds the lock as the scope ends
      end
      local tx = be:batch_tx()
      getmetatable(tx).__close(tx, "an error")   -- the other coroutine's: left alone
      H.raises("already locked", tx.lock, tx)
      tx:rollback()
      assert.are.equal("1", be:view(function(r) return r:get("acct", "alice") end))
    end)

    it("unlocks when its coroutine is closed (Lua passes no error)", function()
      local co = coroutine.create(function()
        local tx <close> = be:batch_tx():lock()
        tx:put("acct", "alice", "5")
        coroutine.yield()
      end)
      coroutine.resume(co)
      coroutine.close(co)
      assert.are.equal("5", be:view(function(r) return r:get("acct", "alice") end))
    end)
  end)

  describe("a lock left by a coroutine that cannot end it", function()
    it("is rolled back with a warning by the next lock() when the coroutine died", function()
      local co = coroutine.create(function()
        local tx = be:batch_tx():lock()
        tx:put("acct", "alice", "0")
        error("died holding the lock")
      end)
      assert.is_false((coroutine.resume(co)))
      assert.are.equal("dead", coroutine.status(co))
      local tx = be:batch_tx():lock()
      assert.are.equal("100", tx:get("acct", "alice"))
      tx:unlock()
      be:stats()   -- delivers the log
      local all = table.concat(logs, "\n")
      assert.is_truthy(all:find("warn: the coroutine holding the lock is dead: rolled back", 1, true), all)
    end)

    it("is rolled back with a warning by the next lock() when the coroutine was collected", function()
      do
        local co = coroutine.create(function()
          local tx = be:batch_tx():lock()
          tx:put("acct", "alice", "0")
          coroutine.yield()
        end)
        coroutine.resume(co)
      end
      collectgarbage()
      collectgarbage()
      be:update(function(tx) assert.are.equal("100", tx:get("acct", "alice")) end)
      assert.is_truthy(table.concat(logs, "\n"):find("warn: the coroutine holding the lock was collected", 1, true),
        table.concat(logs, "\n"))
      assert.are.equal(1, be:stats().rollbacks)
    end)

    it("is left to a suspended coroutine that can still end it", function()
      local co = coroutine.wrap(function()
        local tx = be:batch_tx():lock()
        tx:put("acct", "alice", "7")
        coroutine.yield()
        tx:unlock()
      end)
      co()
      H.raises("already locked", be.update, be, function() end)
      co()
      assert.are.equal("7", be:view(function(r) return r:get("acct", "alice") end))
    end)
  end)

  describe("a locked section is never committed", function()
    it("commit() and commit_and_stop() are etcd's Commit(): from outside a section", function()
      local tx = be:batch_tx()
      tx:commit()
      assert.are.equal("100", be:_committed_get("acct", "alice"))
      tx:lock()
      tx:put("acct", "alice", "1")
      H.raises("unlock or rollback first", tx.commit, tx)
      H.raises("unlock or rollback first", tx.commit_and_stop, tx)
      tx:unlock()
      tx:commit_and_stop()
      assert.are.equal("1", be:_committed_get("acct", "alice"))
      H.raises("stopped", tx.lock, tx)
    end)

    it("every call that commits first raises for the lock holder, and the section goes on", function()
      local tx = be:batch_tx():lock()
      tx:put("acct", "alice", "1")
      for _, call in ipairs {
        function() return be:force_commit() end, function() return be:snapshot() end,
        function() return be:hash() end, function() return be:defrag() end,
        function() return be:bucket_stats() end,
      } do
        H.raises("unlock or rollback first", call)
      end
      assert.is_nil(be:_committed_get("acct", "alice") == "1" or nil)
      tx:put("acct", "bob", "1")
      tx:unlock()
      be:force_commit()
      assert.are.equal("1", be:_committed_get("acct", "bob"))
    end)

    it("close() rolls the open section back and logs a warning", function()
      local path = H.tmppath()
      local function logger(level, message) logs[#logs + 1] = level .. ": " .. message end
      local b2 = backend.open { path = path, logger = logger }
      b2:update(function(tx) tx:create_bucket("acct"); tx:put("acct", "alice", "100") end)
      local tx = b2:batch_tx():lock()
      tx:put("acct", "alice", "0")
      b2:close()
      assert.is_truthy(table.concat(logs, "\n"):find("warn: closing the backend: rolled back", 1, true),
        table.concat(logs, "\n"))
      b2 = backend.open(path)
      assert.are.equal("100", b2:view(function(r) return r:get("acct", "alice") end))
      b2:close()
    end)

    it("__gc rolls the open section back", function()
      local path = H.tmppath()
      local out = H.spawn_in_tmpdir(string.format([[
        local backend = require "backend"
        do
          local be = backend.open(%q)
          be:update(function(tx) tx:create_bucket("b"); tx:put("b", "k", "kept") end)
          local tx = be:batch_tx():lock()
          tx:put("b", "k", "rolled back")
          tx:put("b", "k2", "rolled back")
        end
        collectgarbage()
        collectgarbage()
        local be = backend.open(%q)
        print(be:view(function(r) return r:get("b", "k") .. " " .. tostring(r:get("b", "k2")) end))
        be:close()
      ]], path, path))
      assert.are.equal("kept nil\n", out)
    end)
  end)

  it("views opened between sections see exactly the unlocked ones, never a rolled-back one", function()
    -- many sections, every third rolled back; the views taken along the way
    -- see exactly the unlocked ones
    local tx = be:batch_tx()
    local want = { alice = "100", bob = "0" }
    for i = 1, 300 do
      tx:lock()
      local key = "k" .. (i % 17)
      tx:put("acct", key, tostring(i))
      if i % 5 == 0 then tx:delete("acct", "k" .. (i % 7)) end
      if i % 3 == 0 then
        tx:rollback()
      else
        tx:unlock()
        want[key] = tostring(i)
        if i % 5 == 0 then want["k" .. (i % 7)] = nil end
      end
      if i % 25 == 0 then be:force_commit() end
      local got = {}
      be:view(function(r) for k, v in r:pairs("acct") do got[k] = v end end)
      assert.are.same(want, got, "after section " .. i)
    end
  end)
end)
