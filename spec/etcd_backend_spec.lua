-- Ports of etcd v3.4 mvcc/backend/backend_test.go, one `it` per Go test, same
-- assertions. etcd's raw `b.db.View` reads become be:_committed_get.
local H = require "spec.helper"
local backend = require "backend"

local HOUR = 3600

local function tmp_backend(interval, limit)
  return backend.open_tmp { batch_interval = interval, batch_limit = limit }
end

describe("etcd backend_test.go", function()
  local opened = {}
  local function track(be, path)
    opened[#opened + 1] = be
    return be, path
  end
  after_each(function()
    for i = #opened, 1, -1 do
      pcall(opened[i].close, opened[i])
      opened[i] = nil
    end
  end)
  teardown(H.cleanup)

  it("TestBackendClose", function()
    local be, path = tmp_backend(HOUR, 10000)
    assert.is_string(path)
    -- etcd: Close() must return nil within 10 s (checked in a child process below)
    local ok, err = pcall(be.close, be)
    assert.is_true(ok, tostring(err))
    assert.is_false(H.exists(path), "open_tmp files are removed on close")
  end)

  it("TestBackendClose (in a child process, with a 10 s timeout)", function()
    local src = [[
      local backend = require "backend"
      local be = backend.open_tmp { batch_interval = 3600, batch_limit = 10000 }
      local tx = be:batch_tx():lock()
      tx:create_bucket("test")
      tx:put("test", "foo", "bar")
      tx:unlock()
      be:close()
      print("closed")
    ]]
    local dir = H.tmpdir()
    H.write_file(dir .. "/c.lua", src)
    local p = assert(io.popen(H.lua_env() .. "timeout 10 lua5.4 " .. H.q(dir .. "/c.lua")
      .. " 2>" .. H.q(dir .. "/err")))
    local out = p:read("a")
    local ok, how, code = p:close()
    assert.are.equal("closed\n", out, H.child_stderr(dir .. "/err"))
    assert.is_true(ok, string.format("child %s %s: %s", how, code, H.child_stderr(dir .. "/err")))
  end)

  it("TestBackendSnapshot", function()
    local be = track(tmp_backend(HOUR, 10000))
    local tx = be:batch_tx()
    tx:lock()
    tx:create_bucket("test")
    tx:put("test", "foo", "bar")
    tx:unlock()
    be:force_commit()

    -- write snapshot to a new file
    local file = H.tmppath("snap.db")
    local snap = be:snapshot()
    local n = snap:write_to(file)
    assert.are.equal(snap:size(), n)
    snap:close()
    assert.are.equal(n, H.file_size(file))

    -- bootstrap new backend from the snapshot
    local cfg = backend.default_config()
    cfg.path, cfg.batch_interval, cfg.batch_limit = file, HOUR, 10000
    local nb = track(backend.open(cfg))
    local ntx = nb:batch_tx()
    ntx:lock()
    local ks = ntx:range("test", "foo", "goo", 0)
    assert.are.equal(1, #ks)
    ntx:unlock()
  end)

  it("TestBackendBatchIntervalCommit", function()
    -- start backend with super short batch interval so
    -- we do not need to wait long before commit to happen.
    local be = track(tmp_backend(1e-9, 10000))
    local pc = be:commits()

    local tx = be:batch_tx()
    tx:lock()
    tx:create_bucket("test")
    tx:put("test", "foo", "bar")
    tx:unlock()

    H.wait_until(function() return be:commits() >= pc + 1 end, 10)

    -- check whether put happens via db view
    assert.are.equal("bar", be:_committed_get("test", "foo"),
      "foo key failed to written in backend")
  end)

  it("TestBackendDefrag", function()
    -- default config, as etcd's test (LMDB has no freelist type to flip)
    local be = track(backend.open_tmp())

    local tx = be:batch_tx()
    tx:lock()
    tx:create_bucket("test")
    for i = 0, 10000 + 100 - 1 do   -- defragLimit + 100
      tx:put("test", string.format("foo_%d", i), "bar")
    end
    tx:unlock()
    be:force_commit()

    -- remove some keys to ensure the disk space will be reclaimed after defrag
    tx = be:batch_tx()
    tx:lock()
    for i = 0, 49 do
      tx:delete("test", string.format("foo_%d", i))
    end
    tx:unlock()
    be:force_commit()

    local size = be:size()

    -- shrink and check hash
    local oh = be:hash()
    be:defrag()
    local nh = be:hash()
    assert.are.equal(oh, nh)

    local nsize = be:size()
    assert.is_true(nsize < size, string.format("new size = %d, want < %d", nsize, size))

    -- try put more keys after shrink.
    tx = be:batch_tx()
    tx:lock()
    tx:create_bucket("test")
    tx:put("test", "more", "bar")
    tx:unlock()
    be:force_commit()

    -- (extra) everything is there, committed
    assert.are.equal("bar", be:_committed_get("test", "more"))
    assert.are.equal("bar", be:_committed_get("test", "foo_50"))
    assert.is_nil(be:_committed_get("test", "foo_49"))
    tx:lock()
    local ks = tx:range("test", "", "\255", 0)
    tx:unlock()
    assert.are.equal(10100 - 50 + 1, #ks)
  end)

  -- TestBackendWriteback ensures writes are stored to the read txn on write txn unlock.
  it("TestBackendWriteback", function()
    local be = track(backend.open_tmp())

    local tx = be:batch_tx()
    tx:lock()
    tx:create_bucket("key")
    tx:put("key", "abc", "bar")
    tx:put("key", "def", "baz")
    tx:put("key", "overwrite", "1")
    tx:unlock()

    -- overwrites should be propagated too
    tx:lock()
    tx:put("key", "overwrite", "2")
    tx:unlock()

    local cases = {
      { key = "abc", stop = nil, limit = 0, wkey = { "abc" }, wval = { "bar" } },
      { key = "abc", stop = "def", limit = 0, wkey = { "abc" }, wval = { "bar" } },
      { key = "abc", stop = "deg", limit = 0, wkey = { "abc", "def" }, wval = { "bar", "baz" } },
      { key = "abc", stop = "\255", limit = 1, wkey = { "abc" }, wval = { "bar" } },
      { key = "abc", stop = "\255", limit = 0,
        wkey = { "abc", "def", "overwrite" }, wval = { "bar", "baz", "2" } },
    }
    local rtx = be:read_tx()
    for i, tt in ipairs(cases) do
      rtx:rlock()
      local k, v = rtx:range("key", tt.key, tt.stop, tt.limit)
      rtx:runlock()
      assert.are.same(tt.wkey, k, "#" .. i)
      assert.are.same(tt.wval, v, "#" .. i)
    end
  end)

  -- TestConcurrentReadTx ensures that current read transaction can see all prior
  -- writes stored in read buffer
  it("TestConcurrentReadTx", function()
    local be = track(tmp_backend(HOUR, 10000))

    local wtx1 = be:batch_tx()
    wtx1:lock()
    wtx1:create_bucket("key")
    wtx1:put("key", "abc", "ABC")
    wtx1:put("key", "overwrite", "1")
    wtx1:unlock()

    local wtx2 = be:batch_tx()
    wtx2:lock()
    wtx2:put("key", "def", "DEF")
    wtx2:put("key", "overwrite", "2")
    wtx2:unlock()

    local rtx = be:concurrent_read_tx()
    rtx:rlock() -- no-op
    local k, v = rtx:range("key", "abc", "\255", 0)
    rtx:runlock()
    assert.are.same({ "abc", "def", "overwrite" }, k)
    assert.are.same({ "ABC", "DEF", "2" }, v)
  end)

  -- TestBackendWritebackForEach checks that partially written / buffered
  -- data is visited in the same order as fully committed data.
  it("TestBackendWritebackForEach", function()
    local be = track(tmp_backend(HOUR, 10000))

    local tx = be:batch_tx()
    tx:lock()
    tx:create_bucket("key")
    for i = 0, 4 do
      tx:put("key", string.format("%04d", i), "bar")
    end
    tx:unlock()

    -- writeback
    be:force_commit()

    tx:lock()
    tx:create_bucket("key")
    for i = 5, 19 do
      tx:put("key", string.format("%04d", i), "bar")
    end
    tx:unlock()

    local seq = ""
    local function get_seq(k) seq = seq .. k end
    local rtx = be:read_tx()
    rtx:rlock()
    rtx:for_each("key", get_seq)
    rtx:runlock()

    local partial = seq

    seq = ""
    be:force_commit()

    tx:lock()
    tx:for_each("key", get_seq)
    tx:unlock()

    assert.are.equal(seq, partial)
    local want = ""
    for i = 0, 19 do want = want .. string.format("%04d", i) end
    assert.are.equal(want, seq)
  end)
end)
