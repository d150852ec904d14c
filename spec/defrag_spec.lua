-- Online defrag from Lua: be:defrag() and be:defrag{ background = true }'s
-- DefragJob: writes and reads go on, views and snapshots opened before read on,
-- the job's methods, one at a time, cancel, close, bad options.
local H = require "spec.helper"
local backend = require "backend"

local fmt = string.format

-- A database with free pages: n keys written, every other one deleted.
local function fragmented(n)
  local be = backend.open { path = H.tmppath("defrag.db"), batch_interval = 3600 }
  be:update(function(tx)
    tx:create_bucket("b")
    for i = 1, n do tx:put("b", fmt("k%07d", i), string.rep("v", 100)) end
  end)
  be:force_commit()
  be:update(function(tx)
    for i = 1, n, 2 do tx:delete("b", fmt("k%07d", i)) end
  end)
  be:force_commit()
  return be
end

local function count(tx, bucket, from, to)
  return #(tx:range(bucket, from or "", to or "\255"))
end

-- A child's start: `be`, a database at arg[1] of 300k values of 1000 bytes.
local BIG_DB = [[
  local backend = require "backend"
  local be = backend.open { path = arg[1], batch_interval = 3600 }
  be:update(function(tx)
    tx:create_bucket("b")
    for i = 1, 300000 do tx:put("b", string.format("k%07d", i), string.rep("v", 1000)) end
  end)
]]

