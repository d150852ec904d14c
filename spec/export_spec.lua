-- export_bolt: a backend database out as an etcd data file (bbolt), read back
-- by our own reader, by bbolt itself (bench/bolt_check.go: tx.Check(), when Go
-- and bbolt's source are installed) and by the real etcdctl (when installed).
local H = require "spec.helper"
local backend = require "backend"
local etcd = require "backend.etcd"

local PAGE = 4096

-- Every shape: many keys (a tree of several levels), values spanning pages,
-- keys at the size limit, an empty bucket, binary names, keys and values.
local function fill(be)
  be:update(function(tx)
    for _, b in ipairs { "key", "big", "empty", "max", "\0\1\255bin" } do tx:create_bucket(b) end
    for i = 1, 20000 do tx:put("key", string.pack(">I8", i * 2654435761), ("v%d"):format(i)) end
    for i = 1, 12 do tx:put("big", "big" .. i, string.rep(string.char(i), i * 9000)) end
    for i = 1, 10 do tx:put("max", string.rep(string.char(64 + i), backend.max_key_size), "m" .. i) end
    tx:put("\0\1\255bin", "\0", "")
    tx:put("\0\1\255bin", "\255\0", "\0\1")
  end)
end

-- Every bucket with its keys and values, in order: { name, { k, v, k, v ... } }.
local function contents(be)
  return be:view(function(r)
    local out = {}
    for _, name in ipairs(r:buckets()) do
      local kv = {}
      for k, v in r:pairs(name) do kv[#kv + 1] = k; kv[#kv + 1] = v end
      out[#out + 1] = { name, kv }
    end
    return out
  end)
end

local function read_back(path)
  local copy = H.tmppath("imported")
  local st = backend.import_bolt(path, copy)
  local be <close> = backend.open { path = copy, readonly = true }
  return st, contents(be)
end

local function new_db()
  local path = H.tmppath()
  local be = backend.open { path = path, no_fsync = true }
  fill(be)
  return be, path
end

describe("export_bolt", function()
  after_each(H.cleanup)

  it("import_bolt(export_bolt(x)) gives back x: every bucket, key and value, and the hash", function()
    local be <close> = new_db()
    local out = H.tmppath("exported.db")
    local r = backend.export_bolt(be, out)
    assert.are.equal(be:hash(), r.hash)
    assert.are.same({ 5, 20000 + 12 + 10 + 2 }, { r.buckets, r.keys })
    assert.are.equal(H.file_size(out), r.size)
    local st, got = read_back(out)
    assert.are.same({ r.buckets, r.keys, r.bytes, r.hash }, { st.buckets, st.keys, st.bytes, st.hash })
    assert.are.same(contents(be), got)
    assert.are.equal(r.hash, etcd.status(out).hash)
  end)

  it("from a path, opened read-only: the same file as from the open backend", function()
    local be, path = new_db()
    local a, b = H.tmppath("a.db"), H.tmppath("b.db")
    backend.export_bolt(be, a)
    be:close()
    backend.export_bolt(path, b)
    assert.is_true(H.read_file(a) == H.read_file(b), "the two exports differ")
    local again = backend.open(path)
    H.raises("already open in this process", backend.export_bolt, path, H.tmppath())
    again:close()
  end)

  it("from an open backend, writers go on: the file holds the state at its start", function()
    local be <close> = new_db()
    local before, calls = be:hash(), 0
    local r = backend.export_bolt(be, H.tmppath("during.db"), { progress = function()
      calls = calls + 1
      be:update(function(tx) tx:put("key", "written-during-export" .. calls, "x") end)
      be:force_commit()
    end })
    assert.is_true(calls >= 2)
    assert.are.equal(before, r.hash)
    assert.are_not.equal(before, be:hash())
  end)

  it("from a path while another process writes it", function()
    local be, path = new_db()
    be:close()
    local stop = H.tmppath("stop")
    local child = H.spawn([[
      local backend = require "backend"
      local be = backend.open(arg[1])
      local i = 0
      print("writing"); io.stdout:flush()
      while not io.open(arg[2]) do
        i = i + 1
        be:update(function(tx) tx:put("key", "child" .. i, ("x"):rep(i % 300)) end)
        if i % 50 == 0 then be:force_commit() end
      end
      be:close()
      print(i)
    ]], path, stop)
    assert.are.equal("writing", child:read("l"))
    for i = 1, 3 do
      local out = H.tmppath("while-writing" .. i .. ".db")
      local r = backend.export_bolt(path, out)
      assert.are.equal(r.hash, (read_back(out)).hash)
    end
    H.write_file(stop, "")
    assert.is_true(tonumber(child:read("l")) > 0)
    child:close()
  end)

  it("a destination that exists is refused and left as it was", function()
    local be <close> = new_db()
    local out = H.tmppath("there")
    H.write_file(out, "precious")
    H.raises("exists: an export makes a new file", backend.export_bolt, be, out)
    assert.are.equal("precious", H.read_file(out))
  end)

  it("a failure midway leaves nothing behind, and the backend usable", function()
    local be <close>, path = new_db()
    local dir = H.tmpdir()
    local out = dir .. "/out.db"
    local boom = setmetatable({}, { __tostring = function() return "boom" end })
    local err = H.error_of(backend.export_bolt, be, out, { progress = function() error(boom) end })
    assert.are.equal("boom", err)   -- the callback's own error value, as it is
    local ok, e = pcall(backend.export_bolt, be, out, { progress = function() error(boom) end })
    assert.is_false(ok)
    assert.are.equal(boom, e)
    H.raises("backend is closed", backend.export_bolt, be, out, { progress = function() be:close() end })
    assert.are.same({}, H.ls(dir))
    local be2 <close> = backend.open(path)
    local co = coroutine.wrap(function()
      return pcall(backend.export_bolt, be2, out, { progress = function() coroutine.yield() end })
    end)
    local yielded_ok, yield_err = co()
    assert.is_false(yielded_ok)
    assert.matches("attempt to yield across a C%-call boundary", yield_err)
    assert.are.same({}, H.ls(dir))
    assert.are.equal(be2:hash(), backend.export_bolt(be2, out).hash)
  end)

  it("in a locked section: unlock or rollback first, as snapshot()", function()
    local be <close> = new_db()
    local tx = be:batch_tx():lock()
    H.raises("unlock or rollback first", backend.export_bolt, be, H.tmppath())
    tx:put("key", "in-section", "x")
    tx:unlock()
    assert.are.equal(be:hash(), backend.export_bolt(be, H.tmppath()).hash)
  end)

  it("the SHA-256 trailer: on by default, off with trailer = false", function()
    local be <close> = new_db()
    local with, without = H.tmppath("with.db"), H.tmppath("without.db")
    local r1, r2 = backend.export_bolt(be, with), backend.export_bolt(be, without, { trailer = false })
    assert.are.same({ 32, 0 }, { r1.size % PAGE, r2.size % PAGE })
    assert.are.equal(r1.size - 32, r2.size)
    assert.is_true(H.read_file(with):sub(1, r2.size) == H.read_file(without))
    local f1 <close> = backend.open_bolt(with)
    local f2 <close> = backend.open_bolt(without)
    assert.is_true(f1:info().sha256_trailer)
    assert.is_false(f2:info().sha256_trailer)
    assert.are.equal(etcd.bolt_hash(f1), etcd.bolt_hash(f2))
  end)

  it("progress(done, total): the file's bytes, climbing to its size", function()
    local be <close> = new_db()
    be:update(function(tx) for i = 1, 3000 do tx:put("big", "more" .. i, ("p"):rep(8000)) end end)
    local seen = {}
    local r = backend.export_bolt(be, H.tmppath(), { progress = function(done, total)
      seen[#seen + 1] = { done, total }
    end })
    assert.is_true(#seen >= 3, "progress every 8 MiB of a 24 MB export")
    for i, s in ipairs(seen) do
      assert.are.equal(r.size, s[2])
      assert.is_true(s[1] <= s[2] and (i == 1 or s[1] >= seen[i - 1][1]))
    end
    assert.are.same({ r.size, r.size }, seen[#seen])
  end)

  for _, name in ipairs { "tiny", "mixed" } do
    it(name .. ".db round trip: etcdctl's status, in a file no larger than etcd's", function()
      local copy, out = H.tmppath("imported"), H.tmppath("exported.db")
      backend.import_bolt(H.fixture(name .. ".db"), copy)
      backend.export_bolt(copy, out)
      local want, got = etcd.status(H.fixture(name .. ".db")), etcd.status(out)
      assert.are.same({ want.hash, want.revision, want.totalKey }, { got.hash, got.revision, got.totalKey })
      assert.is_true(got.totalSize <= want.totalSize, "larger than what etcdctl snapshot save wrote")
    end)
  end
end)

-- bbolt's tx.Check() and a bbolt compaction of the same data, through
-- bench/bolt_check.go built offline in GOPATH mode (as `make bench-etcd`).
describe("export_bolt, checked by bbolt itself", function()
  local checker
  setup(function()
    local build = os.getenv("BACKEND_BUILD") or "build"
    local out = H.capture("make --no-print-directory -s BUILD=" .. H.q(build) .. " "
      .. H.q(build .. "/bench/bolt_check") .. " 2>&1; echo \"exit=$?\"")
    if out:match("exit=0\n$") then checker = build .. "/bench/bolt_check" else checker = out end
  end)
  after_each(H.cleanup)

  it("tx.Check() passes, bbolt counts what we wrote, in no more room than bbolt compact takes", function()
    if not H.exists(checker) then
      return pending("needs Go and Debian's golang-etcd-server-dev (bbolt's source): " .. checker)
    end
    local be <close> = new_db()
    local out, compacted = H.tmppath("exported.db"), H.tmppath("compacted.db")
    local r = backend.export_bolt(be, out)
    local line = H.capture(H.q(checker) .. " " .. H.q(out) .. " " .. H.q(compacted) .. " 2>&1")
    local got = {}
    for k, v in line:gmatch("([%w_]+)=(%d+)") do got[k] = math.tointeger(v) end
    assert.is_truthy(got.compacted_size, line)
    assert.are.same({ r.buckets, r.keys, r.bytes, r.size - 32 }, { got.buckets, got.keys, got.bytes, got.size })
    assert.is_true(got.size <= 1.1 * got.compacted_size,
      ("%d bytes, bbolt compact: %d"):format(got.size, got.compacted_size))
  end)
end)

-- The real etcdctl (Debian's etcd-client) on exported files.
describe("export_bolt, read by etcdctl", function()
  local etcdctl = H.capture("command -v etcdctl"):match("[^\n]+")
  after_each(H.cleanup)

  local function etcdctl_status(path)
    local out = H.capture("ETCDCTL_API=3 " .. H.q(etcdctl) .. " snapshot status -w json " .. H.q(path) .. " 2>&1")
    local t = {}
    for k, v in out:gmatch('"(%w+)":(%d+)') do t[k] = math.tointeger(v) end
    assert.is_truthy(next(t), out)
    return t
  end

  for _, name in ipairs { "tiny", "mixed" } do
    it(name .. ".db: `etcdctl snapshot status` equals etcd.status, and `snapshot restore` takes it", function()
      if not etcdctl then return pending("etcdctl is not installed (apt-get install etcd-client)") end
      local copy, out, plain = H.tmppath("imported"), H.tmppath("exported.db"), H.tmppath("plain.db")
      backend.import_bolt(H.fixture(name .. ".db"), copy)
      backend.export_bolt(copy, out)
      backend.export_bolt(copy, plain, { trailer = false })
      assert.are.same(etcd.status(out), etcdctl_status(out))
      local restore = "cd " .. H.q(H.tmpdir()) .. " && ETCDCTL_API=3 " .. H.q(etcdctl) .. " snapshot restore "
      assert.matches("restored snapshot", H.capture(restore .. H.q(out) .. " --data-dir a 2>&1"))
      -- Without the trailer etcdctl restores only when told to skip the check.
      assert.matches("snapshot missing hash but %-%-skip%-hash%-check=false",
        H.capture(restore .. H.q(plain) .. " --data-dir b 2>&1"))
      assert.matches("restored snapshot", H.capture(restore .. H.q(plain) .. " --skip-hash-check --data-dir c 2>&1"))
    end)
  end
end)
