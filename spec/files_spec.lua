-- Files: one writer per database however it is named, truncated and damaged
-- files refused, only our own temporary files removed, FIFOs and devices
-- refused without hanging, read-only media, a full disk reported as such.
local backend = require "backend"
local H = require "spec.helper"

-- A child that opens arg[1] (read-only if arg[2] is "readonly"), prints
-- "opened <path>" or "error <message>", and keeps it open until the file
-- arg[3] exists, if given.
local OPENER = [[
local backend = require "backend"
local path, mode, flag = arg[1], arg[2], arg[3]
local ok, be = pcall(backend.open, { path = path, readonly = mode == "readonly" })
print(ok and "opened " .. be:path() or "error " .. tostring(be))
io.stdout:flush()
local function exists(p) local f = io.open(p) if f then f:close() return true end end
if ok then
  while flag and not exists(flag) do os.execute("sleep 0.02") end
  be:close()
end
]]

-- What a child opening path says (it closes it at once).
local function open_in_child(path, mode, shell)
  local child, errfile = H.spawn_after(shell or ":", OPENER, path, mode or "write")
  local line = child:read("l")
  child:close()
  return assert(line, H.child_stderr(errfile))
end

-- A child that holds path open until the file `flag` exists.
local function holder(path, mode, flag)
  local child, errfile = H.spawn(OPENER, path, mode, flag)
  local line = child:read("l") or ""
  assert(line:find("^opened "), line .. H.child_stderr(errfile))
  return child
end

local function with_data(path)
  local be = backend.open(path)
  be:update(function(tx) tx:create_bucket("b"); tx:put("b", "k", "v") end)
  be:force_commit()
  return be
end

describe("files: one writer per file", function()
  after_each(H.cleanup)

  it("a second writer is refused however it names the file, from another process", function()
    local path = H.tmppath()
    local dir = path:match("^(.*)/")
    local be <close> = with_data(path)
    assert(os.execute("ln " .. H.q(path) .. " " .. H.q(dir .. "/hard")))
    assert(os.execute("ln -s db " .. H.q(dir .. "/soft")))
    local by_lock = "error backend: " .. path .. " is open for writing by another process"
    assert.are.equal(by_lock, open_in_child(dir .. "/soft"))
    assert.are.equal(by_lock, open_in_child("db", "write", "cd " .. H.q(dir)))
    assert.are.equal("error backend: " .. dir .. "/hard is in use by another process (a writer, "
      .. "or a reader through another of its 2 names)", open_in_child(dir .. "/hard"))
    -- a reader by the writer's name is one it sees; by another name it would not be
    assert.are.equal("opened " .. path, open_in_child(dir .. "/soft", "readonly"))
    local line = open_in_child(dir .. "/hard", "readonly")
    assert.truthy(line:find("open for writing by another process under another of its 2 names", 1, true), line)
    -- the writer is unaffected
    be:update(function(tx) tx:put("b", "k2", "v2") end)
    be:force_commit()
    assert.are.equal("v2", be:_committed_get("b", "k2"))
  end)

  it("in this process, another name of an open file is the same file", function()
    local path = H.tmppath()
    local dir = path:match("^(.*)/")
    local _ <close> = with_data(path)
    assert(os.execute("ln " .. H.q(path) .. " " .. H.q(dir .. "/hard")))
    local msg = "already open in this process (as " .. path .. ")"
    H.raises(msg, backend.open, dir .. "/hard")
    H.raises(msg, backend.open, { path = dir .. "/hard", readonly = true })
    H.raises(path .. " is already open in this process", backend.open, dir .. "/./db")
  end)

  it("a dangling symbolic link opens the file it names, as that file", function()
    local dir = H.tmpdir()
    local target = dir .. "/target"
    assert(os.execute("ln -s target " .. H.q(dir .. "/link")))
    local be <close> = with_data(dir .. "/link")
    assert.are.equal(target, be:path())
    H.raises(target .. " is already open in this process", backend.open, target)
    assert.are.equal("error backend: " .. target .. " is open for writing by another process",
      open_in_child(target))
    be:close()
    assert.are.equal("opened " .. target, open_in_child(target))
  end)

  -- The lock is on the file: defrag renames a new one over it, which the
  -- writer locks first.
  it("after a defrag, the new file is locked for its writer", function()
    local path = H.tmppath()
    local be <close> = with_data(path)
    be:defrag()
    assert(os.execute("ln " .. H.q(path) .. " " .. H.q(path .. ".hard")))
    local line = open_in_child(path .. ".hard")
    assert.truthy(line:find("is in use by another process", 1, true), line)
    be:close()
    assert.are.equal("opened " .. path .. ".hard", open_in_child(path .. ".hard"))
  end)

  -- A reader by another name has another lock file, where a writer would not
  -- see it: it keeps writers out while it reads.
  it("a reader through another name of the file keeps writers out while it reads", function()
    local path = H.tmppath()
    with_data(path):close()
    assert(os.execute("ln " .. H.q(path) .. " " .. H.q(path .. ".hard")))
    local flag = path .. ".flag"
    local child = holder(path .. ".hard", "readonly", flag)
    H.raises("is in use by another process", backend.open, path)
    H.write_file(flag, "")
    child:close()
    backend.open(path):close()
  end)
end)

