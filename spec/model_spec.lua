-- The pure-Lua model (lua/backend/model.lua) on its own, then seeded random
-- operation sequences run against the backend with the model's answers as
-- expectations (backend.tools.scenario's random scenarios).
--
--   BACKEND_SEED=n   replay one seed (its config is chosen by the seed)
--   BACKEND_OPS=n    operations per seed (default 500)
--   BACKEND_SEEDS=n  number of seeds when BACKEND_SEED is unset (default 8),
--   BACKEND_FIRST_SEED=n  starting at n (default 1)
--   BACKEND_SCENARIO=file  run a scenario file instead (a failing run saves one)
--
-- A failure names the step, shows the steps before it and saves the scenario.
local H = require "spec.helper"
local model = require "backend.tools.model"

local fmt = string.format

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
-- Random sequences against the backend: scenario.random writes them with the
-- model's answers as expectations, scenario.run checks the backend against them.

local have_scenario, scenario = pcall(require, "backend.tools.scenario")

describe("backend against the model", function()
  if not have_scenario then
    it("needs the C module", function()
      error("require 'backend.tools.scenario' failed: " .. tostring(scenario))
    end)
    return
  end

  -- fails with the failures, the steps before the first one, and a file to replay
  local function run(s, replay)
    local result = scenario.run(s)
    if not result.ok then
      local file = os.tmpname()
      H.write_file(file, scenario.dump(s))
      error(fmt("%s\n  replay: %s, or BACKEND_SCENARIO=%s (the scenario, saved)", scenario.format(result, s),
        replay, file), 0)
    end
  end

  local file = os.getenv("BACKEND_SCENARIO")
  if file then
    it("scenario file " .. file, function() run(scenario.load(file), "BACKEND_SCENARIO=" .. file) end)
    return
  end
  local nops = math.tointeger(tonumber(os.getenv("BACKEND_OPS"))) or 500
  local seeds = {}
  if os.getenv("BACKEND_SEED") then
    seeds[1] = assert(math.tointeger(tonumber(os.getenv("BACKEND_SEED"))), "BACKEND_SEED must be an integer")
  else
    local first = math.tointeger(tonumber(os.getenv("BACKEND_FIRST_SEED"))) or 1
    for seed = first, first + (tonumber(os.getenv("BACKEND_SEEDS")) or 8) - 1 do seeds[#seeds + 1] = seed end
  end
  for _, seed in ipairs(seeds) do
    local s = scenario.random { seed = seed, ops = nops }
    it(s.name, function() run(s, fmt("BACKEND_SEED=%d BACKEND_OPS=%d", seed, nops)) end)
  end
end)
