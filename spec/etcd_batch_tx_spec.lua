-- Ports of etcd v3.4 mvcc/backend/batch_tx_test.go, same assertions. etcd's
-- unexported `tx.commit(false)`, which commits the open section, has no
-- counterpart here (a locked section is never committed): it becomes
-- unlock(), commit() (etcd's exported Commit) and lock() again;
-- raw `b.db.View` reads are be:_committed_get. etcd's "nil slice" is an empty table.
local H = require "spec.helper"
local backend = require "backend"

local HOUR = 3600

describe("etcd batch_tx_test.go", function()
  local be
  after_each(function()
    if be then pcall(be.close, be) end
    be = nil
  end)
  teardown(H.cleanup)

  it("TestBatchTxPut", function()
    be = backend.open_tmp { batch_interval = HOUR, batch_limit = 10000 }
    local tx = be:batch_tx()
    tx:lock()
    finally(function() pcall(tx.unlock, tx) end)

    -- create bucket
    tx:create_bucket("test")

    -- put
    local v = "bar"
    tx:put("test", "foo", v)

    -- check put result before and after tx is committed
    for _ = 1, 2 do
      local _, gv = tx:range("test", "foo", nil, 0)
      assert.are.equal(v, gv[1])
      tx:unlock()
      tx:commit()
      tx:lock()
    end
    -- (extra) the commit made it durable
    assert.are.equal("bar", be:_committed_get("test", "foo"))
  end)

  it("TestBatchTxRange", function()
    be = backend.open_tmp { batch_interval = HOUR, batch_limit = 10000 }
    local tx = be:batch_tx()
    tx:lock()
    finally(function() pcall(tx.unlock, tx) end)

    tx:create_bucket("test")
    -- put keys
    local all_keys = { "foo", "foo1", "foo2" }
    local all_vals = { "bar", "bar1", "bar2" }
    for i = 1, #all_keys do
      tx:put("test", all_keys[i], all_vals[i])
    end

    local tests = {
      -- single key
      { "foo", nil, 0, { "foo" }, { "bar" } },
      -- single key, bad
      { "doo", nil, 0, {}, {} },
      -- key range
      { "foo", "foo1", 0, { "foo" }, { "bar" } },
      -- key range, get all keys
      { "foo", "foo3", 0, all_keys, all_vals },
      -- key range, bad
      { "goo", "goo3", 0, {}, {} },
      -- key range with effective limit
      { "foo", "foo3", 1, { "foo" }, { "bar" } },
      -- key range with limit
      { "foo", "foo3", 4, all_keys, all_vals },
    }
    for i, tt in ipairs(tests) do
      local keys, vals = tx:range("test", tt[1], tt[2], tt[3])
      assert.are.same(tt[4], keys, "#" .. (i - 1) .. ": keys")
      assert.are.same(tt[5], vals, "#" .. (i - 1) .. ": vals")
    end
  end)

  it("TestBatchTxDelete", function()
    be = backend.open_tmp { batch_interval = HOUR, batch_limit = 10000 }
    local tx = be:batch_tx()
    tx:lock()
    finally(function() pcall(tx.unlock, tx) end)

    tx:create_bucket("test")
    tx:put("test", "foo", "bar")

    tx:delete("test", "foo")

    -- check put result before and after tx is committed
    for _ = 1, 2 do
      local ks = tx:range("test", "foo", nil, 0)
      assert.are.equal(0, #ks)
      tx:unlock()
      tx:commit()
      tx:lock()
    end
    assert.is_nil(be:_committed_get("test", "foo"))
  end)

  it("TestBatchTxCommit", function()
    be = backend.open_tmp { batch_interval = HOUR, batch_limit = 10000 }
    local tx = be:batch_tx()
    tx:lock()
    tx:create_bucket("test")
    tx:put("test", "foo", "bar")
    tx:unlock()

    -- etcd's exported Commit() = Lock; commit(false); Unlock
    tx:commit()
    -- the lock holder cannot commit its open section
    tx:lock()
    tx:put("test", "foo", "open")
    H.raises("unlock or rollback first", tx.commit, tx)
    tx:rollback()
    assert.are.equal(0, tx:pending())

    -- check whether put happens via db view
    assert.are.equal("bar", be:_committed_get("test", "foo"), "foo key failed to written in backend")
  end)

  it("TestBatchTxBatchLimitCommit", function()
    -- start backend with batch limit 1 so one write can trigger a commit
    be = backend.open_tmp { batch_interval = HOUR, batch_limit = 1 }
    local pc = be:commits()
    local tx = be:batch_tx()
    tx:lock()
    tx:create_bucket("test")
    tx:put("test", "foo", "bar")
    tx:unlock()

    -- batch limit commit should have been triggered (asynchronously here)
    assert.is_true(H.wait_until(function() return be:commits() >= pc + 1 end, 10),
      "no commit after unlock with pending >= batch_limit")
    assert.are.equal("bar", be:_committed_get("test", "foo"), "foo key failed to written in backend")
  end)

  -- etcd behaviour (probed in the research notes) the port keeps
  describe("(extra etcd behaviour)", function()
    it("the limit is checked only at unlock: 10 puts under limit 3 make one commit", function()
      be = backend.open_tmp { batch_interval = HOUR, batch_limit = 3 }
      local pc = be:commits()
      local tx = be:batch_tx():lock()
      tx:create_bucket("test")
      for i = 1, 10 do tx:put("test", "k" .. i, "v") end
      assert.are.equal(11, tx:pending())
      assert.is_nil(be:_committed_get("test", "k1"), "no commit inside a locked section")
      tx:unlock()
      assert.is_true(H.wait_until(function()
        return be:commits() >= pc + 1 and be:batch_tx():pending() == 0
      end, 10))
      assert.are.equal(pc + 1, be:commits())
      assert.are.equal("v", be:_committed_get("test", "k10"))
    end)

    it("pending counts put, seq_put, delete, create_bucket (even existing) and delete_bucket", function()
      be = backend.open_tmp { batch_interval = HOUR, batch_limit = 10000 }
      local tx = be:batch_tx():lock()
      assert.are.equal(0, tx:pending())
      tx:create_bucket("a"); assert.are.equal(1, tx:pending())
      tx:create_bucket("a"); assert.are.equal(2, tx:pending())
      tx:put("a", "k", "v"); assert.are.equal(3, tx:pending())
      tx:seq_put("a", "l", "v"); assert.are.equal(4, tx:pending())
      tx:delete("a", "k"); assert.are.equal(5, tx:pending())
      tx:delete("a", "missing"); assert.are.equal(6, tx:pending())
      tx:create_bucket("b"); tx:delete_bucket("b"); assert.are.equal(8, tx:pending())
      tx:unlock()
      assert.are.equal(8, tx:pending())
      be:force_commit()
      assert.are.equal(0, tx:pending())
      assert.are.equal(0, be:stats().pending)
    end)

    it("force_commit with nothing pending does not count a commit", function()
      be = backend.open_tmp { batch_interval = HOUR, batch_limit = 10000 }
      local tx = be:batch_tx():lock()
      tx:create_bucket("t"); tx:put("t", "k", "v")
      tx:unlock()
      be:force_commit()
      local c = be:commits()
      be:force_commit()
      be:force_commit()
      assert.are.equal(c, be:commits())
    end)

    it("the timer commits only when something is pending", function()
      be = backend.open_tmp { batch_interval = 0.01, batch_limit = 10000 }
      local tx = be:batch_tx():lock()
      tx:create_bucket("t"); tx:put("t", "k", "v")
      tx:unlock()
      assert.is_true(H.wait_until(function() return be:_committed_get("t", "k") == "v" end, 10))
      assert.is_true(H.wait_until(function() return tx:pending() == 0 end, 10))
      local c = be:commits()
      H.sleep(0.3)   -- ~30 timer periods with nothing to do
      assert.are.equal(c, be:commits())
    end)

    it("close commits what is pending", function()
      local path = H.tmppath()
      be = backend.open { path = path, batch_interval = HOUR, batch_limit = 10000 }
      local tx = be:batch_tx():lock()
      tx:create_bucket("t"); tx:put("t", "k", "v")
      tx:unlock()
      be:close()
      be = backend.open { path = path }
      local ctx <close> = be:concurrent_read_tx()
      assert.are.equal("v", ctx:get("t", "k"))
      assert.are.equal("v", be:_committed_get("t", "k"))
    end)

    it("commit_and_stop commits, then refuses writes; reads and close still work", function()
      local path = H.tmppath()
      be = backend.open { path = path, batch_interval = HOUR, batch_limit = 10000 }
      local tx = be:batch_tx():lock()
      tx:create_bucket("t")
      tx:put("t", "k", "v")
      H.raises("unlock or rollback first", tx.commit_and_stop, tx)
      tx:unlock()
      tx:commit_and_stop()
      assert.are.equal("v", be:_committed_get("t", "k"))
      H.raises("stopped", tx.lock, tx)
      H.raises("stopped", tx.put, tx, "t", "l", "w")
      local ctx = be:concurrent_read_tx()
      assert.are.equal("v", ctx:get("t", "k"))
      ctx:close()
      be:close()
      be = backend.open(path)
      assert.are.equal("v", be:_committed_get("t", "k"))
      assert.is_nil(be:_committed_get("t", "l"))
    end)

    it("seq_put accepts keys out of order (no check, like v3.4)", function()
      be = backend.open_tmp { batch_interval = HOUR, batch_limit = 10000 }
      local tx = be:batch_tx():lock()
      tx:create_bucket("s")
      for _, k in ipairs { "05", "01", "09", "03", "01", "07" } do tx:seq_put("s", k, "v" .. k) end
      tx:seq_put("s", "01", "new")
      local ks, vs = tx:range("s", "", "\255")
      assert.are.same({ "01", "03", "05", "07", "09" }, ks)
      assert.are.same({ "new", "v03", "v05", "v07", "v09" }, vs)
      tx:unlock()
      be:force_commit()
      assert.are.equal("new", be:_committed_get("s", "01"))
      local ctx <close> = be:concurrent_read_tx()
      assert.are.same({ "01", "03", "05", "07", "09" }, (ctx:range("s", "", "\255")))
    end)
  end)
end)
