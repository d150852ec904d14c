-- Crash durability: a child lua5.4 writes keys and prints each count it has
-- acknowledged (after force_commit returned); the parent SIGKILLs it mid-stream,
-- reopens the database and checks every acknowledged key is there; one mode runs
-- online defrags back to back while it writes (BACKEND_ONLINE_KILLS=n: its kills,
-- 12 by default) and counts the step each kill landed in. Also: several
-- processes on one file (read-only inspection of a live database, a second writer).
local H = require "spec.helper"
local backend = require "backend"
local checks = require "backend.tools.check"
local uv = require "luv"

local fmt = string.format

local WRITER = [[
local backend = require "backend"
local path, mode = arg[1], arg[2]
io.stdout:setvbuf("no")
-- a line in one write(2): a SIGKILL never leaves half of one for the parent
local function say(line) io.stdout:write(line .. "\n") end
local f = assert(io.open("/proc/self/stat"))
local pid = f:read("l"):match("^(%d+)")
f:close()
say("pid " .. pid)

local configs = {
  force   = { batch_interval = 3600, batch_limit = 1000000000, ack = 7 },
  busy    = { batch_interval = 0.001, batch_limit = 5, ack = 13 },
  nofsync = { batch_interval = 0.002, batch_limit = 50, no_fsync = true, ack = 11 },
  defrag  = { batch_interval = 0.01, batch_limit = 100, ack = 40, defrag = 3 },
  defragloop = { batch_interval = 0.002, batch_limit = 4, ack = 2, defrag = 1 },
  bigval  = { batch_interval = 0.005, batch_limit = 20, mmap_size = 65536, ack = 5, big = true },
  -- online defrags back to back while writing: "defrag start|copied|done J" lines
  online  = { batch_interval = 0.002, batch_limit = 4, ack = 1, online = true },
}
local c = assert(configs[mode], mode)
local be = backend.open { path = path, batch_interval = c.batch_interval, batch_limit = c.batch_limit,
  no_fsync = c.no_fsync or false, mmap_size = c.mmap_size }

-- continue after what an earlier (killed) child left
local tx = be:batch_tx()
tx:lock()
tx:create_bucket("test")
local n = #(tx:range("test", "", "\255"))
tx:unlock()

-- bulk keys (all written before the first ack): a copy with more to do than the log
local BULK, bulk = 3000, 3000
if c.online then
  tx:lock()
  tx:create_bucket("bulk")
  bulk = #(tx:range("bulk", "", "\255"))
  tx:unlock()
end
for i = bulk, BULK - 1, 1000 do
  tx:lock()
  for j = i, math.min(i + 999, BULK - 1) do tx:put("bulk", string.format("b%08d", j), "bulk value " .. j) end
  tx:unlock()
end

local job, jobs, copied
local function online()
  if not job then
    job, jobs, copied = be:defrag { background = true }, (jobs or 0) + 1, false
    say("defrag start " .. jobs)
  elseif job:done() then
    job:wait()   -- raises the defrag's error
    job:close()
    job = nil
    say("defrag done " .. jobs)
  elseif not copied then
    local done, total = job:progress()
    copied = total > 0 and done == total
    if copied then say("defrag copied " .. jobs) end
  end
end

local function value(i)
  if c.big and i % 3 == 0 then return string.rep(string.char(i % 256), 20000 + i % 1000) end
  return "v" .. i
end

local sections, acks = 0, 0
while true do
  tx:lock()
  for _ = 1, 1 + sections % 3 do
    tx:put("test", string.format("k%08d", n), value(n))
    n = n + 1
  end
  tx:unlock()
  sections = sections + 1
  if sections % c.ack == 0 then
    be:force_commit()
    acks = acks + 1
    if c.defrag and acks % c.defrag == 0 then be:defrag() end
    say("ack " .. n)
    if c.online then online() end
  end
end
]]

local function value(i, big)
  if big and i % 3 == 0 then return string.rep(string.char(i % 256), 20000 + i % 1000) end
  return "v" .. i
end

-- runs one child until `acks` acknowledgements, kills it; returns the last ack
local function crash_round(path, mode, acks)
  local p, errfile = H.spawn(WRITER, path, mode)
  local first = p:read("l")
  local pid = first and tonumber(first:match("^pid (%d+)$"))
  assert(pid, fmt("child did not report its pid (got %s); stderr: %s", tostring(first), H.child_stderr(errfile)))
  local last = 0
  for _ = 1, acks do
    local line = p:read("l")
    if not line then
      H.kill(pid)
      p:close()
      error(fmt("child (%s) stopped after ack %d; stderr: %s", mode, last, H.child_stderr(errfile)))
    end
    local n = tonumber(line:match("^ack (%d+)$"))
    assert(n and n > last, "unexpected line from the child: " .. line)
    last = n
  end
  H.kill(pid, "KILL")
  p:close()
  return last
