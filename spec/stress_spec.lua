-- Races between the Lua thread and the background committer. Each check is exact
-- (no timing in the assertions); only the chance of hitting a race depends on
-- the machine. BACKEND_STRESS=n multiplies the amount of work (default 1).
local H = require "spec.helper"
local backend = require "backend"
local model = require "backend.tools.model"

local SCALE = tonumber(os.getenv("BACKEND_STRESS")) or 1
local fmt = string.format

describe("stress: the committer works while the Lua thread writes and reads", function()
  teardown(H.cleanup)

  -- each section's unlock hands a batch to the committer (pending >= batch_limit);
  -- the next section's writes must be read back at once, by every reader
  local function own_writes(cfg, sections)
    local be = backend.open_tmp(cfg)
    finally(function() be:close() end)
    local m = model.new()
    local tx = be:batch_tx()
    tx:lock(); m:lock()
    tx:create_bucket("b"); m:create_bucket("b")
    tx:unlock(); m:unlock()
    for i = 1, sections do
      tx:lock(); m:lock()
      for j = 1, 1 + i % 4 do
        local k = "k" .. (i * 7 + j) % 5
        if (i + j) % 5 == 0 then
          tx:delete("b", k); m:delete("b", k)
        else
          local v = i .. "." .. j
          tx:put("b", k, v); m:put("b", k, v)
        end
        local got, want = tx:get("b", k), m:get("b", k)
        if got ~= want then
          error(fmt("section %d write #%d: BatchTx get(%q) = %s right after the write, want %s",
            i, j, k, tostring(got), tostring(want)), 0)
        end
      end
      tx:unlock(); m:unlock()
      if i % 16 == 0 then
        local ctx = be:concurrent_read_tx()
        local ks, vs = ctx:range("b", "", "\255")
        ctx:close()
        local mk, mv = m:published():range("b", "", "\255")
        assert.are.same(mk, ks, "section " .. i)
        assert.are.same(mv, vs, "section " .. i)
      end
    end
    be:force_commit()
    local mk, mv = m:range("b", "", "\255")
    for n, k in ipairs(mk) do assert.are.equal(mv[n], be:_committed_get("b", k)) end
  end

  it("limit commits handed over at unlock (batch_limit 3)", function()
    own_writes({ batch_interval = 3600, batch_limit = 3 }, 30000 * SCALE)
  end)

  it("limit and timer commits (batch_limit 3, batch_interval 1 ms)", function()
    own_writes({ batch_interval = 0.001, batch_limit = 3 }, 30000 * SCALE)
  end)

  it("timer commits only (batch_interval 1 ms)", function()
    own_writes({ batch_interval = 0.001, batch_limit = 1000000000 }, 30000 * SCALE)
  end)

  it("readers made between sections see exactly the published writes", function()
    local be = backend.open_tmp { batch_interval = 0.001, batch_limit = 2 }
    finally(function() be:close() end)
    local m = model.new()
    be:update(function(tx) tx:create_bucket("b") end)
    m:lock(); m:create_bucket("b"); m:unlock()
    local held = {}
    for i = 1, 5000 * SCALE do
      local tx = be:batch_tx():lock()
      m:lock()
      local k = "k" .. i % 13
      if i % 3 == 0 then tx:delete("b", k); m:delete("b", k) else tx:put("b", k, "v" .. i); m:put("b", k, "v" .. i) end
      tx:unlock(); m:unlock()
      if i % 7 == 0 then
        held[#held + 1] = { ctx = be:concurrent_read_tx(), view = m:concurrent_read_tx(), at = i }
      end
      if #held > 0 and i % 5 == 0 then
        local h = held[1 + i % #held]
        local ks = h.ctx:range("b", "", "\255")
        assert.are.same((h.view:range("b", "", "\255")), ks, fmt("section %d, view of section %d", i, h.at))
      end
      if #held > 8 then table.remove(held, 1).ctx:close() end
      local rtx = H.rlocked(be)
      local got = rtx:get("b", k)
      rtx:runlock()
      assert.are.equal(m:published():get("b", k), got, "ReadTx after section " .. i)
    end
    for _, h in ipairs(held) do h.ctx:close() end
  end)
end)
