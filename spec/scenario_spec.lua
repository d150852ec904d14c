-- backend.scenario: scenarios as tables and files, failures named by step,
-- malformed scenarios refused, random scenarios deterministic per seed, and
-- dump/load round trips. spec/scenarios/*.lua run here too.
local H = require "spec.helper"
local backend = require "backend"
local scenario = require "backend.tools.scenario"

local HOUR = 3600

local function run_ok(s)
  local result = scenario.run(s)
  assert(result.ok, scenario.format(result, s))
  return result
end

-- The one failure of running s: its step and message.
local function failure_of(s)
  local result = scenario.run(s)
  assert.is_false(result.ok)
  assert.are.equal(1, #result.failures, scenario.format(result))
  return result.failures[1].step, result.failures[1].message
end

local function scenario_of(...)
  return { name = "test", config = { batch_interval = HOUR }, steps = { ... } }
end

describe("backend.scenario", function()
  teardown(H.cleanup)

  it("runs a table scenario and reports what it ran", function()
    local result = run_ok(scenario_of(
      { "create_bucket", "b" },
      { "put", "b", "k", "v" },
      { "get", "b", "k", expect = "v" },
      { "range", "b", "a", "z", expect = { { "k", "v" } } },
      { "delete", "b", "k" },
      { "get", "b", "k", expect = false },
      { "force_commit" },
      { "hash", expect = backend.crc32c("b") }))
    assert.are.same({ ok = true, name = "test", steps = 8, failures = {} }, result)
    assert.are.equal("test: ok, 8 steps run", scenario.format(result))
  end)

  it("names the step whose expectation failed, and what differed", function()
    local step, message = failure_of(scenario_of(
      { "create_bucket", "b" },
      { "put", "b", "k", "v" },
      { "get", "b", "k", expect = "w" }))
    assert.are.equal(3, step)
    assert.are.equal('get("b", "k"): got "v", want "w"', message)
    step, message = failure_of(scenario_of(
      { "create_bucket", "b" },
      { "put", "b", "a", "1" }, { "put", "b", "b", "2" },
      { "pairs", "b", via = "concurrent", expect = { { "a", "1" }, { "b", "3" }, { "c", "4" } } }))
    assert.are.equal(4, step)
    assert.are.equal('pairs("b") via="concurrent": entry #2 is { "b", "2" }, want { "b", "3" } (2 entries, want 3)',
      message)
  end)

  it("goes on after a failure, up to max_failures, and formats them with the steps before", function()
    local s = scenario_of(
      { "create_bucket", "b" },
      { "put", "nope", "k", "v" },
      { "pending", expect = 7 },
      { "get", "b", "k", expect = "v" },
      { "put", "b", "k", "v" })
    local result = scenario.run(s)
    assert.are.equal(5, result.steps)
    assert.are.same({
      { step = 2, message = "put(\"nope\", \"k\", \"v\"): raised backend: bucket 'nope' does not exist" },
      { step = 3, message = "pending(): got 1, want 7" },
      { step = 4, message = 'get("b", "k"): got false, want "v"' },
    }, result.failures)
    assert.are.equal(table.concat({
      "test: FAILED, 5 steps run",
      "  the steps before the first failure:",
      '    1 create_bucket("b")',
      "  step 2: put(\"nope\", \"k\", \"v\"): raised backend: bucket 'nope' does not exist",
      "  step 3: pending(): got 1, want 7",
      '  step 4: get("b", "k"): got false, want "v"',
    }, "\n"), scenario.format(result, s))
    local stopped = scenario.run(s, { max_failures = 2 })
    assert.are.equal(3, stopped.steps)
    assert.are.equal(2, #stopped.failures)
  end)

  it("error steps: the error must come, say 'backend: ' and contain the text", function()
    run_ok(scenario_of({ "error", { "put", "nope", "k", "v" }, expect = "does not exist" }))
    local step, message = failure_of(scenario_of(
      { "create_bucket", "b" },
      { "error", { "put", "b", "k", "v" }, expect = "does not exist" }))
    assert.are.equal(2, step)
    assert.are.equal('error(put("b", "k", "v")): did not raise', message)
    step, message = failure_of(scenario_of({ "error", { "delete", "nope", "k" }, expect = "is closed" }))
    assert.are.equal(1, step)
    assert.are.equal("error(delete(\"nope\", \"k\")): raised \"backend: bucket 'nope' does not exist\", "
      .. 'want an error containing "is closed"', message)
    -- a step inside that fails is that failure, not the error looked for
    step, message = failure_of(scenario_of(
      { "create_bucket", "b" },
      { "error", { "await_commit", 0.05 }, expect = "pending" }))
    assert.are.equal(2, step)
    assert.are.equal("error(await_commit(0.05)): 1 writes still pending", message)
  end)

  it("checks the backend with backend.check", function()
    run_ok(scenario_of({ "create_bucket", "b" }, { "put", "b", "k", "v" }, { "check", defrag = true }))
  end)

  it("refuses malformed scenarios before running them", function()
    local cases = {
      { { { "pt", "b", "k", "v" } }, "step 1: unknown op \"pt\"" },
      { { { "lock" }, { "put", "b", 1, "v" } }, "step 2: argument #2 of put must be a string, got number" },
      { { { "get", "b", "k", expcet = "v" } }, "step 1: get takes no option expcet" },
      { { { "range", "b", "k", via = "committed" } }, "step 1: option via of range cannot be \"committed\"" },
      { { { "put", "b", "k", "v", expect = "v" } }, "step 1: put returns nothing to expect" },
      { { { "get", "b", "k", expect = 1 } }, "step 1: expect of get must be a string or false, got number" },
      { { { "put", "b", "k", "v", "w" } }, "step 1: put takes 3 arguments, got 4" },
      { { "lock" }, "step 1 is a string, not a table" },
      { { { "error", { "get", "b", "k", expect = "x" } } }, "step 1: the step inside error has an expect" },
      { { { "error", { "nope" } } }, "step 1 (inside error): unknown op \"nope\"" },
    }
    for _, case in ipairs(cases) do
      local err = H.raises(case[2], scenario.run, { steps = case[1] })
      assert.are.equal("backend: scenario: ", err:sub(1, 19))
    end
    H.raises("scenario: unknown field stpes", scenario.run, { stpes = {} })
    H.raises("scenario: no steps", scenario.run, { name = "x" })
    H.raises("scenario: a scenario is a table, got string", scenario.run, "steps")
  end)

  describe("files", function()
    local p = assert(io.popen("ls spec/scenarios/*.lua"))
    for path in p:lines() do
      it(path, function() run_ok(scenario.load(path)) end)
    end
    p:close()

    it("load runs the file without os and io, and says what is wrong with one", function()
      local dir = H.tmpdir()
      local function load(source)
        local path = dir .. "/s.lua"
        H.write_file(path, source)
        return scenario.load(path)
      end
      assert.are.same({ steps = { { "put", "b", "k", string.rep("v", 3) } } },
        load("return { steps = { { 'put', 'b', 'k', ('v'):rep(3) } } }"))
      H.raises("global 'os'", load, "os.remove('x') return { steps = {} }")
      H.raises("global 'io'", load, "return { steps = { io.read() } }")
      H.raises("global 'require'", load, "return require 'backend'")
      H.raises("s.lua:1:", load, "return {")
      H.raises("s.lua: a scenario is a table, got nil", load, "x = 1")
      H.raises("s.lua: step 1: unknown op", load, "return { steps = { { 'nope' } } }")
      H.raises("scenario: " .. dir .. "/none.lua: No such file", scenario.load, dir .. "/none.lua")
    end)
  end)

  describe("random", function()
    it("is deterministic per seed, and chooses the seed's config", function()
      local a, b = scenario.random { seed = 3, ops = 200 }, scenario.random { seed = 3, ops = 200 }
      assert.are.equal(scenario.dump(a), scenario.dump(b))
      assert.are_not.equal(scenario.dump(a), scenario.dump(scenario.random { seed = 4, ops = 200 }))
      assert.are.equal("random seed 3, small map (mmap_size 64 KiB, interval 5 ms, limit 100), 200 ops", a.name)
      assert.are.same(scenario.configs[3].config, a.config)
      local c = scenario.random { seed = 3, ops = 200, config = { batch_interval = 0.05 } }
      assert.are.equal("random seed 3, config { batch_interval = 0.05 }, 200 ops", c.name)
    end)

    it("checks counts only when nothing commits in the background", function()
      local function counts(s)
        local n = 0
        for _, step in ipairs(s.steps) do
          if step[1] == "commits" or step[1] == "pending" and step.expect > 0 then n = n + 1 end
        end
        return n
      end
      assert.is_true(counts(scenario.random { seed = 1, ops = 300 }) > 20)   -- quiet
      assert.are.equal(0, counts(scenario.random { seed = 2, ops = 300 }))   -- busy
      local s = scenario.random { seed = 2, ops = 300, config = { batch_interval = HOUR } }
      assert.is_true(counts(s) > 20)
      run_ok(s)
    end)

    it("runs clean against the backend and fails where the backend is not what the model says", function()
      local s = scenario.random { seed = 11, ops = 300 }
      run_ok(s)
      for i, step in ipairs(s.steps) do
        if step[1] == "for_each" and #step.expect > 0 and #step.expect[#step.expect][2] < 20 then
          step.expect[#step.expect][2] = step.expect[#step.expect][2] .. "!"
          local result = scenario.run(s)
          assert.are.equal(i, result.failures[1].step)
          assert.is_truthy(result.failures[1].message:find('^for_each%(.-: entry #%d+ is .*!" }'),
            result.failures[1].message)
          return
        end
      end
      error("no for_each with data in seed 11")
    end)
  end)

  describe("dump", function()
    it("round-trips through a file, binary strings and all", function()
      local bytes = {}
      for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
      local all = table.concat(bytes)
      local s = scenario_of(
        { "create_bucket", "b\0\1" },
        { "put", "b\0\1", all:sub(2), all },
        { "put", "b\0\1", "\255", string.rep("\0", 100) },
        { "put", "b\0\1", "\254", "ab" .. string.rep("\0", 40) .. "c" },
        { "range", "b\0\1", "\1", nil, 5, expect = { { "\1", "x" } } },
        { "hash", ignores = { ["b\0\1"] = { ["\255"] = true } }, view = "nope" },
        { "error", { "get", "b\0\1", "k", via = "read" }, expect = "a\nb" })
      s.config.batch_interval = 0.25
      local path = H.tmppath("s.lua")
      local source = scenario.dump(s)
      assert.is_nil(source:find("[^\n\32-\126]"), "the source is printable ASCII")
      assert.is_truthy(source:find('"\\255", string.rep("\\000", 100) }', 1, true), source)
      assert.is_truthy(source:find('"ab" .. string.rep("\\000", 40) .. "c"', 1, true), source)
      H.write_file(path, source)
      local back = scenario.load(path)
      assert.are.same(s, back)
      assert.are.equal(source, scenario.dump(back))
    end)

    it("saves a random scenario that replays the same", function()
      local s = scenario.random { seed = 6, ops = 150 }
      local path = H.tmppath("seed6.lua")
      H.write_file(path, scenario.dump(s))
      local back = scenario.load(path)
      assert.are.same(s, back)
      assert.are.equal(#s.steps, run_ok(back).steps)
    end)
  end)

  it("leaves no files behind", function()
    local out, left, errfile = H.spawn_in_tmpdir [[
      local scenario = require "backend.tools.scenario"
      local result = scenario.run(scenario.load("spec/scenarios/snapshot_defrag_reopen.lua"))
      print(result.ok)
    ]]
    assert.are.equal("true\n", out, H.child_stderr(errfile))
    assert.are.equal("", left, "left in TMPDIR")
  end)
end)
