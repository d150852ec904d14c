-- Processes and files: one writer per database, read-only readers beside it
-- (spec/files_spec.lua: names, damage, temporary files, odd files and media).
local backend = require "backend"
local H = require "spec.helper"

-- A child that opens `path` (as `mode`), prints what happened, and for a
-- reader waits for flag files to read again.
local CHILD = [[
local backend = require "backend"
local path, mode, flag = arg[1], arg[2], arg[3]
local function exists(p) local f = io.open(p) if f then f:close() return true end end
local ok, be = pcall(backend.open, { path = path, readonly = mode == "readonly" })
if not ok then print("error " .. be) return end
print("opened")
io.stdout:flush()
for round = 1, 2 do
  while not exists(flag .. round) do os.execute("sleep 0.02") end
  local function get(k) return tostring(be:view(function(r) return r:get("b", k) end)) end
  print(string.format("round %d k1=%s k2=%s k3=%s", round, get("k1"), get("k2"), get("k3")))
  io.stdout:flush()
  if mode ~= "readonly" then break end
end
be:close()
]]

describe("processes", function()
  after_each(H.cleanup)

  it("a second process opening the database for writing gets a clear error", function()
    local path = H.tmppath()
    local be <close> = backend.open(path)
    local child, errfile = H.spawn(CHILD, path, "write", path .. ".flag")
    local line = child:read("l")
    child:close()
    assert.is_truthy(line, H.child_stderr(errfile))
    assert.are.equal("error backend: " .. be:path() .. " is open for writing by another process", line)
    -- and the first one is unaffected
    be:update(function(tx) tx:create_bucket("b"); tx:put("b", "k", "v") end)
    be:force_commit()
    assert.are.equal("v", be:_committed_get("b", "k"))
  end)

  it("a read-only process sees the writer's committed data only, while it writes", function()
    local path = H.tmppath()
    local be <close> = backend.open { path = path, batch_interval = 3600 }
    be:update(function(tx) tx:create_bucket("b"); tx:put("b", "k1", "one") end)
    be:force_commit()
    local flag = path .. ".flag"
    local child, errfile = H.spawn(CHILD, path, "readonly", flag)
    assert.are.equal("opened", child:read("l"), H.child_stderr(errfile))
    H.write_file(flag .. "1", "")
    assert.are.equal("round 1 k1=one k2=nil k3=nil", child:read("l"))
    be:update(function(tx) tx:put("b", "k2", "two") end)
    be:force_commit()
    be:update(function(tx) tx:put("b", "k3", "buffered, never committed") end)
    H.write_file(flag .. "2", "")
    assert.are.equal("round 2 k1=one k2=two k3=nil", child:read("l"), H.child_stderr(errfile))
    child:close()
    -- the reader leaves the writer's data and lock alone
    assert.are.equal("buffered, never committed", be:view(function(r) return r:get("b", "k3") end))
  end)

  it("the library's threads block every signal but the faults: a SIGINT goes to the application's, "
    .. "a SIGSEGV to the thread that faulted", function()
    local child, errfile = H.spawn([[
      local backend, uv = require "backend", require "luv"
      local be = backend.open { path = arg[1], batch_interval = 3600 }
      be:update(function(tx)
        tx:create_bucket("b")
        for i = 1, 200000 do tx:put("b", string.format("k%07d", i), string.rep("v", 200)) end
      end)
      local job = be:defrag { background = true }   -- a committer and a defrag thread now
      -- Per thread: is SIGINT blocked, is SIGTERM, is any fault signal (SIGILL,
      -- SIGTRAP, SIGBUS, SIGFPE, SIGSEGV, SIGSYS)? Signal s is bit s - 1 of the mask.
      -- A thread inside pthread_create blocks every signal for a moment: what a
      -- thread blocks is what it blocks in each of ten looks.
      local function blocked(mask, s) return (mask >> (s - 1)) & 1 end
      local main, masks = ("%d"):format(uv.os_getpid()), {}
      for _ = 1, 10 do
        local dir = assert(uv.fs_scandir("/proc/self/task"))
        for tid in function() return uv.fs_scandir_next(dir) end do
          local f = io.open("/proc/self/task/" .. tid .. "/status")
          if f then   -- a thread may end meanwhile
            masks[tid] = (masks[tid] or -1) & tonumber(f:read("a"):match("SigBlk:%s*(%x+)"), 16)
            f:close()
          end
        end
        uv.sleep(2)
      end
      job:wait()
      local out = {}
      for tid, mask in pairs(masks) do
        local fault = 0
        for _, s in ipairs { 4, 5, 7, 8, 11, 31 } do fault = fault | blocked(mask, s) end
        out[#out + 1] = ("%s %d%d%d"):format(tid == main and "main" or "library",
          blocked(mask, 2), blocked(mask, 15), fault)
      end
      table.sort(out)
      io.stdout:write(table.concat(out, ","), "\n")
    ]], H.tmppath("signals.db"))
    local out = child:read("a")
    child:close()
    -- two library threads at least, each blocking SIGINT and SIGTERM and no fault
    assert.truthy(out:match("^library 110,library 110[,%w ]*main 000\n$"), out .. H.read_file(errfile))
    assert.are.equal(select(2, out:gsub("library", "")), select(2, out:gsub("library 110", "")), out)
  end)

  it("read-only backends refuse every write", function()
    local path = H.tmppath()
    local w = backend.open(path)
    w:update(function(tx) tx:create_bucket("b"); tx:put("b", "k", "v") end)
    w:close()
    local r <close> = backend.open { path = path, readonly = true }
    assert.are.equal("v", r:view(function(v) return v:get("b", "k") end))
    H.raises("read-only", function() r:batch_tx():lock() end)
    H.raises("read-only", r.defrag, r)
    assert.are.equal(r:hash(), backend.crc32c("kv", backend.crc32c("b")))
  end)
end)

