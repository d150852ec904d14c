-- Regression tests for etcd v3.4's read-buffer bugs (NOTES.md, research §1.5, §3):
-- each read is made through the BatchTx, the shared ReadTx and a new
-- ConcurrentReadTx, which must agree with each other and with the expected result,
-- before and after the data are committed.
local H = require "spec.helper"
local backend = require "backend"

local HOUR = 3600

-- every reader's result for one range
local function reads(be, bucket, key, end_key, limit)
  local out = {}
  local tx = be:batch_tx():lock()
  local k, v = tx:range(bucket, key, end_key, limit)
  out.batch_tx = { k, v }
  tx:unlock()

  local rtx = be:read_tx()
  rtx:rlock()
  k, v = rtx:range(bucket, key, end_key, limit)
  out.read_tx = { k, v }
  rtx:runlock()

  local ctx = be:concurrent_read_tx()
  k, v = ctx:range(bucket, key, end_key, limit)
  out.concurrent_read_tx = { k, v }
  ctx:runlock()
  return out
end

-- asserts every reader returns (wk, wv), now and after a force_commit
local function expect(be, bucket, key, end_key, limit, wk, wv)
  for _, phase in ipairs { "buffered", "committed" } do
    if phase == "committed" then be:force_commit() end
    local got = reads(be, bucket, key, end_key, limit)
    for _, who in ipairs { "batch_tx", "read_tx", "concurrent_read_tx" } do
      local msg = string.format("%s (%s) range(%q, %q, %s, %s): got %s, want %s", who, phase,
        bucket, key, end_key and string.format("%q", end_key) or "nil", tostring(limit),
        H.show(got[who][1], got[who][2]), H.show(wk, wv))
      assert.are.same(wk, got[who][1], msg)
      assert.are.same(wv, got[who][2], msg)
    end
  end
end

-- all pairs through each reader must agree (for_each), plus get of each key
local function expect_all(be, bucket, wk, wv)
  expect(be, bucket, "", "\255\255\255\255", 0, wk, wv)
  local tx = be:batch_tx():lock()
  local bk, bv = H.all(tx, bucket)
  tx:unlock()
  local rtx = H.rlocked(be)
  local rk, rv = H.all(rtx, bucket)
  rtx:runlock()
  local ctx = be:concurrent_read_tx()
  local ck, cv = H.all(ctx, bucket)
  ctx:close()
  assert.are.same(wk, bk); assert.are.same(wv, bv)
  assert.are.same(wk, rk); assert.are.same(wv, rv)
  assert.are.same(wk, ck); assert.are.same(wv, cv)
end

local function section(be, fn)
  local tx = be:batch_tx():lock()
  fn(tx)
  tx:unlock()
end

