-- Crash consistency under SIGKILL, by lua/backend/crash.lua: a writer process is
-- killed at random moments, many of them inside a commit, a snapshot or a defrag,
-- and every reopened database must hold all it acknowledged and no half section.
--
--   BACKEND_CRASH_TRIALS=n  trials (default 200; `make stress` runs 1000)
--   BACKEND_SEED=n          replay a run (its configs and kill plans; timing differs)
local H = require "spec.helper"
local backend = require "backend"
local crash = require "spec.support.crash"

describe("crash harness", function()
  teardown(H.cleanup)

  -- 40 sections written in this process, then damaged by tamper(tx)
  local function database(tamper, focus)
    local path = H.tmppath()
    local be <close> = backend.open(path)
    crash.write(be, { sections = 40, window = 16, snapshot = path .. ".snapshot", focus = focus })
    if tamper then be:update(tamper) end
    return path, be:stats().rollbacks
  end

  it("sections written in full and rolled back leave nothing behind", function()
    local path, rollbacks = database(nil, "rollback")   -- one section in 3 rolled back first
    assert.is_true(rollbacks >= 5, "rollbacks: " .. rollbacks)
    assert.are.equal(40, crash.verify(path, 40).count)
  end)

  it("an interrupt while it checks is raised as it is, not as a finding", function()
    local path, open = database(), backend.open
    backend.open = function() error("interrupted!", 0) end
    local ok, err = pcall(crash.verify, path, 40)
    backend.open = open
    assert.are.same({ false, "interrupted!" }, { ok, err })
  end)

  it("its checks pass a whole database and count defrag's leftover files", function()
    local path = database()
    local leftover = H.dead_leftover(path)
    local checked = crash.verify(path, 40)
    assert.are.equal(40, checked.count)
    assert.are.equal(1, checked.temps)
    assert.is_false(H.exists(leftover))
  end)

  it("its checks catch a lost write, a half section and a stray key", function()
    local lost = H.error_of(crash.verify, database(), 41)
    assert.is_truthy(lost:find("count is 40, but 41 was acknowledged", 1, true), lost)
    local half = H.error_of(crash.verify, database(function(tx)
      tx:delete("side", (tx:range("side", "s/0000000040/", "s/0000000041/", 1))[1])
    end), 40)
    assert.is_truthy(half:find("section 40 is half there", 1, true), half)
    local stray = H.error_of(crash.verify, database(function(tx) tx:put("main", "log/0000000041", "") end), 40)
    assert.is_truthy(stray:find("main holds", 1, true), stray)
  end)

  -- LMDB writes a new file's two meta pages in one pwrite, which SIGKILL can stop
  -- between the pages; nothing was committed to such a file yet
  it("a database whose creation was killed after its first page opens", function()
    local fresh = H.tmppath()
    backend.open(fresh):close()
    local pages = H.read_file(fresh)
    local path = H.tmppath()
    H.write_file(path, pages:sub(1, #pages // 2))
    local be <close> = backend.open(path)
    crash.write(be, { sections = 5, window = 16, snapshot = path .. ".snapshot" })
    be:close()
    assert.are.equal(5, crash.verify(path, 5).count)
  end)

  it("loses nothing acknowledged and leaves no section half there", function()
    local seed = os.getenv("BACKEND_SEED")
    local result = crash.run {
      trials = math.tointeger(tonumber(os.getenv("BACKEND_CRASH_TRIALS"))) or 200,
      seed = seed and assert(math.tointeger(tonumber(seed)), "BACKEND_SEED must be an integer"),
    }
    io.write("\n", crash.summary(result), "\n")
  end)
end)