describe("files", function()
  after_each(H.cleanup)

  it("creates the database and its lock file with mode 0600", function()
    local path = H.tmppath()
    backend.open(path):close()
    for _, p in ipairs { path, path .. "-lock" } do
      local f = assert(io.popen("stat -c %a " .. H.q(p)))
      assert.are.equal("600", f:read("l"), p)
      f:close()
    end
  end)

  it("says what a file that is not ours looks like", function()
    local path = H.tmppath()
    H.write_file(path, string.rep("x", 4096))
    H.raises("is not a backend database", backend.open, path)
    -- a bbolt meta page: 16-byte header, then magic 0xED0CDAED (little-endian)
    H.write_file(path, string.rep("\0", 16) .. string.pack("<I4I4", 0xED0CDAED, 2) .. string.rep("\0", 4072))
    H.raises("bbolt file", backend.open, path)
    assert.are.equal(4096, H.file_size(path))   -- untouched
  end)
end)

-- Reader slots `pid` holds in the database's lock table, from `mdb_stat -r`
-- (lmdb-utils); nil when mdb_stat is missing.
local function reader_slots(path, pid)
  local p = assert(io.popen("mdb_stat -n -r " .. H.q(path) .. " 2>&1"))
  local out = p:read("a")
  p:close()
  if not out:find("Reader Table Status", 1, true) then return nil end
  local n = 0
  for line in out:gmatch("[^\n]+") do
    if tonumber(line:match("^%s*(%d+)%s")) == pid then n = n + 1 end
  end
  return n
end

-- A read-only child that takes one concurrent read tx per flag file (each
-- over a newer commit, so each holds a reader slot of its own), then waits
-- to be killed.
local SLOT_HOLDER = [[
local backend = require "backend"
local path, n, flag = arg[1], tonumber(arg[2]), arg[3]
local function exists(p) local f = io.open(p) if f then f:close() return true end end
local be = backend.open { path = path, readonly = true }
local stat = assert(io.open("/proc/self/stat"))
print("pid " .. stat:read("n"))
stat:close()
io.stdout:flush()
local views = {}
for i = 1, n do
  while not exists(flag .. i) do os.execute("sleep 0.02") end
  views[i] = be:concurrent_read_tx()
  print("view " .. i .. " sees n=" .. tostring(views[i]:get("b", "n")))
  io.stdout:flush()
end
while true do os.execute("sleep 1") end
]]