describe("defrag", function()
  after_each(H.cleanup)

  it("in the background while writing: views and snapshots read on, nothing lost", function()
    local be = fragmented(40000)
    local hash0, size0 = be:hash(), be:size()
    local view = be:concurrent_read_tx()
    local snap = be:snapshot()
    local job = be:defrag { background = true }
    assert.are.equal("backend.DefragJob (running)", tostring(job))
    assert.is_true(be:stats().defrag_inflight)
    H.raises("a defrag of this backend is already running", be.defrag, be)
    H.raises("a defrag of this backend is already running", be.defrag, be, { background = true })
    local tx, n, last = be:batch_tx(), 0, 0
    while not job:done() do
      n = n + 1
      tx:lock()
      tx:put("b", fmt("w%07d", n), "during")
      tx:unlock()
      local copied, total = job:progress()
      assert.is_true(copied >= last and copied <= total)
      last = copied
    end
    local r = job:wait()
    assert.are.same(r, job:wait())   -- any number of times
    assert.are.equal("backend.DefragJob (done)", tostring(job))
    assert.is_false(be:stats().defrag_inflight)
    assert.are.equal(size0, r.size_before)
    assert.is_true(r.size_after < size0)
    assert.is_true(r.seconds > 0 and r.swap_seconds > 0 and r.swap_seconds <= r.seconds)
    assert.are.equal(0, r.pause_seconds)   -- the buffers never filled up
    local copied, total = job:progress()
    assert.is_true(total > 0)
    assert.are.equal(total, copied)
    -- before: what they saw, from the replaced file
    assert.are.equal(20000, count(view, "b", "k", "l"))
    assert.are.equal(0, count(view, "b", "w", "x"))
    local copy = H.tmppath("snap.db")
    snap:write_to(copy)
    snap:close()
    view:close()
    local sb <close> = backend.open { path = copy, readonly = true }
    assert.are.equal(hash0, sb:hash())
    -- after: everything
    be:view(function(v)
      assert.are.equal(n, count(v, "b", "w", "x"))
      assert.are.equal(20000, count(v, "b", "k", "l"))
    end)
    be:force_commit()
    local hash = be:hash()
    local path = be:path()
    be:close()
    assert.are.same({}, H.ls(path:match("(.*)/"), "defrag.db.backend-tmp."))
    local again <close> = backend.open { path = path }
    assert.are.equal(hash, again:hash())
    job:close()
    assert.are.equal("backend.DefragJob (closed)", tostring(job))
    H.raises("defrag job is closed", job.wait, job)
  end)

  it("be:defrag() commits first and returns the result", function()
    local be <close> = fragmented(2000)
    be:update(function(tx) tx:put("b", "pending", "yes") end)
    assert.is_true(be:stats().pending > 0)
    local r = be:defrag()
    assert.are.equal(0, be:stats().pending)
    assert.are.equal("yes", be:_committed_get("b", "pending"))
    assert.is_true(r.size_after < r.size_before)
    assert.are.equal(be:size(), r.size_after)
  end)

  it("cancel: the file stays as it was, the copy is gone", function()
    local be = fragmented(100000)
    local hash, path = be:hash(), be:path()
    local job = be:defrag { background = true }
    job:cancel()
    H.raises("defrag cancelled", job.wait, job)
    assert.is_true(job:done())
    assert.are.equal(hash, be:hash())
    assert.are.same({}, H.ls(path:match("(.*)/"), "defrag.db.backend-tmp."))
    -- a new one can start, and close cancels it, losing nothing
    local job2 <close> = be:defrag { background = true }
    be:update(function(tx) tx:put("b", "last", "write") end)
    be:close()
    assert.is_true(job2:done())
    local ok, err = pcall(job2.wait, job2)
    assert.is_true(ok or err:find("defrag cancelled", 1, true) ~= nil, err)
    local again <close> = backend.open { path = path }
    assert.are.equal("write", again:read_tx():rlock():get("b", "last"))
  end)

  it("a collected job goes on; the backend's close still joins it", function()
    local be = fragmented(20000)
    local path = be:path()
    be:defrag { background = true }
    collectgarbage()
    collectgarbage()
    local hash = be:hash()
    be:close()
    local again <close> = backend.open { path = path }
    assert.are.equal(hash, again:hash())
  end)

  -- The descriptors this process holds on path's replaced files.
  local function replaced_fds(path)
    local uv, n = require "luv", 0
    local dir = assert(uv.fs_scandir("/proc/self/fd"))
    for fd in function() return uv.fs_scandir_next(dir) end do
      local target = uv.fs_readlink("/proc/self/fd/" .. fd)
      if target and (target == path .. " (deleted)" or target == path .. "-lock (deleted)") then n = n + 1 end
    end
    return n
  end

  it("the replaced file closes after the last view reading it, and by the backend's close at the latest", function()
    local be = fragmented(20000)
    local path = require("luv").fs_realpath(be:path())
    for _, close_backend in ipairs { false, true } do
      local view <close> = be:concurrent_read_tx()
      assert.are.equal(0, replaced_fds(path))
      be:defrag()
      -- the view holds the old file (its data and lock files) open
      assert.is_true(replaced_fds(path) >= 2)
      assert.are.equal(10000, count(view, "b"))
      view:close()
      if close_backend then
        be:close()
        assert.are.equal(0, replaced_fds(path))
      else
        assert.is_true(H.wait_until(function() return replaced_fds(path) == 0 end), "still open")
      end
    end
  end)

  it("a program the application starts holds no descriptor of the database's files, nor of a replaced one's",
    function()
    local be = fragmented(20000)
    local path = require("luv").fs_realpath(be:path())
    local function inherited()   -- the descriptors of path's files a started program has
      local p = assert(io.popen("ls -l /proc/self/fd"))
      local listing = p:read("a")
      p:close()
      assert.truthy(listing:find("->", 1, true), listing)
      return select(2, listing:gsub(path:gsub("%p", "%%%0"), ""))
    end
    assert.are.equal(0, inherited())
    local view <close> = be:concurrent_read_tx()
    be:defrag()
    assert.is_true(replaced_fds(path) >= 2)   -- held here by the view
    assert.are.equal(0, inherited())
    view:close()
    be:close()
  end)

  it("a process ends cleanly with a replaced file still closing, on a reaper its close started", function()
    for _, ending in ipairs { "os.exit(0, true)", "os.exit(0)", "" } do
      local child, errfile = H.spawn([[
        local backend, uv = require "backend", require "luv"
        local function reapers()   -- the library names its threads
          local n, dir = 0, assert(uv.fs_scandir("/proc/self/task"))
          for tid in function() return uv.fs_scandir_next(dir) end do
            local f = io.open("/proc/self/task/" .. tid .. "/comm")
            if f then n = n + (f:read("l") == "bk-reaper" and 1 or 0); f:close() end
          end
          return n
        end
        local be = backend.open { path = arg[1], batch_interval = 3600 }
        be:update(function(tx)
          tx:create_bucket("b")
          for i = 1, 50000 do tx:put("b", string.format("k%07d", i), string.rep("v", 1000)) end
        end)
        be:update(function(tx) for i = 1, 50000, 2 do tx:delete("b", string.format("k%07d", i)) end end)
        local view = be:concurrent_read_tx()
        be:defrag()
        local before = reapers()
        view:close()   -- the old file's close goes to the reaper, a thread started now
        io.stdout:write("reapers ", before, " then ", reapers(), "\n")
        ]] .. ending, H.tmppath("ending.db"))
      local out = child:read("a")
      local _, _, code = child:close()
      assert.are.same({ "reapers 0 then 1\n", 0, "" }, { out, code, H.read_file(errfile) }, ending)
    end
  end)

  it("Ctrl-C (a real SIGINT) during job:wait() raises 'interrupted!' there; the defrag goes on", function()
    local out, code, errfile = H.interrupt(BIG_DB .. [[
      be:force_commit()
      local job = be:defrag { background = true }
      ready()
      local ok, err = pcall(job.wait, job)
      io.stdout:write(tostring(ok), " ", tostring(backend.interrupted(err)), " ", tostring(job:done()), "\n")
      local r = job:wait()
      io.stdout:write("done ", tostring(r.size_after > 0), " ", be:open_read_tx_n(), "\n")
      be:close()
    ]], 0.1, H.tmppath("interrupted.db"))
    -- raised while the job ran (not as it ended), and the job went on to the end
    assert.are.same({ 0, "false true false\ndone true 0\n" }, { code, out }, H.read_file(errfile))
  end)

  it("Ctrl-C during a blocking be:defrag() cancels it and raises 'interrupted!': the file stays as it was", function()
    local path = H.tmppath("interrupted.db")
    -- The SIGINT comes a quarter into the defrag: timed first on a copy of the same data.
    local out, code, errfile = H.interrupt([[
      local backend = require "backend"
      local function build(path)
        local be = backend.open { path = path, batch_interval = 3600 }
        be:update(function(tx)
          tx:create_bucket("b")
          for i = 1, 300000 do tx:put("b", string.format("k%07d", i), string.rep("v", 1000)) end
        end)
        be:update(function(tx) for i = 1, 300000, 2 do tx:delete("b", string.format("k%07d", i)) end end)
        be:force_commit()
        return be
      end
      local twin = build(arg[1] .. ".twin")
      local t0 = backend.monotonic()
      twin:defrag()
      local took = backend.monotonic() - t0
      twin:close()
      local be = build(arg[1])
      local hash, size = be:hash(), be:size()
      ready(took / 4)
      local ok, err = pcall(be.defrag, be)
      io.stdout:write(tostring(ok), " ", tostring(backend.interrupted(err)), " ",
        tostring(be:hash() == hash), " ", tostring(be:size() == size), "\n")
      local r = be:defrag()   -- the next one runs to the end
      io.stdout:write("done ", tostring(r.size_after < size), " ", tostring(be:hash() == hash), "\n")
      be:close()
    ]], 0, path)
    -- the size unchanged: cancelled, not run to the end first
    assert.are.same({ 0, "false true true true\ndone true true\n" }, { code, out }, H.read_file(errfile))
    assert.are.same({}, H.ls(path:match("(.*)/"), "interrupted.db.backend-tmp."))
  end)

  it("bad options raise; read-only and closed backends refuse", function()
    local be = fragmented(10)
    H.raises("unknown option", be.defrag, be, { backgrund = true })
    H.raises("opts.background must be a boolean", be.defrag, be, { background = 1 })
    H.raises("to 'defrag' (table expected, got string)", be.defrag, be, "background")
    local tx = be:batch_tx():lock()
    H.raises("unlock or rollback first", be.defrag, be, { background = true })
    tx:unlock()
    local path = be:path()
    be:close()
    H.raises("backend is closed", be.defrag, be)
    local ro <close> = backend.open { path = path, readonly = true }
    H.raises("backend is read-only", ro.defrag, ro, { background = true })
  end)
end)
