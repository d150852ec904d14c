-- The read path without per-row garbage: tx:rows on every tx type (range's
-- arguments and results, in one userdata that owns its data), pairs as a C
-- iterator reading in chunks, and reads that share one buffer per Lua state.
local H = require "spec.helper"
local backend = require "backend"

local HOUR = 3600
local TOP = string.rep("\255", backend.max_key_size)   -- the largest key there can be
local ALL = TOP .. "\0"                                  -- above it: range's end for all of a bucket

-- The three tx types, each ready to read; the second value ends it.
local TX = {
  BatchTx = function(be) local tx = be:batch_tx():lock(); return tx, function() tx:unlock() end end,
  ReadTx = function(be) local r = H.rlocked(be); return r, function() r:runlock() end end,
  ConcurrentReadTx = function(be) local c = be:concurrent_read_tx(); return c, function() c:close() end end,
}
local TX_NAMES = { "BatchTx", "ReadTx", "ConcurrentReadTx" }

local function rows_lists(rows)
  local ks, vs = {}, {}
  for i = 1, #rows do ks[i], vs[i] = rows:key(i), rows:value(i) end
  return ks, vs
end

describe("reads", function()
  local be
  before_each(function()
    be = backend.open_tmp { batch_interval = HOUR, batch_limit = 10000 }
    be:update(function(tx)
      tx:create_bucket("b")
      for i = 1, 40 do tx:put("b", string.format("k%02d", i), "committed" .. i) end
      tx:put("b", "z\0bin", "")
      tx:put("b", TOP, "top")
    end)
    be:force_commit()
    be:update(function(tx)   -- buffered over committed: new keys, overwrites, deletes
      tx:put("b", "k05", "buffered")
      tx:put("b", "k055", "new")
      tx:delete("b", "k07")
      tx:put("b", "a\0", string.rep("v", 100000))
    end)
  end)
  after_each(function()
    if be then pcall(be.close, be) end
    be = nil
  end)
  teardown(H.cleanup)

  describe("tx:rows", function()
    local QUERIES = {
      { "b", "k05" }, { "b", "k07" }, { "b", "nope" }, { "b", "", "\255" }, { "b", "", ALL },
      { "b", "k", "l", 3 }, { "b", "k", "l", -1 }, { "b", "k10", "k10" }, { "b", "k20", "k10" },
      { "b", "", "\255", 1.0 }, { "nope", "", "\255" }, { "b", "z\0bin" }, { "b", TOP }, { "b", TOP, ALL },
    }
    for _, tname in ipairs(TX_NAMES) do
      it(tname .. ": the same rows as range, for every kind of query", function()
        local tx, done = TX[tname](be)
        for _, q in ipairs(QUERIES) do
          local ks, vs = tx:range(table.unpack(q, 1, 4))
          local rows = tx:rows(table.unpack(q, 1, 4))
          local label = H.show(q)
          assert.are.equal(#ks, #rows, label)
          local rk, rv = rows_lists(rows)
          assert.are.same(ks, rk, label)
          assert.are.same(vs, rv, label)
          assert.are.same(ks, rows:keys(), label)
          assert.are.same(vs, rows:values(), label)
          assert.are.equal(string.format("backend.Rows (%d rows)", #ks), tostring(rows))
        end
        done()
      end)
    end

    it("raises range's errors", function()
      for _, tname in ipairs(TX_NAMES) do
        local tx, done = TX[tname](be)
        H.raises("key must not be empty", tx.rows, tx, "b", "")
        H.raises("bucket name must not be empty", tx.rows, tx, "", "k", "l")
        H.raises("bad argument #5 to 'rows' (integer expected, got number)", tx.rows, tx, "b", "k", "l", 1.5)
        done()
        H.raises(tname == "ReadTx" and "read tx is not locked" or
          tname == "BatchTx" and "batch tx is not locked" or "concurrent read tx is closed", tx.rows, tx, "b", "k")
      end
    end)

    it("rows:key(i) and rows:value(i) take 1 .. #rows only", function()
      local rows = be:view(function(v) return v:rows("b", "k01", "k03") end)
      assert.are.equal(2, #rows)
      assert.are.equal("k02", rows:key(2))
      assert.are.equal("committed2", rows:value(2.0))
      for _, i in ipairs { 0, 3, -1, math.maxinteger, math.mininteger } do
        H.raises(string.format("bad argument #1 to 'key' (row %d out of range 1..2)", i), function() rows:key(i) end)
        H.raises(string.format("bad argument #2 to 'value' (row %d out of range 1..2)", i), rows.value, rows, i)
      end
      H.raises("bad argument #1 to 'key' (integer expected, got number)", function() rows:key(1.5) end)
      H.raises("bad argument #2 to 'value' (integer expected, got string)", rows.value, rows, "1")
      local empty = be:view(function(v) return v:rows("b", "nope") end)
      assert.are.equal(0, #empty)
      assert.are.same({}, empty:keys())
      H.raises("row 1 out of range: no rows", empty.key, empty, 1)
    end)

    it("a Rows owns its data: later reads, writes, closing its tx and the backend leave it as it was", function()
      local v = be:concurrent_read_tx()
      local rows = v:rows("b", "", ALL)
      local ks, vs = rows_lists(rows)
      assert.are.equal(43, #ks)
      -- other reads reuse the binding's buffer: a big one, then small ones
      assert.are.equal(100000, #v:get("b", "a\0"))
      for _ = 1, 3 do v:range("b", "k", "l") end
      local tx = be:batch_tx():lock()
      local from_tx = tx:rows("b", "k01", "k03")
      tx:put("b", "k01", "changed")
      tx:delete("b", "k02")
      tx:unlock()
      be:force_commit()
      v:close()
      assert.are.same({ "k01", "k02" }, from_tx:keys())
      assert.are.same({ "committed1", "committed2" }, from_tx:values())
      be:defrag()
      be:close()
      be = nil
      collectgarbage(); collectgarbage()
      assert.are.same({ rows_lists(rows) }, { ks, vs })
      assert.are.equal(string.rep("v", 100000), rows:value(1))
      assert.are.equal(TOP, rows:key(43))
    end)

    it("is one userdata without a finalizer, whatever its size", function()
      local rows = be:view(function(v) return v:rows("b", "", "\255") end)
      assert.are.equal("userdata", type(rows))
      assert.is_nil(getmetatable(rows).__gc)
      -- the collector accounts for its memory: the data (100 KB here) is in the Lua heap
      collectgarbage()
      collectgarbage("stop")
      local before = collectgarbage("count")
      local more = be:view(function(v) return v:rows("b", "", "\255") end)
      local grown = collectgarbage("count") - before
      collectgarbage("restart")
      assert.is_true(grown > 97, "Rows memory is Lua memory")
      assert.are.equal(#rows, #more)
    end)
  end)

  describe("tx:rows(..., rows): a refill", function()
    it("makes the given Rows hold the new read, the same as a new one, on every tx type", function()
      for _, tname in ipairs(TX_NAMES) do
        local tx, done = TX[tname](be)
        local reused = tx:rows("b", "", ALL)   -- big first, then smaller and bigger reads
        for _, q in ipairs { { "b", "k05" }, { "b", "nope" }, { "b", "k", "l", 3 }, { "b", "", ALL },
          { "b", "", "\255", 2 }, { "nope", "", "\255" }, { "b", "", ALL } } do
          local fresh = tx:rows(table.unpack(q, 1, 4))
          local args = { table.unpack(q, 1, 4) }
          assert.are.equal(reused, tx:rows(args[1], args[2], args[3], args[4], reused))
          assert.are.same({ rows_lists(fresh) }, { rows_lists(reused) }, tname .. " " .. H.show(q))
          assert.are.equal(tostring(fresh), tostring(reused))
        end
        done()
      end
    end)

    it("grows the Rows when the read needs more, and the grown memory is Lua's", function()
      local v <close> = be:concurrent_read_tx()
      local rows = v:rows("b", "k01", "k02")
      collectgarbage()
      collectgarbage("stop")
      local before = collectgarbage("count")
      v:rows("b", "", ALL, nil, rows)
      local grown = collectgarbage("count") - before
      collectgarbage("restart")
      assert.is_true(grown > 97, "the grown block is Lua memory")
      assert.are.equal(43, #rows)
      assert.are.equal(string.rep("v", 100000), rows:value(1))
      collectgarbage(); collectgarbage()   -- the block stays with its Rows
      assert.are.equal(TOP, rows:key(43))
      -- and is kept: a smaller read, then the big one again, allocates nothing more
      v:rows("b", "k01", "k02", nil, rows)
      collectgarbage()
      collectgarbage("stop")
      before = collectgarbage("count")
      v:rows("b", "", ALL, nil, rows)
      grown = collectgarbage("count") - before
      collectgarbage("restart")
      assert.is_true(grown < 1, "a refill that fits allocates nothing (" .. grown .. " KB)")
      assert.are.equal(43, #rows)
    end)

    it("leaves the Rows as it was when the read raises; anything else there is an error", function()
      local v = be:concurrent_read_tx()
      local rows = v:rows("b", "k01", "k03")
      H.raises("key must not be empty", v.rows, v, "b", "", nil, nil, rows)
      H.raises("bad argument #5 to 'rows' (backend.Rows expected, got table)", function()
        v:rows("b", "k", nil, nil, {})
      end)
      H.raises("bad argument #5 to 'rows' (backend.Rows expected, got userdata)", function()
        v:rows("b", "k", nil, nil, v)
      end)
      v:close()
      H.raises("concurrent read tx is closed", v.rows, v, "b", "k05", nil, nil, rows)
      assert.are.same({ "k01", "k02" }, rows:keys())
      assert.are.same({ "committed1", "committed2" }, rows:values())
    end)
  end)

  it("a __gc that reads while a read's results are made changes none of them", function()
    local v <close> = be:concurrent_read_tx()
    local want_k, want_v = v:range("b", "k", "l")
    local big = #v:get("b", "a\0")
    local reads = 0
    local function finalizers()
      for _ = 1, 30 do setmetatable({}, { __gc = function() reads = reads + #v:get("b", "a\0") end }) end
    end
    collectgarbage("incremental", 10, 1000)   -- a collector step at almost every allocation
    local ok, err = pcall(function()
      local reused = v:rows("b", "k01")
      for round = 1, 30 do
        finalizers()
        local ks, vs = v:range("b", "k", "l")
        assert.are.same({ want_k, want_v }, { ks, vs }, "range, round " .. round)
        finalizers()
        assert.are.same({ want_k, want_v }, { rows_lists(v:rows("b", "k", "l")) }, "rows, round " .. round)
        finalizers()
        v:rows("b", "k", "l", nil, reused)
        assert.are.same({ want_k, want_v }, { rows_lists(reused) }, "refill, round " .. round)
        finalizers()
        local pk = {}
        for key in v:pairs("b", "k", "l") do pk[#pk + 1] = key end
        assert.are.same(want_k, pk, "pairs, round " .. round)
      end
    end)
    collectgarbage("incremental", 200, 100)
    assert(ok, err)
    assert.is_true(reads > 0 and reads % big == 0, "the finalizers read")
  end)

  describe("tx:pairs", function()
    before_each(function()
      be:update(function(tx)
        tx:create_bucket("many")
        for i = 1, 3000 do tx:put("many", string.format("m%05d", i), tostring(i)) end
      end)
      be:force_commit()
      be:update(function(tx)   -- some buffered over the committed ones, across chunk boundaries
        for i = 30, 3000, 37 do tx:put("many", string.format("m%05d", i), "b" .. i) end
        for i = 31, 3000, 41 do tx:delete("many", string.format("m%05d", i)) end
      end)
    end)

    it("is a C function and returns what range returns, in chunks, from and to anywhere", function()
      for _, tname in ipairs(TX_NAMES) do
        local tx, done = TX[tname](be)
        for _, q in ipairs { { "many" }, { "many", "m00032" }, { "many", "m00033", "m01057" }, { "many", "", "m00031" },
          { "many", "m02990", "\255" }, { "many", "z" }, { "nope" }, { "b" }, { "b", "k05\0" } } do
          local it = tx:pairs(table.unpack(q, 1, 3))
          assert.are.equal("C", debug.getinfo(it, "S").what)
          local ks, vs = {}, {}
          for k, v in it do ks[#ks + 1], vs[#vs + 1] = k, v end
          local wk, wv = tx:range(q[1], q[2] or "", q[3] or ALL)
          assert.are.equal(#wk, #ks, tname .. " " .. H.show(q))
          assert.are.same(wk, ks, tname .. " " .. H.show(q))
          assert.are.same(wv, vs, tname .. " " .. H.show(q))
          assert.is_nil(it())   -- stays ended
        end
        done()
      end
    end)

    it("returns the largest key there can be, with no made-up end key", function()
      local got = {}
      be:view(function(v) for k in v:pairs("b", "z") do got[#got + 1] = k end end)
      assert.are.same({ "z\0bin", TOP }, got)
    end)

    it("other reads on the same tx between its steps do not disturb it", function()
      local v <close> = be:concurrent_read_tx()
      local n = 0
      for k, val in v:pairs("many") do
        n = n + 1
        assert.are.equal(val, v:get("many", k))
        local ks = v:range("many", "", "\255", 7)
        assert.are.equal(7, #ks)
        assert.are.equal(43, #v:rows("b", "", ALL))
      end
      assert.are.equal(3000 - 73, n)
    end)
  end)

  describe("concurrent read txs", function()
    it("open_read_tx_n counts the open ones only; closed ones are reused", function()
      local views = {}
      for i = 1, 100 do views[i] = be:concurrent_read_tx() end
      assert.are.equal(100, be:open_read_tx_n())
      for i = 1, 60 do views[i]:close() end
      assert.are.equal(40, be:open_read_tx_n())
      for i = 1, 60 do views[i] = be:concurrent_read_tx() end
      assert.are.equal(100, be:open_read_tx_n())
      for i = 1, 100 do assert.are.equal("buffered", views[i]:get("b", "k05")) end
      be:defrag()   -- invalidated, still open until closed
      assert.are.equal(100, be:open_read_tx_n())
      for i = 1, 100 do views[i]:close() end
      assert.are.equal(0, be:open_read_tx_n())
      local fresh <close> = be:concurrent_read_tx()   -- a reused one: not invalidated
      assert.are.equal("buffered", fresh:get("b", "k05"))
    end)
  end)
end)