-- A writer child: waits for `go`, then `rounds` commits of `per` sections,
-- each adding key k<n> and setting meta.n = n; then one more section it
-- never commits, and waits for `stop` to close.
local STEADY_WRITER = [[
local backend = require "backend"
local path, rounds, per, flag = arg[1], tonumber(arg[2]), tonumber(arg[3]), arg[4]
local function exists(p) local f = io.open(p) if f then f:close() return true end end
local be = backend.open { path = path, batch_interval = 3600 }
be:update(function(tx) tx:create_bucket("b"); tx:create_bucket("meta"); tx:put("meta", "n", "0") end)
be:force_commit()
print("ready")
io.stdout:flush()
while not exists(flag .. ".go") do os.execute("sleep 0.01") end
local n = 0
for _ = 1, rounds do
  for _ = 1, per do
    n = n + 1
    be:update(function(tx)
      tx:put("b", string.format("k%06d", n), tostring(n))
      tx:put("meta", "n", tostring(n))
    end)
  end
  be:force_commit()
  os.execute("sleep 0.01")
end
be:update(function(tx) tx:put("b", "zz", "buffered"); tx:put("meta", "n", "-1") end)
print("done " .. n)
io.stdout:flush()
while not exists(flag .. ".stop") do os.execute("sleep 0.01") end
be:close()
]]

