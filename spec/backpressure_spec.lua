-- max_buffered_bytes bounds the memory of uncommitted writes: lock() waits
-- while it is full, nothing waits inside a section, nothing is lost. (The
-- waiting itself, made certain by a full disk, is tests/failure_test.c's.)
local H = require "spec.helper"
local backend = require "backend"

local MiB = 1024 * 1024

describe("backpressure", function()
  after_each(H.cleanup)

  it("lock() returns only with the buffer under max_buffered_bytes; nothing is lost", function()
    local be <close> = backend.open { path = H.tmppath(), max_buffered_bytes = MiB, batch_interval = 3600 }
    be:update(function(tx) tx:create_bucket("b") end)
    local tx, v = be:batch_tx(), string.rep("v", 1000)
    -- 40 sections of 256 kB: 10 times the bound, faster than commits with fsyncs.
    for s = 0, 39 do
      tx:lock()
      -- Only this writer adds to the buffer, and it holds the lock: what lock()
      -- saw still holds.
      assert.is_true(be:stats().buffered_bytes < MiB, "section " .. s)
      for i = 1, 256 do tx:put("b", string.format("%08d", s * 256 + i), v) end
      tx:unlock()
    end
    be:force_commit()
    local st = be:stats()
    assert.are.equal(0, st.pending)
    assert.is_true(math.type(st.backpressure_waits) == "integer" and st.backpressure_waits <= 40)
    assert.are.equal(st.backpressure_waits > 0, st.backpressure_seconds > 0)
    be:view(function(r)
      local keys = r:range("b", "", "\255")
      assert.are.equal(40 * 256, #keys)
      assert.are.equal(v, r:get("b", "00010240"))
    end)
  end)

  it("a section over the bound goes through: writes never wait inside a section", function()
    local be <close> = backend.open { path = H.tmppath(), max_buffered_bytes = MiB, batch_interval = 3600 }
    local v = string.rep("x", 4096)
    be:update(function(tx)
      tx:create_bucket("b")
      for i = 1, 1024 do tx:put("b", string.format("%08d", i), v) end   -- 4 MiB
      assert.is_true(be:stats().buffered_bytes > 4 * MiB)
    end)
    be:update(function(tx) tx:put("b", "after", "y") end)
    be:force_commit()
    assert.are.equal(0, be:stats().pending)
    assert.are.equal(1025, #be:view(function(r) return r:range("b", "", "\255") end))
  end)

  it("Ctrl-C (a real SIGINT) during force_commit() raises 'interrupted!' there; the commit goes on", function()
    local out, code, errfile = H.interrupt([[
      local backend = require "backend"
      local be = backend.open { path = arg[1], batch_interval = 3600, batch_limit = 1 << 40 }
      be:update(function(tx)
        tx:create_bucket("b")
        for i = 1, 300000 do tx:put("b", string.format("k%07d", i), string.rep("v", 1000)) end
      end)
      ready()
      local ok, err = pcall(be.force_commit, be)
      io.stdout:write(tostring(ok), " ", tostring(backend.interrupted(err)), " ",
        tostring(be:stats().pending > 0), "\n")
      be:force_commit()
      io.stdout:write("done ", be:stats().pending, " ", be:commits(), "\n")
      be:close()
    ]], 0.1, H.tmppath("interrupted.db"))
    -- raised while the commit ran (writes still pending), which then ended as one commit
    assert.are.same({ 0, "false true true\ndone 0 1\n" }, { code, out }, H.read_file(errfile))
  end)
end)