end

local BULK = 3000   -- the online writer's BULK: its bulk keys, all there before its first ack

-- The names beside path that a defrag's temporary directory has, and what each holds.
local function temps(path)
  local dir, base = path:match("^(.*)/([^/]+)$")
  local out = {}
  for _, name in ipairs(H.ls(dir, base .. ".backend-tmp.")) do
    local has = {}
    for _, f in ipairs(H.ls(dir .. "/" .. name)) do has[f] = true end
    out[#out + 1] = { name = name, has = has }
  end
  return out
end

-- every acknowledged key is there, and the keys are exactly k0..k(m-1): a prefix;
-- online: the bulk keys too, no temporary directory left, and backend.check passes
local function verify(path, acked, big, online)
  local be = backend.open { path = path, batch_interval = 3600 }
  if online then
    local left = temps(path)
    local report = checks.run(be, { snapshot = false })
    local bulk = be:view(function(rtx) return #(rtx:range("bulk", "", "\255")) end)
    if #left > 0 or not report.ok or bulk ~= BULK then be:close() end
    assert(#left == 0, fmt("a writable open left %s", left[1] and left[1].name))
    assert(report.ok, report.ok or checks.describe(report.findings[1]))
    assert(bulk == BULK, fmt("%d bulk keys, want %d", bulk, BULK))
  end
  local ctx = be:concurrent_read_tx()
  local ks, vs = ctx:range("test", "", "\255")
  ctx:close()
  local m = #ks
  local ok, err = pcall(function()
    assert(m >= acked, fmt("only %d keys survived, %d were acknowledged", m, acked))
    for i = 0, m - 1 do
      local want = fmt("k%08d", i)
      assert(ks[i + 1] == want, fmt("key #%d is %q, want %q (not a prefix of the writes)", i, ks[i + 1], want))
      assert(vs[i + 1] == value(i, big), fmt("value of %s is wrong (%d bytes)", want, #vs[i + 1]))
    end
    assert(be:_committed_get("test", fmt("k%08d", acked - 1)) == value(acked - 1, big))
  end)
  be:close()
  assert(ok, err)
  assert(os.execute("mdb_stat -n " .. H.q(path) .. " >/dev/null 2>&1"), "mdb_stat fails on the file")
  return m
end

-- x in [lo, hi], uniform in log scale
local function log_uniform(lo, hi)
  return lo * (hi / lo) ^ math.random()
end

-- What an online defrag was doing when the kill landed: the child's lines say
-- whether a job was running and had finished its copy; the file system says
-- whether the swap had begun (the old lock file's second name in the temporary
-- directory is made just before the writer's pause) or the new file was renamed
-- into place (db is no longer the inode it was when the job started: then the
-- directory fsync, the switch of environments and the old file's release).
local function step_at_kill(path, running, copied, ino)
  if not running then return "between" end
  if assert(uv.fs_stat(path)).ino ~= ino then return "release" end
  local t = temps(path)[1]
  if t and t.has["db-lock.old"] then return "swap" end
  if t and t.has.db then return copied and "catch-up" or "copy" end
  return "start"
end

-- One child of mode "online": killed `delay` seconds after its line `event`
-- ("start" or "copied") of job `job` (or the first line after, should that one
-- not come); returns the last ack and the step the kill landed in.
local function online_round(path, job, event, delay)
  local p, errfile = H.spawn(WRITER, path, "online")
  local pid = tonumber((p:read("l") or ""):match("^pid (%d+)$"))
  assert(pid, H.child_stderr(errfile))
  local order = { start = 1, copied = 2, done = 3 }
  local last, running, copied, killed, ino = 0, false, false, false, nil
  for line in p:lines() do
    local n = tonumber(line:match("^ack (%d+)$"))
    local ev, j = line:match("^defrag (%a+) (%d+)$")
    j = tonumber(j)
    if n then
      assert(n > last, "acks out of order: " .. line)
      last = n
    elseif ev and order[ev] then
      running, copied = ev ~= "done", ev == "copied" or (copied and ev ~= "start")
      if ev == "start" then ino = assert(uv.fs_stat(path)).ino end
      if not killed and (j > job or j == job and order[ev] >= order[event]) then
        local t = backend.monotonic() + delay
        repeat until backend.monotonic() >= t
        uv.kill(pid, "sigkill")
        killed = true
      end
    else
      uv.kill(pid, "sigkill")
      p:close()
      error(fmt("unexpected line from the child: %s; stderr: %s", line, H.child_stderr(errfile)))
    end
  end
  p:close()   -- the child is gone: its lines are all read
  assert(killed, "the child stopped by itself; stderr: " .. H.child_stderr(errfile))
  return last, step_at_kill(path, running, copied, ino)
end

describe("durability across SIGKILL", function()
  teardown(H.cleanup)

  -- kills land in the copy, the catch-up, the swap and the release of back-to-back
  -- online defrags of a database that is written and acknowledged all along
  it("every acknowledged write survives online defrags (online)", function()
    local path = H.tmppath()
    local rounds = math.tointeger(tonumber(os.getenv("BACKEND_ONLINE_KILLS"))) or 12
    local total, steps = 0, { start = 0, copy = 0, ["catch-up"] = 0, swap = 0, release = 0, between = 0 }
    for round = 1, rounds do
      -- after its start: in the copy mostly; after its copy: in the catch-up, swap or release
      local after = ({ "start", "copied" })[math.random(2)]
      local acked, step = online_round(path, math.random(2), after,
        after == "start" and log_uniform(0.0005, 0.01) or log_uniform(0.00002, 0.01))
      assert(acked > total, fmt("round %d: child acknowledged %d after %d survived", round, acked, total))
      steps[step] = steps[step] + 1
      total = verify(path, acked, false, true)
    end
    local during = rounds - steps.between
    io.write(fmt("\nonline defrag: %d kills, %d during a defrag (start %d, copy %d, catch-up %d, swap %d, "
      .. "release %d), %d between two; nothing lost\n", rounds, during, steps.start, steps.copy, steps["catch-up"],
      steps.swap, steps.release, steps.between))
    assert(during >= rounds // 2, "too few kills landed during a defrag")
    assert(steps.copy + steps["catch-up"] > 0, "no kill landed in a defrag's copy or catch-up")
  end)

  for _, mode in ipairs { "force", "busy", "nofsync", "defrag", "defragloop", "bigval" } do
    it(fmt("every acknowledged write survives (%s)", mode), function()
      local path = H.tmppath()
      local total = 0
      for round, acks in ipairs { 1, 4, 9, 2, 15 } do
        local acked = crash_round(path, mode, acks)
        assert(acked > total, fmt("round %d: child acknowledged %d after %d survived", round, acked, total))
        total = verify(path, acked, mode == "bigval")
      end
    end)
  end
end)

describe("failed commits (file size limit: EFBIG)", function()
  teardown(H.cleanup)

  local CHILD = [[
    local backend = require "backend"
    local path = arg[1]
    io.stdout:setvbuf("no")
    local logged = 0
    local be = backend.open { path = path, batch_interval = 3600, batch_limit = 1000000000,
      logger = function(level) if level == "error" or level == "warn" then logged = logged + 1 end end }
    be:update(function(tx) tx:create_bucket("t") end)
    be:force_commit()
    local v = string.rep("x", 1000)
    for i = 1, 100000 do
      be:update(function(tx) tx:put("t", string.format("k%06d", i), v) end)
      if i % 10 == 0 then
        local ok, err = pcall(be.force_commit, be)
        if not ok then
          io.stdout:write("error ", tostring(err):gsub("\n", " "), "\n")
          local c = be:concurrent_read_tx()
          local n = #c:range("t", "", "\255")
          c:close()
          io.stdout:write("visible ", n, "\n")
          local ok2, err2 = pcall(be.force_commit, be)
          io.stdout:write("retry ", tostring(ok2), " ", tostring(err2):gsub("\n", " "), "\n")
          io.stdout:write("logged ", logged, "\n")
          pcall(be.close, be)
          os.exit(0)
        end
        io.stdout:write("ack ", i, "\n")
      end
    end
    io.stdout:write("no failure\n")
  ]]

  it("raise 'backend: ...', keep the writes visible, are logged, and lose nothing acknowledged", function()
    local path = H.tmppath()
    local dir = H.tmpdir()
    H.write_file(dir .. "/c.lua", CHILD)
    -- dash counts ulimit -f in 512-byte blocks: about 1 MB; SIGXFSZ ignored so writes fail with EFBIG
    local p = assert(io.popen(H.lua_env() .. "trap '' XFSZ; ulimit -f 2000; exec timeout -s KILL 120 lua5.4 "
      .. H.q(dir .. "/c.lua") .. " " .. H.q(path) .. " 2>" .. H.q(dir .. "/err")))
    local acked, lines = 0, {}
    for line in p:lines() do
      lines[#lines + 1] = line
      local n = line:match("^ack (%d+)$")
      if n then acked = tonumber(n) end
    end
    p:close()
    local out = table.concat(lines, "\n")
    local function field(name) return out:match("\n" .. name .. " ([^\n]*)") end
    assert.is_truthy(acked > 0, out .. H.child_stderr(dir .. "/err"))
    local err = field("error")
    assert.is_truthy(err, "no commit failed: " .. out:sub(-300) .. H.child_stderr(dir .. "/err"))
    assert.is_truthy(err:find("^backend: "), err)
    assert.is_true(tonumber(field("visible")) >= acked + 10, "buffered writes stay visible after a failed commit")
    assert.is_truthy(field("retry"):find("^false backend: "), "the retry fails too (still over the limit)")
    assert.is_true(tonumber(field("logged")) >= 1, "commit failures are logged")

    local be = backend.open(path)
    local ctx = be:concurrent_read_tx()
    local ks = ctx:range("t", "", "\255")
    ctx:close()
    be:close()
    assert.is_true(#ks >= acked, string.format("%d keys survived, %d acknowledged", #ks, acked))
    for i = 1, #ks do assert.are.equal(string.format("k%06d", i), ks[i]) end
  end)
end)

describe("several processes on one file", function()
  teardown(H.cleanup)

  local HOLDER = [[
    local backend = require "backend"
    local path = arg[1]
    io.stdout:setvbuf("no")
    local f = assert(io.open("/proc/self/stat"))
    io.stdout:write("pid ", f:read("l"):match("^(%d+)"), "\n")
    f:close()
    local be = backend.open { path = path, batch_interval = 3600, batch_limit = 1000000 }
    be:update(function(tx) tx:create_bucket("test"); tx:put("test", "a", "committed") end)
    be:force_commit()
    be:update(function(tx) tx:put("test", "b", "buffered") end)
    io.stdout:write("ready\n")
    local go = path .. ".go"
    while true do
      local g = io.open(go)
      if g then g:close() break end
      os.execute("sleep 0.02")
    end
    be:close()
    io.stdout:write("closed\n")
  ]]

  it("read-only sees committed data of a live writer; a second writer is refused", function()
    local path = H.tmppath()
    local p, errfile = H.spawn(HOLDER, path)
    local pid = tonumber((p:read("l") or ""):match("^pid (%d+)$"))
    finally(function()
      if pid then H.kill(pid) end
      p:close()
    end)
    assert.are.equal("ready", p:read("l"), H.child_stderr(errfile))

    -- a second writer: a clear error, and the file is untouched
    local err = H.error_of(backend.open, { path = path })
    assert.is_truthy(err:find("^backend: "), err)

    local ro = backend.open { path = path, readonly = true }
    local ctx = ro:concurrent_read_tx()
    assert.are.equal("committed", ctx:get("test", "a"))
    assert.is_nil(ctx:get("test", "b"), "read-only must see committed data only")
    ctx:close()
    local rtx = H.rlocked(ro)
    assert.are.same({ "a" }, (rtx:range("test", "", "\255")))
    rtx:runlock()
    local t = ro:batch_tx()
    local werr = H.error_of(function()
      local ok, e = pcall(function() t:lock(); t:put("test", "c", "x") end)
      pcall(t.unlock, t)
      if not ok then error(e, 0) end
    end)
    assert.is_truthy(werr:find("read-only", 1, true), werr)

    -- the writer closes (committing "b"); a new read view of the read-only backend sees it
    H.write_file(path .. ".go", "")
    assert.are.equal("closed", p:read("l"), H.child_stderr(errfile))
    assert.is_true(H.wait_until(function()
      local c = ro:concurrent_read_tx()
      local v = c:get("test", "b")
      c:close()
      return v == "buffered"
    end, 10), "a new ConcurrentReadTx of a read-only backend sees later commits")
    ro:close()

    -- and now the file can be opened for writing
    local be = backend.open(path)
    assert.are.equal("buffered", be:_committed_get("test", "b"))
    be:close()
  end)

  it("a writer killed while a read-only process watches: the reader keeps working", function()
    local path = H.tmppath()
    local acked = crash_round(path, "busy", 3)
    local p, errfile = H.spawn(WRITER, path, "busy")
    local pid = tonumber((p:read("l") or ""):match("^pid (%d+)$"))
    assert(pid, H.child_stderr(errfile))
    local line = p:read("l")
    assert.is_truthy(line and line:find("^ack "), H.child_stderr(errfile))
    local ro = backend.open { path = path, readonly = true }
    local c1 = ro:concurrent_read_tx()
    local n1 = #(c1:range("test", "", "\255"))
    assert.is_true(n1 >= acked)
    H.kill(pid)
    p:close()
    -- c1 still reads its view; new views see at least as much
    assert.are.equal(n1, #(c1:range("test", "", "\255")))
    c1:close()
    local c2 = ro:concurrent_read_tx()
    assert.is_true(#(c2:range("test", "", "\255")) >= n1)
    c2:close()
    ro:close()
    verify(path, acked, false)
  end)
end)
