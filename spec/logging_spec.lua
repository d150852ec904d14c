-- The logger: called on the Lua thread with (level, message, fields), or
-- "stderr" for JSON lines.
local backend = require "backend"
local H = require "spec.helper"

local LEVELS = { debug = true, info = true, warn = true, error = true }

describe("logging", function()
  after_each(H.cleanup)

  it("delivers defrag and map growth messages to a logger function", function()
    local seen = {}
    local be <close> = backend.open {
      path = H.tmppath(), mmap_size = 65536, batch_interval = 3600,
      logger = function(level, message, fields)
        assert.is_true(LEVELS[level], level)
        assert.are.equal("string", type(message))
        assert.are.equal("table", type(fields))
        seen[#seen + 1] = level .. ": " .. message
      end,
    }
    be:update(function(tx)
      tx:create_bucket("b")
      for i = 1, 2000 do tx:put("b", string.format("%06d", i), string.rep("v", 200)) end
    end)
    be:force_commit()
    be:defrag()
    local all = table.concat(seen, "\n")
    assert.is_truthy(all:find("info: map grown", 1, true), all)
    assert.is_truthy(all:find("info: defrag started", 1, true), all)
    assert.is_truthy(all:find("info: defrag finished", 1, true), all)
    assert.is_true(be:stats().map_grows > 0)
  end)

  it("Ctrl-C while the logger runs is not lost: the call raises it once everything is delivered", function()
    -- lua.c raises "interrupted!" (after a position) at the next instruction
    -- after SIGINT: here the logger itself; other messages still arrive
    for _, interrupt in ipairs { "interrupted!", "app.lua:7: interrupted!" } do
      local seen, raised = {}, false
      local be <close> = backend.open {
        path = H.tmppath(), batch_interval = 3600,
        logger = function(_, message)
          seen[#seen + 1] = message
          if not raised then raised = true; error(interrupt, 0) end
        end,
      }
      be:update(function(tx) tx:create_bucket("b"); tx:put("b", "k", "v") end)
      local ok, err = pcall(be.defrag, be)   -- logs "defrag started" and "finished"
      assert.are.same({ false, interrupt }, { ok, err })
      assert.is_true(#seen >= 2, table.concat(seen, "\n"))
      assert.are.equal("v", be:view(function(r) return r:get("b", "k") end))
      be:defrag()   -- the next call delivers and works as usual
    end
  end)

  it("a logger that raises does not fail the storage call", function()
    local be <close> = backend.open { path = H.tmppath(), logger = function() error("boom") end }
    be:update(function(tx) tx:create_bucket("b"); tx:put("b", "k", "v") end)
    be:defrag()
    assert.are.equal("v", be:view(function(r) return r:get("b", "k") end))
  end)

  it('"stderr" writes one JSON object per line', function()
    local child, errfile = H.spawn([[
      local backend = require "backend"
      local be = backend.open { path = arg[1], logger = "stderr" }
      be:update(function(tx) tx:create_bucket("b"); tx:put("b", "k", "v") end)
      be:defrag()
      be:close()
      print("done")
    ]], H.tmppath())
    assert.are.equal("done", child:read("l"))
    child:close()
    local lines = {}
    for line in H.read_file(errfile):gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.is_true(#lines >= 2, H.read_file(errfile))
    for _, line in ipairs(lines) do
      assert.is_truthy(line:match('^{.*"level":"%a+".*"msg":".*".*}$'), line)
    end
    assert.is_truthy(H.read_file(errfile):find('"msg":"defrag finished', 1, true))
  end)

  it("rejects a logger that is neither a function nor \"stderr\"", function()
    H.raises("config.logger", backend.open, { path = H.tmppath(), logger = "stdout" })
    H.raises("config.logger", backend.open, { path = H.tmppath(), logger = 42 })
  end)
end)