describe("processes: readers", function()
  after_each(H.cleanup)

  it("a read-only process sees a growing, committed, consistent prefix while the writer runs", function()
    local path = H.tmppath()
    local flag = path .. ".flag"
    local rounds, per = 40, 5
    local child, errfile = H.spawn(STEADY_WRITER, path, rounds, per, flag)
    assert.are.equal("ready", child:read("l"), H.child_stderr(errfile))
    local r <close> = backend.open { path = path, readonly = true }
    H.write_file(flag .. ".go", "")
    -- every read: keys k1..kn exactly, n a commit boundary, n never going back
    local function read()
      return r:view(function(v)
        local n = tonumber(v:get("meta", "n"))
        local ks, vs = H.all(v, "b")
        assert.are.equal(n, #ks, "meta.n and the keys come from one commit")
        for i = 1, n do
          assert.are.equal(string.format("k%06d", i), ks[i])
          assert.are.equal(tostring(i), vs[i])
        end
        return n
      end)
    end
    local last, seen = -1, {}
    local deadline = os.time() + 60
    repeat
      local n = read()
      assert.are.equal(0, n % per, "only whole commits are visible")
      assert.is_true(n >= last, "the view never goes back")
      if n ~= last then seen[#seen + 1] = n end
      last = n
    until n == rounds * per or os.time() > deadline
    assert.are.equal(rounds * per, last)
    assert.is_true(#seen >= 4, "saw the data grow while it was written: " .. table.concat(seen, ","))
    assert.are.equal("done " .. rounds * per, child:read("l"), H.child_stderr(errfile))
    -- the writer's last section is buffered, never committed: not visible
    assert.are.equal(rounds * per, read())
    assert.is_nil(r:view(function(v) return v:get("b", "zz") end))
    H.write_file(flag .. ".stop", "")
    child:close()
    -- closing committed it
    assert.are.equal("buffered", r:view(function(v) return v:get("b", "zz") end))
  end)

  it("reader slots of a killed process are cleared when the table is full", function()
    local path = H.tmppath()
    local flag = path .. ".flag"
    local logs = {}
    local be <close> = backend.open { path = path, max_readers = 4, batch_interval = 3600,
      logger = function(level, msg) logs[#logs + 1] = level .. ": " .. msg end }
    local function commit(n)
      be:update(function(tx) tx:create_bucket("b"); tx:put("b", "n", tostring(n)) end)
      be:force_commit()
    end
    commit(0)
    -- the child takes 3 slots, the writer's current read txn the 4th
    local child, errfile = H.spawn(SLOT_HOLDER, path, 3, flag)
    local pid = tonumber((child:read("l") or ""):match("^pid (%d+)$"))
    assert.is_number(pid, H.child_stderr(errfile))
    for i = 1, 3 do
      commit(i)
      H.write_file(flag .. i, "")
      assert.are.equal("view " .. i .. " sees n=" .. i, child:read("l"), H.child_stderr(errfile))
    end
    local held = reader_slots(path, pid)
    if held then assert.are.equal(3, held, "the child holds three reader slots") end
    H.kill(pid, "KILL")
    child:close()
    -- every new commit needs a reader slot for its read txn, a snapshot
    -- needs one on the newest commit: only the dead process's are left
    for i = 4, 8 do
      commit(i)
      local snap <close> = be:snapshot()
      assert.is_true(snap:size() > 0)
      assert.are.equal(tostring(i), be:_committed_get("b", "n"))
      assert.are.equal(tostring(i), be:view(function(v) return v:get("b", "n") end))
    end
    be:hash()
    if held then assert.are.equal(0, reader_slots(path, pid), "the dead process's slots are gone") end
    for _, line in ipairs(logs) do
      assert.is_falsy(line:find("read txn", 1, true), line)
    end
  end)
end)

-- "600" etc.: the permission bits of `path`; "link" for a symbolic link.
local function mode_of(path)
  local p = assert(io.popen("if test -L " .. H.q(path) .. "; then echo link; else stat -c %a " .. H.q(path) .. "; fi"))
  local m = p:read("l")
  p:close()
  return m
end

-- Under `umask 000`: a database, its defrag and a snapshot written to a path,
-- then the mode of each file.
local MODES_CHILD = [[
local backend = require "backend"
local path, snap_path = arg[1], arg[2]
local be = backend.open(path)
be:update(function(tx) tx:create_bucket("b"); tx:put("b", "k", string.rep("v", 10000)) end)
be:defrag()
local snap = be:snapshot()
snap:write_to(snap_path)
snap:close()
be:close()
print("ok")
]]

describe("files: creation", function()
  after_each(H.cleanup)

  it("database, lock file, defrag's file and snapshots are 0600 whatever the umask", function()
    local path = H.tmppath()
    local snap_path = path .. ".snap"
    local child, errfile = H.spawn_after("umask 000", MODES_CHILD, path, snap_path)
    assert.are.equal("ok", child:read("l"), H.child_stderr(errfile))
    child:close()
    -- the database file is now the one defrag created
    for _, p in ipairs { path, path .. "-lock", snap_path } do
      assert.are.equal("600", mode_of(p), p)
    end
  end)

  it("snap:write_to(path) makes a new file: never over a file, through a link or over the database", function()
    local be <close> = backend.open_tmp { batch_interval = 3600 }
    be:update(function(tx) tx:create_bucket("b"); tx:put("b", "k", "v") end)
    local hash = be:hash()
    local snap <close> = be:snapshot()
    local dir = H.tmpdir()
    local victim = dir .. "/victim"
    H.write_file(victim, "precious")
    local link, dangling = dir .. "/link", dir .. "/dangling"
    assert(os.execute("ln -s " .. H.q(victim) .. " " .. H.q(link)))
    assert(os.execute("ln -s " .. H.q(dir .. "/nowhere") .. " " .. H.q(dangling)))
    for _, p in ipairs { victim, link, dangling, be:path(), be:path() .. "-lock" } do
      H.raises("already exists", snap.write_to, snap, p)
    end
    assert.are.equal("precious", H.read_file(victim))
    assert.are.equal("link", mode_of(link))
    assert.is_false(H.exists(dir .. "/nowhere"))
    -- the database is intact and still works
    assert.are.equal(hash, be:hash())
    be:update(function(tx) tx:put("b", "k2", "v2") end)
    be:force_commit()
    assert.are.equal("v2", be:_committed_get("b", "k2"))
    -- a new path is fine, and private
    local fresh = dir .. "/fresh"
    assert.are.equal(snap:size(), snap:write_to(fresh))
    assert.are.equal("600", mode_of(fresh))
  end)

  it("a link planted at the lock file's name is not followed", function()
    local path = H.tmppath()
    local victim = H.tmpdir() .. "/victim"
    local data = string.rep("precious\n", 1000)
    H.write_file(victim, data)
    assert(os.execute("ln -s " .. H.q(victim) .. " " .. H.q(path .. "-lock")))
    H.raises("symbolic link", backend.open, path)
    assert.is_false(H.exists(path), "no database created")
    -- a database that exists, opened read-only, with its lock file replaced
    os.remove(path .. "-lock")
    local be = backend.open(path)
    be:update(function(tx) tx:create_bucket("b"); tx:put("b", "k", "v") end)
    be:close()
    os.remove(path .. "-lock")
    assert(os.execute("ln -s " .. H.q(victim) .. " " .. H.q(path .. "-lock")))
    H.raises("symbolic link", backend.open, { path = path, readonly = true })
    H.raises("symbolic link", backend.open, path)
    assert.are.equal(data, H.read_file(victim))
    assert.are.equal("link", mode_of(path .. "-lock"))
    -- without the link it opens as before
    os.remove(path .. "-lock")
    local r <close> = backend.open { path = path, readonly = true }
    assert.are.equal("v", r:view(function(v) return v:get("b", "k") end))
  end)

end)

local ATTACHED_READER = [[
local backend = require "backend"
local path, flag = arg[1], arg[2]
io.stdout:setvbuf("no")
local r = backend.open { path = path, readonly = true }
print("ready")
while not io.open(flag) do os.execute("sleep 0.01") end
print(r:view(function(v) return #(v:range("b", "", "~")) end))
r:close()
]]

describe("processes: defrag", function()
  after_each(H.cleanup)

  -- The reader keeps the lock file open across the writer's defrag, so LMDB
  -- goes on with the lock's txn ids on the new file.
  it("with a read-only process attached loses nothing, and the reader follows the new file", function()
    local path = H.tmppath()
    local flag = path .. ".flag"
    local be <close> = backend.open { path = path, batch_interval = 3600 }
    local function put(from, to)
      for i = from, to do
        be:update(function(tx) tx:create_bucket("b"); tx:put("b", string.format("k%03d", i), "v") end)
        be:force_commit()   -- a txn each: the txn ids run ahead of the new file's
      end
    end
    local function count(b) return b:view(function(v) return #(v:range("b", "", "~")) end) end
    put(1, 7)
    local child, errfile = H.spawn(ATTACHED_READER, path, flag)
    assert.are.equal("ready", child:read("l"), H.child_stderr(errfile))
    put(8, 20)
    be:defrag()
    assert.are.equal(20, count(be))
    put(21, 23)
    assert.are.equal(23, count(be))
    H.write_file(flag, "")
    assert.are.equal("23", child:read("l"), H.child_stderr(errfile))
    child:close()
    be:close()
    local again <close> = backend.open(path)
    assert.are.equal(23, count(again))
  end)
end)

describe("files: damage", function()
  after_each(H.cleanup)

  it("a truncated database is refused with an error, not a crash", function()
    local path = H.tmppath()
    local be = backend.open(path)
    be:update(function(tx)
      tx:create_bucket("b")
      for i = 1, 2000 do tx:put("b", "k" .. i, string.rep("x", 100)) end
    end)
    be:close()
    assert(os.execute("truncate -s 8192 " .. H.q(path)))
    H.raises("is truncated or damaged", backend.open, path)
    H.raises("is truncated or damaged", backend.open, { path = path, readonly = true })
  end)
end)
