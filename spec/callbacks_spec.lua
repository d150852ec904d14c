-- Every method that calls back into Lua (snap:write_to's chunk function and
-- progress, f:walk's callbacks, the logger, tx:for_each and tx:pairs) with a
-- callback that closes the object, closes the backend, raises, yields,
-- collects garbage or calls the same method again: a clear error or the
-- right result, never a crash (`make asan` runs this under ASan), and the
-- object stays usable and closable.
local backend = require "backend"
local H = require "spec.helper"

local BUSY_SNAP = "snapshot is busy (write_to in progress)"
local BUSY_BOLT = "etcd file is busy (walk in progress)"
local YIELD = "attempt to yield across a C-call boundary"
local MB = 1 << 20

-- A backend holding 10 MiB: write_to calls progress more than once for
-- every destination (every 8 MiB to a file, every 1 MiB to a function).
local function big_backend()
  local be = backend.open_tmp { no_fsync = true }
  be:update(function(tx)
    tx:create_bucket("b")
    for i = 1, 10 do tx:put("b", ("k%02d"):format(i), string.rep(string.char(64 + i), MB)) end
  end)
  return be
end

-- The error fn raises, which must not be a "backend: " one: pcall's message.
local function error_of(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return err
end

-- fn(...) in a coroutine raises YIELD when the callback it is given yields.
local function refuses_yield(fn, ...)
  local args = table.pack(...)
  local ok, err = coroutine.wrap(function() return pcall(fn, table.unpack(args, 1, args.n)) end)()
  assert.is_false(ok)
  assert.is_truthy(tostring(err):find(YIELD, 1, true), tostring(err))
end

-- The snapshot still works: the same bytes as a fresh one, then it closes.
local function usable_then_closed(snap)
  local n = 0
  assert.are.equal(snap:size(), snap:write_to(function(chunk) n = n + #chunk end))
  assert.are.equal(snap:size(), n)
  snap:close()
  H.raises("snapshot is closed", snap.size, snap)
end

-- write_to's three kinds of destination, each with a progress function.
local function destinations()
  return {
    path = function(snap, progress) return snap:write_to(H.tmppath("snap"), progress) end,
    file = function(snap, progress)
      local f <close> = assert(io.tmpfile())
      return snap:write_to(f, progress)
    end,
    ["function"] = function(snap, progress) return snap:write_to(function() end, progress) end,
  }
end

describe("callbacks", function()
  after_each(H.cleanup)

  describe("snap:write_to", function()
    local be
    before_each(function() be = big_backend() end)
    after_each(function() be:close() end)

    for kind, write in pairs(destinations()) do
      it("refuses close() from progress while writing to a " .. kind, function()
        local snap = be:snapshot()
        H.raises(BUSY_SNAP, write, snap, function() snap:close() end)
        usable_then_closed(snap)
      end)

      it("raises 'backend is closed' when progress closes the backend (" .. kind .. ")", function()
        local snap = be:snapshot()
        H.raises("backend is closed", write, snap, function() be:close() end)
        snap:close()
        H.raises("backend is closed", be.snapshot, be)
      end)

      it("passes progress's error on as it is, yields refused (" .. kind .. ")", function()
        local snap = be:snapshot()
        local e = {}
        assert.are.equal(e, error_of(write, snap, function() error(e) end))
        refuses_yield(write, snap, coroutine.yield)
        usable_then_closed(snap)
      end)
    end

    it("refuses close() from the chunk function; the snapshot stays usable", function()
      local snap = be:snapshot()
      H.raises(BUSY_SNAP, snap.write_to, snap, function() snap:close() end)
      H.raises(BUSY_SNAP, snap.write_to, snap, function() getmetatable(snap).__gc(snap) end)
      H.raises(BUSY_SNAP, snap.write_to, snap, function() getmetatable(snap).__close(snap) end)
      usable_then_closed(snap)
    end)

    it("raises 'backend is closed' when the chunk function closes or collects the backend", function()
      local snap = be:snapshot()
      H.raises("backend is closed", snap.write_to, snap, function() be:close() end)
      snap:close()
      local be2 = big_backend()
      snap = be2:snapshot()
      H.raises("backend is closed", snap.write_to, snap, function() getmetatable(be2).__gc(be2) end)
      snap:close()
    end)

    it("a chunk function that raises or yields leaves the snapshot usable", function()
      local snap = be:snapshot()
      local e = setmetatable({}, { __tostring = function() return "mine" end })
      assert.are.equal(e, error_of(snap.write_to, snap, function() error(e) end))
      refuses_yield(snap.write_to, snap, coroutine.yield)
      usable_then_closed(snap)
    end)

    it("may be called again from its own callbacks, and collect garbage there", function()
      local snap = be:snapshot()
      local inner, chunks = 0, 0
      local n = snap:write_to(function()
        chunks = chunks + 1
        if chunks == 1 then inner = snap:write_to(function() collectgarbage() end) end
      end, function() collectgarbage() end)
      assert.are.equal(snap:size(), n)
      assert.are.equal(snap:size(), inner)
      -- A snapshot only the stack holds is not collected while it writes.
      assert.are.equal(n, be:snapshot():write_to(function() collectgarbage() end))
      usable_then_closed(snap)
    end)

    it("raises when progress closes the file it writes to", function()
      local snap <close> = be:snapshot()
      local f = assert(io.tmpfile())
      local other
      H.raises("the file was closed during write_to", snap.write_to, snap, f, function()
        if io.type(f) == "file" then
          f:close()
          other = assert(io.tmpfile())   -- likely the descriptor f had
        end
      end)
      assert.are.equal(0, other:seek("end"), "nothing was written to another file")
      other:close()
    end)
  end)

  describe("f:walk", function()
    local function open() return backend.open_bolt(H.fixture("tiny.db")) end

    -- f still walks as a fresh file does, then closes.
    local function walks_then_closes(f)
      local keys = 0
      f:walk(nil, function() keys = keys + 1 end)
      assert.are.equal(14, keys)
      f:close()
      H.raises("etcd file is closed", f.info, f)
    end

    it("refuses close() from either callback", function()
      local f = open()
      H.raises(BUSY_BOLT, f.walk, f, function() f:close() end)
      H.raises(BUSY_BOLT, f.walk, f, nil, function() f:close() end)
      H.raises(BUSY_BOLT, f.walk, f, function() getmetatable(f).__gc(f) end)
      walks_then_closes(f)
    end)

    it("passes a callback's error on; a yield is refused; the file stays usable", function()
      local f = open()
      local e = {}
      assert.are.equal(e, error_of(f.walk, f, function() error(e) end))
      assert.are.equal(e, error_of(f.walk, f, nil, function() error(e) end))
      refuses_yield(f.walk, f, nil, coroutine.yield)
      refuses_yield(f.walk, f, coroutine.yield)
      walks_then_closes(f)
    end)

    it("may be called again from its callbacks, and collect garbage there", function()
      local f = open()
      local outer, inner = 0, 0
      f:walk(function() collectgarbage() end, function()
        outer = outer + 1
        if outer == 1 then f:walk(nil, function() inner = inner + 1 end) end
      end)
      assert.are.same({ 14, 14 }, { outer, inner })
      local n = 0
      open():walk(nil, function() collectgarbage(); n = n + 1 end)   -- only the stack holds it
      assert.are.equal(14, n)
      walks_then_closes(f)
    end)
  end)

  describe("the logger", function()
    it("is never re-entered: messages the logger's own calls cause wait for the next call", function()
      local be
      local depth, max_depth, calls = 0, 0, 0
      be = backend.open_tmp { logger = function()
        depth, calls = depth + 1, calls + 1
        max_depth = math.max(max_depth, depth)
        if calls < 20 then be:defrag() end   -- logs "defrag started" and "defrag finished"
        depth = depth - 1
      end }
      be:update(function(tx) tx:create_bucket("b") end)
      be:defrag()
      assert.are.equal(1, max_depth)
      assert.are.equal(2, calls, "this call delivers its own two messages only")
      be:stats()
      assert.are.equal(1, max_depth)
      assert.are.equal(6, calls, "the next call delivers the four the logger's defrags logged")
      be:close()
    end)

    it("may close or collect the backend: the call then raises 'backend is closed'", function()
      local be
      be = backend.open_tmp { logger = function() be:close() end }
      be:update(function(tx) tx:create_bucket("b") end)
      be:defrag()   -- delivered after defrag: it has done its work
      H.raises("backend is closed", be.stats, be)
      H.raises("backend is closed", be.defrag, be)
      be:close()

      local gc
      gc = backend.open_tmp { logger = function() getmetatable(gc).__gc(gc) end }
      gc:defrag()
      H.raises("backend is closed", gc.stats, gc)
      gc:close()
    end)

    it("a logger that raises or yields does not fail the call", function()
      for _, logger in ipairs { function() error({}) end, coroutine.yield } do
        local be = backend.open_tmp { logger = logger }
        coroutine.wrap(function()
          be:update(function(tx) tx:create_bucket("b") end)
          be:defrag()
          be:defrag()
        end)()
        assert.are.same({ "b" }, be:view(function(r) return r:buckets() end))
        be:close()
      end
    end)
  end)

  describe("for_each and pairs", function()
    local be
    before_each(function()
      be = backend.open_tmp()
      be:update(function(tx)
        tx:create_bucket("b")
        for i = 1, 600 do tx:put("b", ("%04d"):format(i), "v") end   -- more than one chunk
      end)
    end)
    after_each(function() be:close() end)

    it("stop with 'backend is closed' when the callback closes the backend", function()
      H.raises("backend is closed", be.view, be, function(rtx)
        rtx:for_each("b", function() be:close() end)
      end)
      H.raises("backend is closed", be.snapshot, be)
    end)

    it("stop when the callback closes the tx, in a for_each or a pairs loop", function()
      local crt = be:concurrent_read_tx()
      H.raises("concurrent read tx is closed", crt.for_each, crt, "b", function() crt:close() end)
      local rtx = H.rlocked(be)
      H.raises("read tx is not locked", function()
        for _ in rtx:pairs("b") do rtx:runlock() end
      end)
      local tx = be:batch_tx():lock()
      H.raises("backend is closed", tx.for_each, tx, "b", function() be:close() end)
    end)

    it("nest, yield and pass errors on", function()
      local outer, inner = 0, 0
      be:view(function(rtx)
        rtx:for_each("b", function()
          outer = outer + 1
          if outer == 1 then rtx:for_each("b", function() inner = inner + 1 end) end
        end)
      end)
      assert.are.same({ 600, 600 }, { outer, inner })
      local n = 0
      for _ in coroutine.wrap(function()
        be:view(function(rtx) rtx:for_each("b", coroutine.yield) end)
      end) do n = n + 1 end
      assert.are.equal(600, n)
      local e = {}
      assert.are.equal(e, error_of(be.view, be, function(rtx) rtx:for_each("b", function() error(e) end) end))
      assert.are.equal(0, be:open_read_tx_n(), "view closed its tx")
    end)
  end)
end)