describe("etcd read-buffer bugs are not copied", function()
  local be
  before_each(function()
    be = backend.open_tmp { batch_interval = HOUR, batch_limit = 10000 }
  end)
  after_each(function()
    pcall(be.close, be)
  end)
  teardown(H.cleanup)

  describe("deletes are visible to every reader before the commit (#17158)", function()
    it("delete of a committed key", function()
      section(be, function(tx) tx:create_bucket("auth"); tx:put("auth", "k", "v"); tx:put("auth", "l", "w") end)
      be:force_commit()
      section(be, function(tx) tx:delete("auth", "k") end)
      expect(be, "auth", "k", nil, 0, {}, {})
      expect_all(be, "auth", { "l" }, { "w" })
    end)

    it("put then delete in the same section", function()
      section(be, function(tx) tx:create_bucket("auth"); tx:put("auth", "k", "v"); tx:delete("auth", "k") end)
      expect(be, "auth", "k", nil, 0, {}, {})
      expect_all(be, "auth", {}, {})
    end)

    it("put in one section, delete in the next (both uncommitted)", function()
      section(be, function(tx) tx:create_bucket("key"); tx:put("key", "a", "1"); tx:put("key", "b", "2") end)
      section(be, function(tx) tx:delete("key", "a") end)
      expect(be, "key", "a", nil, 0, {}, {})
      expect_all(be, "key", { "b" }, { "2" })
    end)

    it("overwrite then delete, and delete then put again (TestRangeAfterOverwriteAndDeleteMatch)", function()
      section(be, function(tx) tx:create_bucket("key"); tx:put("key", "foo", "bar") end)
      be:force_commit()
      section(be, function(tx) tx:put("key", "foo", "bar2"); tx:delete("key", "foo") end)
      expect(be, "key", "foo", nil, 0, {}, {})
      section(be, function(tx) tx:delete("key", "foo"); tx:put("key", "foo", "bar3") end)
      expect(be, "key", "foo", nil, 0, { "foo" }, { "bar3" })
    end)

    it("delete_bucket (TestRangeAfterDeleteBucketMatch)", function()
      section(be, function(tx) tx:create_bucket("lease"); tx:put("lease", "x", "1") end)
      be:force_commit()
      section(be, function(tx) tx:put("lease", "y", "2") end)
      section(be, function(tx) tx:delete_bucket("lease") end)
      expect(be, "lease", "x", nil, 0, {}, {})
      expect_all(be, "lease", {}, {})
      -- recreated: empty, then new writes only
      section(be, function(tx) tx:create_bucket("lease"); tx:put("lease", "z", "3") end)
      expect_all(be, "lease", { "z" }, { "3" })
    end)
  end)

  describe("range with a limit across committed and buffered keys returns the first N", function()
    local function setup(bucket)
      section(be, function(tx)
        tx:delete_bucket(bucket)
        tx:create_bucket(bucket)
        for i = 1, 5 do tx:put(bucket, string.format("%02d", i), "c" .. i) end
      end)
      be:force_commit()
      section(be, function(tx)
        for i = 6, 8 do tx:put(bucket, string.format("%02d", i), "b" .. i) end
      end)
    end

    it("bucket 'key'", function()
      setup("key")
      -- etcd 3.4 gave [06,07] and [01,06,07,08] here
      expect(be, "key", "00", "99", 2, { "01", "02" }, { "c1", "c2" })
      setup("key")
      expect(be, "key", "00", "99", 4, { "01", "02", "03", "04" }, { "c1", "c2", "c3", "c4" })
      setup("key")
      expect(be, "key", "04", "99", 3, { "04", "05", "06" }, { "c4", "c5", "b6" })
      setup("key")
      expect(be, "key", "", "99", 0, { "01", "02", "03", "04", "05", "06", "07", "08" },
        { "c1", "c2", "c3", "c4", "c5", "b6", "b7", "b8" })
    end)

    it("interleaved committed and buffered keys", function()
      section(be, function(tx)
        tx:create_bucket("key")
        for _, k in ipairs { "b", "d", "f" } do tx:put("key", k, "c") end
      end)
      be:force_commit()
      section(be, function(tx)
        for _, k in ipairs { "a", "c", "e", "d" } do tx:put("key", k, "n") end
      end)
      expect(be, "key", "a", "z", 3, { "a", "b", "c" }, { "n", "c", "n" })
      expect(be, "key", "c", "z", 2, { "c", "d" }, { "n", "n" })
      expect_all(be, "key", { "a", "b", "c", "d", "e", "f" }, { "n", "c", "n", "n", "n", "c" })
    end)
  end)

  it("range with limit > 1 works on a bucket other than 'key' (etcd panics)", function()
    section(be, function(tx)
      tx:create_bucket("test")
      for i = 1, 5 do tx:put("test", "k" .. i, "v" .. i) end
    end)
    expect(be, "test", "k1", "k9", 3, { "k1", "k2", "k3" }, { "v1", "v2", "v3" })
    section(be, function(tx) tx:put("test", "k0", "v0") end)
    expect(be, "test", "k0", "k9", 2, { "k0", "k1" }, { "v0", "v1" })
    -- empty non-nil end key with limit 0: a range that matches nothing (etcd panicked)
    expect(be, "test", "k1", "", 0, {}, {})
  end)

  it("unsorted puts into a bucket new to the buffer stay findable (bug a)", function()
    section(be, function(tx)
      tx:create_bucket("test")
      for _, k in ipairs { "foo5", "foo2", "foo1", "foo3", "foo", "foo4" } do tx:put("test", k, "v" .. k) end
    end)
    for _, k in ipairs { "foo", "foo1", "foo2", "foo3", "foo4", "foo5" } do
      expect(be, "test", k, nil, 0, { k }, { "v" .. k })
    end
    expect_all(be, "test", { "foo", "foo1", "foo2", "foo3", "foo4", "foo5" },
      { "vfoo", "vfoo1", "vfoo2", "vfoo3", "vfoo4", "vfoo5" })
  end)

  it("unordered writes into an existing bucket (TestRangeAfterUnorderedKeyWriteMatch)", function()
    section(be, function(tx) tx:create_bucket("key"); tx:put("key", "foo5", "bar5") end)
    section(be, function(tx)
      tx:put("key", "foo3", "bar3"); tx:put("key", "foo1", "bar1")
      tx:put("key", "foo6", "bar6"); tx:put("key", "foo2", "bar2")
    end)
    expect_all(be, "key", { "foo1", "foo2", "foo3", "foo5", "foo6" }, { "bar1", "bar2", "bar3", "bar5", "bar6" })
  end)

  describe("a key written twice in one section reads the newest value (#21986, bug b)", function()
    it("into a bucket new to the buffer", function()
      section(be, function(tx)
        tx:create_bucket("test")
        tx:put("test", "k", "old"); tx:put("test", "j", "x"); tx:put("test", "k", "new")
      end)
      expect(be, "test", "k", nil, 0, { "k" }, { "new" })
      expect_all(be, "test", { "j", "k" }, { "x", "new" })
    end)

    it("into a bucket already buffered, after its last key (merge fast path)", function()
      section(be, function(tx) tx:create_bucket("test"); tx:put("test", "a", "1") end)
      section(be, function(tx) tx:put("test", "b", "old"); tx:put("test", "b", "new") end)
      expect(be, "test", "b", nil, 0, { "b" }, { "new" })
      expect_all(be, "test", { "a", "b" }, { "1", "new" })
    end)

    it("overwrites across sections (TestRangeAfterOverwriteMatch)", function()
      section(be, function(tx) tx:create_bucket("key"); tx:put("key", "foo", "bar2") end)
      section(be, function(tx) tx:put("key", "foo", "bar0"); tx:put("key", "foo1", "bar10") end)
      section(be, function(tx) tx:put("key", "foo", "bar1"); tx:put("key", "foo1", "bar11") end)
      expect(be, "key", "foo", "foo3", 1, { "foo" }, { "bar1" })
      expect_all(be, "key", { "foo", "foo1" }, { "bar1", "bar11" })
    end)

    it("seq_put of the same key twice", function()
      section(be, function(tx)
        tx:create_bucket("key")
        tx:seq_put("key", "1", "a"); tx:seq_put("key", "2", "b"); tx:seq_put("key", "2", "c")
      end)
      expect_all(be, "key", { "1", "2" }, { "a", "c" })
    end)
  end)

  it("no stale slot past the end of the buffer (#12587, case c)", function()
    section(be, function(tx) tx:create_bucket("test"); tx:put("test", "a", "a0"); tx:put("test", "k", "k0") end)
    be:force_commit()
    section(be, function(tx) tx:put("test", "k", "k1") end)
    be:force_commit()
    section(be, function(tx) tx:put("test", "a", "a2") end)
    -- etcd 3.4's ReadTx returned k0 here
    expect(be, "test", "k", nil, 0, { "k" }, { "k1" })
    expect_all(be, "test", { "a", "k" }, { "a2", "k1" })
  end)

  it("alternating buckets (TestRangeAfterAlternatingBucketWriteMatch)", function()
    section(be, function(tx) tx:create_bucket("key"); tx:create_bucket("lease") end)
    section(be, function(tx) tx:put("key", "key1", "val1") end)
    section(be, function(tx) tx:put("lease", "lease1", "leaseval1"); tx:put("key", "key2", "val2") end)
    section(be, function(tx) tx:put("lease", "lease2", "leaseval2") end)
    expect_all(be, "key", { "key1", "key2" }, { "val1", "val2" })
    expect_all(be, "lease", { "lease1", "lease2" }, { "leaseval1", "leaseval2" })
  end)

  it("a ConcurrentReadTx made after a commit, before the next unlock, has no duplicates", function()
    section(be, function(tx) tx:create_bucket("key"); tx:put("key", "1", "a"); tx:put("key", "2", "b") end)
    local c1 = be:concurrent_read_tx()
    be:force_commit()
    local c2 = be:concurrent_read_tx()
    assert.are.same({ "1", "2" }, (c1:range("key", "", "\255")))
    assert.are.same({ "1", "2" }, (c2:range("key", "", "\255")))
    c1:close(); c2:close()
    section(be, function(tx) tx:delete("key", "1") end)
    be:force_commit()
    local c3 = be:concurrent_read_tx()
    assert.are.same({ "2" }, (c3:range("key", "", "\255")))
    c3:close()
  end)

  it("a missing bucket reads as empty on every tx", function()
    expect(be, "nope", "a", nil, 0, {}, {})
    expect(be, "nope", "", "\255", 0, {}, {})
    local tx = be:batch_tx():lock()
    assert.is_nil(tx:get("nope", "a"))
    local n = 0
    for _ in tx:pairs("nope") do n = n + 1 end
    tx:for_each("nope", function() n = n + 1 end)
    tx:unlock()
    local ctx <close> = be:concurrent_read_tx()
    assert.is_nil(ctx:get("nope", "a"))
    for _ in ctx:pairs("nope") do n = n + 1 end
    assert.are.equal(0, n)
  end)

  it("binary keys and values (embedded zeros, 0xff) keep byte order", function()
    local keys = { "\0", "\0\0", "\0\1", "a", "a\0", "a\0b", "b", "\127", "\128", "\255", "\255\0", "\255\255" }
    section(be, function(tx)
      tx:create_bucket("bin\255")
      for i = #keys, 1, -1 do tx:put("bin\255", keys[i], "v\0" .. i) end
    end)
    local vals = {}
    for i = 1, #keys do vals[i] = "v\0" .. i end
    expect_all(be, "bin\255", keys, vals)
    expect(be, "bin\255", "a", "b", 0, { "a", "a\0", "a\0b" }, { vals[4], vals[5], vals[6] })
    expect(be, "bin\255", "\0", nil, 0, { "\0" }, { vals[1] })
    expect(be, "bin\255", "", "\0\1", 0, { "\0", "\0\0" }, { vals[1], vals[2] })
  end)

  it("bucket names are binary-safe too (embedded zeros)", function()
    section(be, function(tx)
      tx:create_bucket("b\0one"); tx:create_bucket("b\0two"); tx:create_bucket("b")
      tx:put("b\0one", "k", "1"); tx:put("b\0two", "k", "2"); tx:put("b", "k", "3")
    end)
    expect_all(be, "b\0one", { "k" }, { "1" })
    expect_all(be, "b\0two", { "k" }, { "2" })
    expect_all(be, "b", { "k" }, { "3" })
    assert.are.equal("1", be:_committed_get("b\0one", "k"))
    assert.is_nil(be:_committed_get("b\0", "k"))
    local tx = be:batch_tx():lock()
    local err = H.error_of(tx.put, tx, "b\0three", "k", "v")
    tx:unlock()
    -- the name is shown raw or escaped (b\x00three), never cut at the zero byte
    assert.is_truthy(err == "backend: bucket 'b\0three' does not exist"
      or err == "backend: bucket 'b\\x00three' does not exist", err)
  end)
end)
