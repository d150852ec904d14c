-- etcd's own data files (spec/fixtures/etcd): read without Go, imported
-- byte for byte, and decoded the way etcdctl shows them.
local H = require "spec.helper"
local backend = require "backend"
local etcd = require "backend.etcd"

local FIXTURES = { "tiny", "mixed" }

-- Issue 9's attack (bolt_test.c builds it too): a 3 MB bbolt file whose bucket
-- "b" has one leaf page of 65535 elements, element i's key the i + 1 bytes
-- (all 1, so the keys ascend) just before a 2 MiB value they all share. Read
-- as it says, a walk delivers 137 GB. Its metas have checksum 0, which bbolt
-- accepts.
local function overlapping_file()
  local PS, N = 4096, 65535
  local keys_end, value = 16 + 16 * N + N, 2 << 20
  local leaf_pages = (keys_end + value + PS - 1) // PS
  local function page(id, flags, count, overflow, body)
    local p = string.pack("<I8I2I2I4", id, flags, count, overflow) .. body
    return p .. string.rep("\0", -#p % PS)
  end
  local function meta(id)   -- root page 2, no freelist, every page in use
    return page(id, 0x04, 0, 0, string.pack("<I4I4I4I4I8I8I8I8I8I8", 0xED0CDAED, 2, PS, 0, 2, 0, -1,
      3 + leaf_pages, id + 1, 0))
  end
  local elems = {}
  for i = 0, N - 1 do
    local key = keys_end - (i + 1)   -- positions are relative to the element
    elems[i + 1] = string.pack("<I4I4I4I4", 0, key - (16 + 16 * i), i + 1, leaf_pages * PS - keys_end)
  end
  return meta(0) .. meta(1)
    .. page(2, 0x02, 1, 0, string.pack("<I4I4I4I4", 1, 16, 1, 16) .. "b" .. string.pack("<I8I8", 3, 0))
    .. page(3, 0x02, N, leaf_pages - 1, table.concat(elems) .. string.rep("\1", N) .. string.rep("\0", value))
end

-- {"hash":1,"revision":2,...}: flat, integers only
local function recorded(name)
  local t = {}
  for k, v in H.read_file(H.fixture(name .. ".status.json")):gmatch('"(%w+)":(%d+)') do t[k] = math.tointeger(v) end
  assert(next(t), name .. ".status.json")
  return t
end

describe("etcd data files", function()
  after_each(H.cleanup)

  for _, name in ipairs(FIXTURES) do
    it(name .. ".db: status equals what etcdctl snapshot status printed", function()
      assert.are.same(recorded(name), etcd.status(H.fixture(name .. ".db")))
    end)

    it(name .. ".db: imported byte for byte, the same hash, revision and keys", function()
      local want, path = recorded(name), H.tmppath()
      local st = backend.import_bolt(H.fixture(name .. ".db"), path)
      assert.are.equal(want.hash, st.hash)
      assert.are.equal(want.totalKey, st.keys)
      local be <close> = backend.open(path)
      local got = etcd.status(be)
      assert.are.equal(want.hash, got.hash)
      assert.are.equal(want.revision, got.revision)
      assert.are.equal(want.totalKey, got.totalKey)
      assert.are.equal(be:size(), got.totalSize)
      -- every key and value as the file has them
      local f <close> = backend.open_bolt(H.fixture(name .. ".db"))
      local n = 0
      be:view(function(v)
        f:walk(nil, function(bucket, k, val)
          n = n + 1
          assert.are.equal(val, v:get(bucket, k), bucket .. " " .. k)
        end)
      end)
      assert.are.equal(want.totalKey, n)
    end)
  end

  it("the file's info: page size, sizes, the snapshot's verified SHA-256 trailer", function()
    local f <close> = backend.open_bolt(H.fixture("tiny.db"))
    local info = f:info()
    assert.are.equal(4096, info.page_size)
    assert.are.equal(20512, info.file_size)
    assert.are.equal(20480, info.total_size)
    assert.is_true(info.sha256_trailer)
    local buckets = {}
    f:walk(function(b) buckets[#buckets + 1] = b end)
    assert.are.same({ "alarm", "auth", "authRoles", "authUsers", "cluster", "key", "lease", "members",
                      "members_removed", "meta" }, buckets)
  end)

  it("a file whose elements overlap is refused before a walk delivers more than the file holds", function()
    local path, data = H.tmppath("overlap.db"), overlapping_file()
    H.write_file(path, data)
    local f <close> = backend.open_bolt(path)   -- its metas are sound
    local delivered = 0
    local err = H.raises("page 3, element 1 of 65535", f.walk, f, nil, function(_, k, v)
      delivered = delivered + #k + #v
      assert(delivered <= #data, "the walk delivered more than the file holds")
    end)
    assert.is_truthy(err:find("overlaps the element before it", 1, true), err)
    local dst = H.tmppath("imported.db")
    H.raises("overlaps the element before it", backend.import_bolt, path, dst)
    assert.is_false(H.exists(dst), "a refused import leaves nothing")
    H.raises("overlaps the element before it", etcd.status, path)
  end)

  it("walk names each key's bucket, back in the parent after a nested bucket", function()
    local f <close> = backend.open_bolt(H.root() .. "/tests/fuzz/corpus/bolt/nested512")
    local seen = {}
    local function on_kv(b, k, v) seen[#seen + 1] = b .. " " .. k .. "=" .. v end
    f:walk(function(b) seen[#seen + 1] = "bucket " .. b end, on_kv)
    assert.are.same({ "bucket a", "bucket b", "bucket c", "c deep=1", "b k=v", "a z=last" }, seen)
    seen = {}
    f:walk(nil, on_kv)
    assert.are.same({ "c deep=1", "b k=v", "a z=last" }, seen)
  end)

  it("a damaged file is refused with a clear error", function()
    local path = H.tmppath("damaged.db")
    local data = H.read_file(H.fixture("tiny.db"))
    H.write_file(path, data:sub(1, 5000) .. "\255" .. data:sub(5002))
    H.raises("SHA-256 trailer mismatch", backend.open_bolt, path)
    H.raises("SHA-256 trailer mismatch", backend.import_bolt, path, H.tmppath())
  end)
end)

describe("etcd keyspace", function()
  after_each(H.cleanup)
  local function imported(name)
    local path = H.tmppath()
    backend.import_bolt(H.fixture(name .. ".db"), path)
    return backend.open(path)
  end

  it("tiny: the keys etcdctl put, at the revisions it reported", function()
    local be <close> = imported("tiny")
    local ks = etcd.open(be)
    assert.are.equal(11, ks.revision)
    local all = ks:range("/tiny/", { prefix = true })
    assert.are.equal(10, #all)
    for i, kv in ipairs(all) do
      assert.are.equal("/tiny/key" .. (i - 1), kv.key)
      assert.are.equal("value-" .. (i - 1), kv.value)
      assert.are.equal(i + 1, kv.mod_revision)   -- revision 1 is the empty store
      assert.are.equal(1, kv.version)
    end
    assert.is_nil(ks:get("/tiny/key3", { rev = 4 }))
    assert.are.equal("value-3", ks:get("/tiny/key3", { rev = 5 }).value)
    H.raises("future revision", ks.get, ks, "/tiny/key3", { rev = 12 })
  end)

  it("mixed: live keys, history, compaction, leases and meta as the notes record them", function()
    local be <close> = imported("mixed")
    local ks = etcd.open(be)
    assert.are.equal(5066, ks.revision)
    assert.are.equal(1951, #ks:range("", { prefix = true }))
    local counter = ks:get("/mixed/hot/counter")
    assert.are.equal("250", counter.value)
    assert.are.equal("", ks:get("/mixed/txn/b").value)
    assert.are.equal(string.rep("C", 5000), ks:get("/mixed/txn/c").value)
    assert.are.equal(2679, ks.compacted)
    H.raises("compacted", ks.get, ks, "/mixed/hot/counter", { rev = 100 })
    local history = ks:history("/mixed/hot/counter")
    assert.are.equal("250", history[#history].kv.value)
    local leases = {}
    for _, l in ipairs(ks.leases) do leases[string.format("%x", l.id)] = l end
    assert.are.equal(86400, leases["2040a20b0dfff8b6"].ttl)
    assert.are.equal(9, #leases["2040a20b0dfff8b6"].keys)   -- one of L1's 10 moved to L4
    assert.are.equal(4, #leases["2040a20b0dfffece"].keys)
    assert.are.equal(0, #leases["2040a20b0dfffed0"].keys)
    assert.is_nil(leases["2040a20b0dfff8c2"], "L2 was revoked")
    assert.are.equal(2679, ks.meta.finishedCompactRev)
  end)

  it("decodes revision keys and refuses what is not one", function()
    assert.are.same({ 5, 2, true }, { etcd.decode_revision(etcd.encode_revision(5, 2, true)) })
    assert.are.same({ 7, 0, false }, { etcd.decode_revision(etcd.encode_revision(7)) })
    assert.is_nil((etcd.decode_revision("short")))
    assert.is_nil((etcd.decode_kv("\10\200")))   -- a bytes field longer than the record
  end)
end)