-- Builds a database with free pages and overflow pages, then opens copies of
-- it cut at many offsets, read-only and for writing: each must be refused as
-- truncated or damaged, or open and read back whole (a cut in free pages
-- only). Any signal kills the child before "done".
local TRUNCATOR = [[
local backend = require "backend"
local path = arg[1]
local be = backend.open { path = path, batch_interval = 3600 }
for r = 1, 6 do
  be:update(function(tx)
    tx:create_bucket("b")
    for i = 1, 2000 do
      tx:put("b", string.format("k%05d", (i * 7 + r) % 2000), string.rep(string.char(96 + r), 50 + i * r % 300))
    end
  end)
  be:force_commit()
  be:update(function(tx) for i = r, 2000, 3 do tx:delete("b", string.format("k%05d", i)) end end)
  be:force_commit()
end
be:update(function(tx) tx:create_bucket("big"); tx:put("big", "v", string.rep("y", 100000)) end)
local hash = be:hash()
be:close()
local f = assert(io.open(path, "rb"))
local data = f:read("a")
f:close()
math.randomseed(9)
local cuts = { 20, 4095, 4096, 8192, 8193 }
for k = 1, 6 do cuts[#cuts + 1] = #data - 4096 * k end
for _ = 1, 50 do cuts[#cuts + 1] = math.random(20, #data - 1) end
local copy, refused, whole = path .. ".cut", 0, 0
for _, cut in ipairs(cuts) do
  os.remove(copy)
  os.remove(copy .. "-lock")
  local out = assert(io.open(copy, "wb"))
  out:write(data:sub(1, cut))
  out:close()
  for _, readonly in ipairs { true, false } do
    local ok, b = pcall(backend.open, { path = copy, readonly = readonly })
    if ok then
      local h = b:hash()   -- reads every page in use
      b:close()
      if h ~= hash then print("WRONG at " .. cut) end
      whole = whole + 1
    elseif tostring(b):find("is truncated or damaged: ", 1, true) or tostring(b):find("file too short", 1, true) then
      refused = refused + 1
    else
      print("OTHER at " .. cut .. ": " .. tostring(b))
    end
  end
end
print(string.format("done: %d refused, %d whole", refused, whole))
]]

-- Builds a database with a freelist (a view held across deletes keeps their
-- pages from reuse), then opens copies of it damaged in the places LMDB
-- trusts: every field of both meta pages set to values a stray write or a
-- hostile file could hold, and random bytes of the meta pages, the
-- freelist's root page and the main tree's root page. Read-only and for
-- writing, each copy must be refused (damaged, or an LMDB error raised), or
-- open and read whole, and take a commit. Any signal kills the child before
-- "done".
local DAMAGER = [=[
local backend = require "backend"
local path = arg[1]
local be = backend.open { path = path }
be:update(function(tx)
  tx:create_bucket("a"); tx:create_bucket("b")
  for i = 1, 3000 do tx:put(i % 2 == 0 and "a" or "b", string.format("key%06d", i), string.rep("v", i % 300)) end
end)
be:force_commit()
local view = be:concurrent_read_tx()
be:update(function(tx) for i = 1, 3000, 3 do tx:delete(i % 2 == 0 and "a" or "b", string.format("key%06d", i)) end end)
be:force_commit()
be:update(function(tx) tx:put("a", "x", string.rep("big", 3000)) end)
be:force_commit()
be:update(function(tx) tx:delete("a", "x") end)
be:force_commit()
view:close()
be:close()
local f = assert(io.open(path, "rb"))
local data = f:read("a")
f:close()
local ps = string.unpack("<I4", data, 41)
local newest = string.unpack("<I8", data, ps + 145) > string.unpack("<I8", data, 145) and ps or 0
local free_root, main_root = string.unpack("<i8", data, newest + 81), string.unpack("<i8", data, newest + 129)
assert(free_root > 1 and main_root > 1, "the database has no freelist")
local copy, refused, opened = path .. ".damaged", 0, 0
local function try(what, bytes)
  for _, readonly in ipairs { true, false } do
    os.remove(copy)
    os.remove(copy .. "-lock")
    local out = assert(io.open(copy, "wb"))
    out:write(bytes)
    out:close()
    local ok, err = pcall(function()
      local b <close> = backend.open { path = copy, readonly = readonly }
      b:hash()
      local v <close> = b:concurrent_read_tx()
      for _, name in ipairs(v:buckets()) do
        for _ in v:pairs(name, "") do end
      end
      if not readonly then
        b:update(function(tx) tx:create_bucket("new"); tx:put("new", "k", "v") end)
        b:force_commit()
      end
    end)
    local msg = tostring(err)
    if ok then
      opened = opened + 1
    elseif msg:find("is truncated or damaged: ", 1, true) or msg:find("is not a backend database", 1, true)
        or msg:find("backend: [%w ]*:? ?MDB_%u") then
      refused = refused + 1
    else
      print("OTHER " .. what .. ": " .. msg)
    end
  end
end
local function put(at, fmt, x)
  return data:sub(1, at) .. string.pack(fmt, x) .. data:sub(at + string.packsize(fmt) + 1)
end
for page = 0, 1 do
  for off = 0, 148, 4 do
    for _, x in ipairs { 0, 0xffffffff, 7, 0x7fffffff } do
      try(string.format("meta %d +%d = %d", page, off, x), put(page * ps + off, "<I4", x))
    end
    if off % 8 == 0 then
      for _, x in ipairs { 0, -1, 3, 1 << 40 } do
        try(string.format("meta %d +%d = %d (8 bytes)", page, off, x), put(page * ps + off, "<i8", x))
      end
    end
  end
end
math.randomseed(11)
local places = { { 0, 0, 151 }, { ps, 0, 151 }, { free_root * ps, 0, ps - 1 }, { main_root * ps, 0, ps - 1 } }
for case = 1, 400 do
  local place, bytes = places[case % 4 + 1], data
  for _ = 1, math.random(3) do
    local at = place[1] + math.random(place[2], place[3])
    bytes = bytes:sub(1, at) .. string.char(math.random(0, 255)) .. bytes:sub(at + 2)
  end
  try("random case " .. case, bytes)
end
print(string.format("done: %d refused, %d opened", refused, opened))
]=]

-- LMDB's file: the page size, the main tree's root page (one leaf page here)
-- and the root page of bucket `name` (its record there).
local function bucket_root(data, name)
  local psize = string.unpack("<I4", data, 41)
  local newest = string.unpack("<I8", data, psize + 145) > string.unpack("<I8", data, 145) and psize or 0
  local main = string.unpack("<I8", data, newest + 129)
  local page = main * psize
  local lower = string.unpack("<I2", data, page + 13)
  for i = 0, (lower - 16) // 2 - 1 do
    local node = page + string.unpack("<I2", data, page + 17 + 2 * i)
    local ksize = string.unpack("<I2", data, node + 7)
    if data:sub(node + 9, node + 8 + ksize) == name then
      return psize, main, string.unpack("<I8", data, node + 9 + ksize + 40)
    end
  end
  error("no bucket " .. name)
end

-- A database at path whose bucket "b" holds keys k00001... of 100 bytes each.
local function filled(path, n)
  local be = backend.open(path)
  be:update(function(tx)
    tx:create_bucket("b")
    for i = 1, n do tx:put("b", string.format("k%05d", i), string.rep("x", 100)) end
  end)
  be:close()
  return path
end

-- A read-only backend whose file is replaced, as a writer's defrag does, by a
-- truncated one, then by a whole one: it refuses the first (a signal would
-- kill the child before "whole again") and follows the second.
local FOLLOWER = [[
local backend = require "backend"
local path = arg[1]
local f = assert(io.open(path, "rb"))
local data = f:read("a")
f:close()
local r = backend.open { path = path, readonly = true }
local function count() return #r:view(function(v) return v:range("b", "", "~") end) end
local function replace(with)
  local out = assert(io.open(path .. ".new", "wb"))
  out:write(with)
  out:close()
  assert(os.rename(path .. ".new", path))
end
print("before: " .. count())
replace(data:sub(1, #data // 2))
print("cut: " .. tostring(select(2, pcall(count))))
replace(data)
print("whole again: " .. count())
r:close()
]]

describe("files: truncated or damaged", function()
  after_each(H.cleanup)

  it("a database cut at any of 60 places is refused cleanly or opens whole, never a signal", function()
    local child, errfile = H.spawn(TRUNCATOR, H.tmppath())
    local out = child:read("a")
    child:close()
    local refused = tonumber(out:match("done: (%d+) refused"))
    assert(refused, "the child died: " .. out .. H.child_stderr(errfile))
    assert.is_falsy(out:find("WRONG", 1, true), out)
    assert.is_falsy(out:find("OTHER", 1, true), out)
    assert.is_true(refused >= 100, out)
  end)

  it("damaged meta pages, freelist entries and bucket records are refused cleanly or read whole, never a signal",
    function()
      local child, errfile = H.spawn(DAMAGER, H.tmppath())
      local out = child:read("a")
      child:close()
      local refused, opened = out:match("done: (%d+) refused, (%d+) opened")
      assert(refused, "the child died: " .. out .. H.child_stderr(errfile))
      assert.is_falsy(out:find("OTHER", 1, true), out)
      assert.is_true(tonumber(refused) >= 300 and tonumber(opened) >= 1000, out)
    end)

  it("a read-only backend checks the file a writer renames over its own before it maps it", function()
    local path = filled(H.tmppath(), 2000)
    local child, errfile = H.spawn(FOLLOWER, path)
    local out = child:read("a")
    child:close()
    assert.truthy(out:find("^before: 2000\ncut: backend: " .. path:gsub("%p", "%%%0")
      .. " is truncated or damaged: [^\n]*\nwhole again: 2000\n$"), out .. H.child_stderr(errfile))
  end)

  it("a page whose header is wrong is refused at open, or raises when LMDB finds it", function()
    local path = filled(H.tmppath(), 3000)
    local data = H.read_file(path)
    local psize, main, root = bucket_root(data, "b")
    local function with_flags(pages, flags)
      local out = data
      for _, pg in ipairs(pages) do
        out = out:sub(1, pg * psize + 10) .. string.pack("<I2", flags) .. out:sub(pg * psize + 13)
      end
      H.write_file(path, out)
    end
    -- the bucket's root page: not a branch or a leaf
    with_flags({ root }, 0x10)
    H.raises("is truncated or damaged: the root of a bucket, page " .. root .. ", has a bad header", backend.open, path)
    H.raises("is truncated or damaged", backend.open, { path = path, readonly = true })
    -- every leaf page under it: LMDB finds the wrong type when it gets there
    local leaves = {}
    for pg = 2, #data // psize - 1 do
      if pg ~= main and string.unpack("<I2", data, pg * psize + 11) == 2 then leaves[#leaves + 1] = pg end
    end
    with_flags(leaves, 0x10)
    H.raises("MDB_CORRUPTED: Located page was wrong type (the database file is damaged)", backend.open, path)
    -- and whole again, it opens
    H.write_file(path, data)
    local again <close> = backend.open { path = path, readonly = true }
    assert.are.equal(3000, #again:view(function(v) return v:range("b", "", "~") end))
  end)
end)

-- A child that dies no more: it holds a snapshot being written to arg[1]
-- (its temporary directory in place) until the file arg[2] exists.
local LIVE_WRITER = [[
local backend = require "backend"
local target, flag = arg[1], arg[2]
local function exists(p) local f = io.open(p) if f then f:close() return true end end
local be = backend.open(target .. ".src2")
be:update(function(tx) tx:create_bucket("b"); tx:put("b", "k", "v") end)
local snap = be:snapshot()
local ok, err = pcall(snap.write_to, snap, target, function()
  print("writing")
  io.stdout:flush()
  while not exists(flag) do os.execute("sleep 0.02") end
end)
print(ok and "written" or "error " .. tostring(err))
]]

describe("files: temporary files", function()
  after_each(H.cleanup)

  it("opening for writing removes only our leftovers whose owner died", function()
    local dir = H.tmpdir()
    local path = dir .. "/db"
    local flag = dir .. "/flag"
    local live, errfile = H.spawn(LIVE_WRITER, path, flag)
    assert.are.equal("writing", live:read("l"), H.child_stderr(errfile))
    local dead = H.dead_leftover(path)
    local ours = H.ls(dir, "db.backend-tmp.")
    assert.are.equal(2, #ours, table.concat(ours, " "))
    -- what a process killed as it made its directory leaves: an empty one,
    -- or one with an empty marker
    assert(os.execute("mkdir " .. H.q(path .. ".backend-tmp.empty0") .. " " .. H.q(path .. ".backend-tmp.empty1")))
    H.write_file(path .. ".backend-tmp.empty1/backend-tmp.lock", "")
    -- not ours: a user's file, another live database, a directory named like
    -- ours without our marker, a link named like ours to a directory
    H.write_file(path .. ".tmp.notes", "notes")
    local other <close> = with_data(path .. ".tmp.1")
    assert(os.execute("mkdir " .. H.q(path .. ".backend-tmp.abc123")))
    H.write_file(path .. ".backend-tmp.abc123/db", "someone's")
    local victim = H.tmpdir()
    H.write_file(victim .. "/db", "precious")
    assert(os.execute("ln -s " .. H.q(victim) .. " " .. H.q(path .. ".backend-tmp.Zz9Yy8")))
    local logs = {}
    local be = backend.open { path = path, logger = function(_, msg) logs[#logs + 1] = msg end }
    be:update(function(tx) tx:create_bucket("b") end)   -- the log is delivered
    be:close()
    assert.is_false(H.exists(dead))
    local live_dir = dead == dir .. "/" .. ours[1] and ours[2] or ours[1]
    local left, want = H.ls(dir, "db.backend-tmp."), { "db.backend-tmp.Zz9Yy8", "db.backend-tmp.abc123", live_dir }
    table.sort(left)
    table.sort(want)
    assert.are.same(want, left)
    assert.are.equal("notes", H.read_file(path .. ".tmp.notes"))
    assert.are.equal("someone's", H.read_file(path .. ".backend-tmp.abc123/db"))
    assert.are.equal("precious", H.read_file(victim .. "/db"))
    assert.are.equal("v", other:view(function(v) return v:get("b", "k") end))
    assert.truthy(table.concat(logs, "\n"):find("removed 3 temporary directories a dead process left", 1, true),
      table.concat(logs, "\n"))
    -- the live one finishes: the database is there now, so its snapshot is not
    H.write_file(flag, "")
    assert.are.equal("error backend: " .. path .. " already exists", live:read("l"))
    live:close()
    left = H.ls(dir, "db.backend-tmp.")
    table.sort(left)
    assert.are.same({ "db.backend-tmp.Zz9Yy8", "db.backend-tmp.abc123" }, left)
  end)

  it("defrag, snapshots to a path and imports write beside their target, then leave nothing", function()
    local dir = H.tmpdir()
    local be <close> = with_data(dir .. "/db")
    be:defrag()
    local snap <close> = be:snapshot()
    snap:write_to(dir .. "/snap")
    H.raises("already exists", snap.write_to, snap, dir .. "/snap")
    backend.import_bolt(H.fixture("tiny.db"), dir .. "/imported")
    H.raises("exists: an import makes a new database", backend.import_bolt, H.fixture("tiny.db"), dir .. "/imported")
    assert.are.same({ "db", "db-lock", "imported", "snap" }, H.ls(dir))
    assert.are.equal(be:hash(), backend.open { path = dir .. "/snap", readonly = true }:hash())
  end)
end)

-- Opens a FIFO and a device every way, and reads the FIFO as an etcd file.
local ODD_FILES = [[
local backend = require "backend"
local fifo = arg[1]
for _, cfg in ipairs { { path = fifo }, { path = fifo, readonly = true }, { path = "/dev/null" },
                       { path = "/dev/null", readonly = true } } do
  local ok, err = pcall(backend.open, cfg)
  print(ok and "opened" or tostring(err))
end
print(select(2, pcall(backend.open_bolt, fifo)))
print(select(2, pcall(backend.import_bolt, fifo, fifo .. ".new")))
print("done")
]]

describe("files: not regular files", function()
  after_each(H.cleanup)

  it("a FIFO or a device is refused at once, and nothing is created beside it", function()
    local fifo = H.tmpdir() .. "/fifo"
    assert(os.execute("mkfifo " .. H.q(fifo)))
    local stray = H.exists("/dev/null-lock")
    local child, errfile = H.spawn(ODD_FILES, fifo)
    local out = child:read("a")
    child:close()
    assert.are.equal(table.concat({
      "backend: " .. fifo .. ": Is a FIFO; a database is a regular file",
      "backend: " .. fifo .. ": Is a FIFO; a database is a regular file",
      "backend: /dev/null: Is a character device; a database is a regular file",
      "backend: /dev/null: Is a character device; a database is a regular file",
      "backend: " .. fifo .. ": not a regular file",
      "backend: " .. fifo .. ": not a regular file",
      "done", "" }, "\n"), out, H.child_stderr(errfile))
    assert.is_false(H.exists(fifo .. "-lock"))
    assert.is_false(H.exists(fifo .. ".new"))
    if not stray then assert.is_false(H.exists("/dev/null-lock")) end
  end)
end)

local function is_root()
  return H.capture("id -u") == "0\n"
end

-- Runs the Lua source src with a fresh tmpfs of `size` mounted at its first
-- argument, in a mount namespace of its own (the mount dies with it):
-- returns its output, or nil when mounting is not allowed here.
local function in_tmpfs(size, src, ...)
  local dir = H.tmpdir()
  local mount = "mount -t tmpfs -o size=" .. size .. " tmpfs " .. H.q(dir)
  if not os.execute("unshare -m sh -c " .. H.q(mount) .. " >/dev/null 2>&1") then return nil end
  local script = H.tmpdir() .. "/child.lua"
  H.write_file(script, src)
  local args = { H.q(dir) }
  for i, a in ipairs { ... } do args[i + 1] = H.q(a) end
  return H.capture(H.lua_env() .. "exec unshare -m sh -c "
    .. H.q(mount .. " && exec timeout -s KILL 120 lua5.4 " .. H.q(script) .. " " .. table.concat(args, " "))
    .. " 2>&1")
end

-- In a tmpfs: a database read-only with and without its lock file once the
-- file system is read-only, and a writer refused there.
local READ_ONLY_FS = [[
local backend = require "backend"
local dir = arg[1]
local path = dir .. "/db"
local function sh(cmd) assert(os.execute(cmd), cmd) end
local be = backend.open(path)
be:update(function(tx) tx:create_bucket("b"); tx:put("b", "k", "v") end)
be:close()
local function read()
  local ok, r = pcall(backend.open, { path = path, readonly = true })
  if not ok then return tostring(r) end
  local v = r:view(function(tx) return tx:get("b", "k") end)
  r:close()
  return v
end
sh("mount -o remount,ro " .. dir)
print("with its lock file: " .. read())
sh("mount -o remount,rw " .. dir)
os.remove(path .. "-lock")
sh("mount -o remount,ro " .. dir)
print("without: " .. read())
print("writer: " .. tostring(select(2, pcall(backend.open, path))))
]]

-- A read-only open as another user, in a directory it cannot write.
local READER = [[
local backend = require "backend"
print(select(2, pcall(backend.open, { path = arg[1], readonly = true })))
]]

describe("files: read-only media", function()
  after_each(H.cleanup)

  it("a read-only open that cannot make the lock file names the lock file", function()
    local dir = H.tmpdir()
    local path = dir .. "/db"
    with_data(path):close()
    os.remove(path .. "-lock")
    assert(os.execute("chmod 644 " .. H.q(path) .. " && chmod 555 " .. H.q(dir)))
    local want = path .. "-lock: Permission denied (a read-only open registers as a reader in this lock file"
    if not is_root() then
      H.raises(want, backend.open, { path = path, readonly = true })
    elseif os.execute("command -v setpriv >/dev/null") then
      local scripts = H.tmpdir()
      H.write_file(scripts .. "/reader.lua", READER)
      assert(os.execute("chmod 755 " .. H.q(scripts)))
      local out = H.capture(H.lua_env() .. "exec setpriv --reuid=65534 --regid=65534 --clear-groups "
        .. "lua5.4 " .. H.q(scripts .. "/reader.lua") .. " " .. H.q(path) .. " 2>&1")
      assert.truthy(out:find(want, 1, true), out)
    else
      pending("root, and no setpriv to test as another user")
    end
    os.execute("chmod 755 " .. H.q(dir))
  end)

  it("on a read-only file system a read-only open goes without the lock file", function()
    local out = in_tmpfs("4m", READ_ONLY_FS)
    if not out then return pending("mounting a tmpfs (unshare -m, as root) is not allowed here") end
    local with, without, writer = out:match("^with its lock file: (.-)\nwithout: (.-)\nwriter: (.-)\n$")
    assert.are.equal("v", with, out)
    assert.are.equal("v", without, out)
    assert.truthy(writer:find("^backend: .*Read%-only file system"), out)
  end)
end)

-- In a 2 MiB tmpfs: an import too big for it, a defrag with no room for its
-- copy, then commits until the disk is full. Each error is printed, and
-- what is left in the directory.
local DISK_FULL = [[
local backend = require "backend"
local dir, fixture = arg[1], arg[2]
local function ls()
  local p = io.popen("ls -A " .. dir)
  local names = p:read("a"):gsub("\n", " ")
  p:close()
  return names
end
local function err_of(fn, ...)
  local ok, e = pcall(fn, ...)
  return ok and "no error" or tostring(e)
end
print("import: " .. err_of(backend.import_bolt, fixture, dir .. "/imported"))
print("left: " .. ls())
local be = backend.open { path = dir .. "/db", batch_interval = 3600 }
be:update(function(tx) tx:create_bucket("b") end)
local n = 0
local function fill(upto)
  repeat
    be:update(function(tx)
      for _ = 1, 20 do n = n + 1; tx:put("b", string.format("k%08d", n), string.rep("v", 1000)) end
    end)
    local e = err_of(be.force_commit, be)
    if e ~= "no error" then return e end
  until be:stats().size > upto
  return "no error"
end
print("filled: " .. fill(1200 * 1024))
print("defrag: " .. err_of(be.defrag, be))
print("left: " .. ls())
print("commit: " .. fill(math.huge))
os.exit(0)   -- with writes that cannot be committed
]]

describe("files: a full disk", function()
  after_each(H.cleanup)

  it("a commit, a defrag and an import on a full disk say so, and leave nothing behind", function()
    local out = in_tmpfs("2m", DISK_FULL, H.fixture("mixed.db"))
    if not out then return pending("mounting a tmpfs (unshare -m, as root) is not allowed here") end
    local full = "No space left on device"
    local lines = {}
    for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.are.equal(6, #lines, out)
    assert.truthy(lines[1]:find("^import: backend: .*" .. full), out)
    assert.are.equal("left: ", lines[2])
    assert.are.equal("filled: no error", lines[3])
    assert.truthy(lines[4]:find("^defrag: backend: defrag: .*" .. full), out)
    assert.are.equal("left: db db-lock ", lines[5])
    assert.truthy(lines[6]:find("^commit: backend: commit: " .. full), out)
  end)
end)
