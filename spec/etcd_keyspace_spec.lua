-- The keyspace writer of backend.etcd: puts, deletes, txns, leases, compaction
-- and HashKV in etcd 3.4's on-disk format, byte for byte; all or nothing; seen
-- by reads at once; and read back the same by a fresh etcd.open. (The proof
-- against a real etcd is spec/etcd_interop_spec.lua.)
local H = require "spec.helper"
local backend = require "backend"
local etcd = require "backend.etcd"

local rev, crc32c = etcd.encode_revision, backend.crc32c

local function new_db()
  return backend.open { path = H.tmppath(), batch_interval = 3600, no_fsync = true }
end

-- A new database and its keyspace, writable.
local function new_keyspace()
  local be = new_db()
  return be, etcd.open(be, { writable = true })
end

-- Every pair of bucket as "key=value" strings (binary-safe through %q).
local function dump(be, bucket)
  return be:view(function(rtx) return H.show(H.all(rtx, bucket)) end)
end

-- What a keyspace holds, as plain tables (to compare two handles).
local function contents(ks)
  local leases = {}
  for i, l in ipairs(ks.leases) do
    leases[i] = { id = l.id, ttl = l.ttl, remaining_ttl = l.remaining_ttl, keys = l.keys }
  end
  return { revision = ks.revision, compacted = ks.compacted, revisions = ks.revisions, keys = ks.keys,
           by_key = ks.by_key, leases = leases, meta = ks.meta }
end

-- The writer's view equals what a fresh etcd.open reads from the database.
local function assert_reread(ks)
  assert.are.same(contents(etcd.open(ks.be)), contents(ks))
end

local function kv(key, value, create, mod, version, lease)
  return { key = key, value = value, create_revision = create, mod_revision = mod, version = version,
           lease = lease or 0 }
end

describe("etcd keyspace writer", function()
  after_each(H.cleanup)

  describe("protocol buffers", function()
    it("encodes as etcd's gogo/protobuf does: fields in order, zeros left out, negative int64 in 10 bytes", function()
      assert.are.equal("\10\2/a\16\2\24\3\32\1\42\1v\48\7", etcd.encode_kv(kv("/a", "v", 2, 3, 1, 7)))
      assert.are.equal("\10\2/a", etcd.encode_kv({ key = "/a" }))   -- a tombstone's KeyValue
      assert.are.equal("", etcd.encode_lease({ id = 0, ttl = 0, remaining_ttl = 0 }))
      local neg = etcd.encode_lease({ id = -1, ttl = 300 })
      assert.are.equal("\8" .. string.rep("\255", 9) .. "\1\16\172\2", neg)
      assert.are.same({ id = -1, ttl = 300, remaining_ttl = 0 }, etcd.decode_lease(neg))
      local big = kv(string.rep("k", 300), string.rep("v", 70000), math.maxinteger, 1 << 40, 1 << 62, 1 << 63)
      assert.are.same(big, etcd.decode_kv(etcd.encode_kv(big)))
    end)

    it("every KeyValue and Lease that etcd wrote in the fixtures encodes back to its very bytes", function()
      local n = 0
      for _, name in ipairs { "tiny", "mixed" } do
        local f <close> = backend.open_bolt(H.fixture(name .. ".db"))
        f:walk(function() end, function(bucket, _, v)
          if bucket == "key" then
            assert.are.equal(v, etcd.encode_kv(assert(etcd.decode_kv(v))))
            n = n + 1
          elseif bucket == "lease" then
            assert.are.equal(v, etcd.encode_lease(assert(etcd.decode_lease(v))))
            n = n + 1
          end
        end)
      end
      assert.is_true(n > 3000, n .. " records")
    end)

    it("refuses a field of the wrong wire type and truncated messages", function()
      assert.are.same({ nil, "field key has wire type 0" }, { etcd.decode_kv("\8\1") })
      assert.are.same({ nil, "field ttl has wire type 2" }, { etcd.decode_lease("\18\1x") })
      assert.is_nil((etcd.decode_kv("\10\5ab")))
      assert.is_nil((etcd.decode_kv("\16\255")))
    end)
  end)

  it("an empty database gets etcd's buckets; puts are revisions 2, 3... in etcd's bytes", function()
    local be <close>, ks = new_keyspace()
    assert.are.same({ "key", "lease", "meta" }, be:view(function(r) return r:buckets() end))
    assert.are.equal(1, ks.revision)   -- a fresh store
    assert.are.equal(2, ks:put("/a", "1"))
    assert.are.equal(3, ks:put("/a", "2"))
    assert.are.equal(4, ks:put("/b", ""))
    assert.are.same(kv("/a", "2", 2, 3, 2), ks:get("/a"))
    assert.are.same(kv("/a", "1", 2, 2, 1), ks:get("/a", { rev = 2 }))
    assert.are.same({ kv("/a", "2", 2, 3, 2), kv("/b", "", 4, 4, 1) }, ks:range("/", { prefix = true }))
    assert.are.equal(H.show({ rev(2, 0), rev(3, 0), rev(4, 0) },
      { etcd.encode_kv(kv("/a", "1", 2, 2, 1)), etcd.encode_kv(kv("/a", "2", 2, 3, 2)),
        etcd.encode_kv(kv("/b", "", 4, 4, 1)) }), dump(be, "key"))
    assert.are.equal(H.show({ "consistent_index" }, { string.pack(">I8", 3) }), dump(be, "meta"))
    assert.are.equal(17, #rev(2, 0))
    assert_reread(ks)
  end)

  it("deletes write tombstones (the key alone, mark 't') and restart the version", function()
    local be <close>, ks = new_keyspace()
    for _, k in ipairs { "/d/1", "/d/2", "/d/3", "/e", "/f" } do ks:put(k, "x") end   -- revisions 2..6
    assert.are.same({ 7, 1 }, { ks:delete("/e") })
    assert.are.same({ 7, 0 }, { ks:delete("/e") })   -- nothing deleted: no new revision
    assert.are.same({ 8, 3 }, { ks:delete("/d/", { prefix = true }) })
    assert.are.same({ 8, 0 }, { ks:delete("/a", { range_end = "/e" }) })
    assert.are.same({ 9, 1 }, { ks:delete("/a", { range_end = "\0" }) })
    assert.are.same({}, ks:range("", { prefix = true }))
    local values = be:view(function(r) return r:get("key", rev(8, 2, true)) end)
    assert.are.equal(etcd.encode_kv({ key = "/d/3" }), values)
    assert.are.same({ 8, 2, true }, { etcd.decode_revision(rev(8, 2, true)) })
    assert.are.equal(10, ks:put("/d/1", "again"))
    assert.are.same(kv("/d/1", "again", 10, 10, 1), ks:get("/d/1"))
    assert.are.same(kv("/d/1", "x", 2, 2, 1), ks:get("/d/1", { rev = 7 }))
    assert_reread(ks)
  end)

  it("txn: one revision, sub revisions in order, all or nothing, etcd's duplicate-key rules", function()
    local be <close>, ks = new_keyspace()
    ks:put("/old", "o")
    assert.are.same({ 3, 1 }, { ks:txn { { "put", "/t/1", "one" }, { "delete", "/old" }, { "put", "/t/2", "two" },
                                          { "delete", "/none" } } })
    assert.are.same({ 3, 2 }, { ks:get("/t/2").mod_revision, ks:history("/t/2")[1].sub })
    assert.are.same({ 1, true }, { ks:history("/old")[2].sub, ks:history("/old")[2].tombstone })
    assert.are.same({ 3, 0 }, { ks:txn {} })
    assert.are.same({ 4, 2 }, { ks:txn { { "delete", "/t/", { prefix = true } }, { "delete", "/t/1" } } })
    local before = dump(be, "key") .. dump(be, "meta")
    H.raises("duplicate key given in txn request", ks.txn, ks, { { "put", "/x", "1" }, { "put", "/x", "2" } })
    H.raises("is put and deleted", ks.txn, ks, { { "delete", "/w", { prefix = true } }, { "put", "/wx", "1" } })
    H.raises("is put and deleted", ks.txn, ks, { { "put", "/x", "1" }, { "delete", "/a", { range_end = "/y" } } })
    H.raises("requested lease not found: 63", ks.txn, ks,
      { { "put", "/x", "1" }, { "put", "/y", "2", { lease = 99 } } })
    H.raises("must start with \"put\" or \"delete\"", ks.txn, ks, { { "put", "/x", "1" }, { "get", "/y" } })
    H.raises("ops must be an array", ks.txn, ks, { { "put", "/x", "1" }, extra = 1 })
    assert.are.equal(before, dump(be, "key") .. dump(be, "meta"))
    assert.are.equal(4, ks.revision)
    assert_reread(ks)
  end)

  it("a section that fails midway stores nothing and leaves the keyspace in memory as it was", function()
    local be <close>, ks = new_keyspace()
    ks:put("/a", "1")
    local before, memory = dump(be, "key") .. dump(be, "meta"), contents(etcd.open(be))
    local methods = getmetatable(be:batch_tx()).__index
    local put, calls = methods.put, 0
    methods.put = function(tx, ...)
      calls = calls + 1
      if calls == 2 then error("backend: injected failure", 0) end
      return put(tx, ...)
    end
    local ok, err = pcall(ks.txn, ks, { { "put", "/b", "2" }, { "put", "/c", "3" } })
    methods.put = put
    assert.are.same({ false, "backend: injected failure" }, { ok, err })
    assert.are.equal(before, dump(be, "key") .. dump(be, "meta"))
    assert.are.same(memory, contents(ks))
    assert.are.equal(3, ks:put("/b", "2"))   -- and it goes on
    assert_reread(ks)
  end)

  it("leases: grant, attach, move, revoke (keys deleted at one revision in key order)", function()
    local be <close>, ks = new_keyspace()
    assert.are.equal(1, ks:grant(60))
    assert.are.equal(0x694d7c3e8a1f2b01, ks:grant(600, 0x694d7c3e8a1f2b01))
    assert.are.equal(0x694d7c3e8a1f2b02, ks:grant(30))   -- after the largest
    assert.are.equal(1, ks.revision, "a grant makes no revision")
    assert.are.equal(H.show({ string.pack(">i8", 1), string.pack(">i8", 0x694d7c3e8a1f2b01),
                              string.pack(">i8", 0x694d7c3e8a1f2b02) },
      { "\8\1\16\60", etcd.encode_lease({ id = 0x694d7c3e8a1f2b01, ttl = 600 }),
        etcd.encode_lease({ id = 0x694d7c3e8a1f2b02, ttl = 30 }) }), dump(be, "lease"))
    H.raises("lease already exists: 1", ks.grant, ks, 5, 1)
    ks:put("/l/b", "1", { lease = 1 })
    ks:put("/l/a", "2", { lease = 1 })
    ks:put("/l/c", "3", { lease = 1 })
    ks:put("/l/c", "3", { lease = 0x694d7c3e8a1f2b01 })   -- moves to the other lease
    ks:put("/free", "4")
    assert.are.same({ "/l/a", "/l/b" }, ks.lease_by_id[1].keys)
    assert.are.same({ "/l/c" }, ks.lease_by_id[0x694d7c3e8a1f2b01].keys)
    assert.are.equal(1, ks:get("/l/a").lease)
    local before = dump(be, "key")
    H.raises("requested lease not found: 7", ks.put, ks, "/x", "y", { lease = 7 })
    assert.are.equal(before, dump(be, "key"))
    assert.are.equal(7, ks:revoke(1))
    assert.are.same({ { 7, 0, true }, { 7, 1, true } },
      { { ks:history("/l/a")[2].main, ks:history("/l/a")[2].sub, ks:history("/l/a")[2].tombstone },
        { ks:history("/l/b")[2].main, ks:history("/l/b")[2].sub, ks:history("/l/b")[2].tombstone } })
    assert.is_nil(ks.lease_by_id[1])
    assert.are.equal(2, #ks.leases)
    assert.are.equal(7, ks:revoke(0x694d7c3e8a1f2b02), "no keys: no revision")
    H.raises("requested lease not found: 1", ks.revoke, ks, 1)
    ks:delete("/l/c")   -- a deleted key leaves its lease
    assert.are.same({}, ks.lease_by_id[0x694d7c3e8a1f2b01].keys)
    assert_reread(ks)
  end)

  it("compact: as etcd's, with the meta bucket's compaction keys; reads before it raise", function()
    local be <close>, ks = new_keyspace()
    ks:put("/a", "1")   -- 2
    ks:put("/a", "2")   -- 3
    ks:put("/b", "1")   -- 4
    ks:delete("/b")     -- 5
    ks:put("/c", "1")   -- 6
    ks:delete("/c")     -- 7
    ks:put("/a", "3")   -- 8
    ks:compact(7)
    -- /a keeps its last revision at or before 7 (3); /b and /c end in a deletion: all gone
    assert.are.equal(H.show({ rev(3, 0), rev(8, 0) }), be:view(function(r) return H.show((H.all(r, "key"))) end))
    assert.are.same({ "/a" }, ks.keys)
    assert.are.equal(2, ks.revisions)
    assert.are.same({ 7, 7, 7 }, { ks.compacted, ks.meta.scheduledCompactRev, ks.meta.finishedCompactRev })
    local meta = be:view(function(r)
      return { r:get("meta", "scheduledCompactRev"), r:get("meta", "finishedCompactRev") }
    end)
    assert.are.same({ rev(7, 0), rev(7, 0) }, meta)
    assert.are.equal("2", ks:get("/a", { rev = 7 }).value)
    H.raises("required revision has been compacted (compacted at 7)", ks.get, ks, "/a", { rev = 6 })
    H.raises("required revision has been compacted (compacted at 7)", ks.compact, ks, 7)
    H.raises("required revision is a future revision (current 8)", ks.compact, ks, 9)
    assert_reread(ks)
  end)

  it("a compaction that removed the last revisions keeps the revision (etcd's restore does the same)", function()
    local be <close>, ks = new_keyspace()
    ks:put("/a", "1")
    ks:delete("/a")
    ks:compact(3)
    assert.are.equal("{}", dump(be, "key"))
    local again = etcd.open(be, { writable = true })
    assert.are.equal(3, again.revision)
    assert.are.equal(4, again:put("/a", "2"))
  end)

  it("a compaction etcd scheduled but did not finish is finished by a writable open, as etcd's start does", function()
    local be <close>, ks = new_keyspace()
    ks:put("/a", "1")
    ks:put("/a", "2")
    be:update(function(tx) tx:put("meta", "scheduledCompactRev", rev(3, 0)) end)
    assert.are.equal(0, etcd.open(be).compacted, "reading changes nothing")
    local w = etcd.open(be, { writable = true })
    assert.are.same({ 3, 1 }, { w.compacted, w.revisions })
    assert.are.equal(rev(3, 0), be:view(function(r) return r:get("meta", "finishedCompactRev") end))
  end)

  it("hash_kv: CRC-32C of \"key\" and the revisions up to rev, less those a compaction at rev drops", function()
    local be <close>, ks = new_keyspace()
    local function h(...)
      local crc = crc32c("key")
      for _, k in ipairs { ... } do
        crc = crc32c(be:view(function(r) return r:get("key", k) end), crc32c(k, crc))
      end
      return crc
    end
    assert.are.same({ h(), -1 }, { ks:hash_kv() })
    ks:put("/a", "1")   -- 2
    ks:put("/a", "2")   -- 3
    ks:put("/b", "1")   -- 4
    assert.are.same({ h(rev(2, 0), rev(3, 0), rev(4, 0)), -1 }, { ks:hash_kv() })
    assert.are.same({ h(rev(2, 0), rev(3, 0)), -1 }, { ks:hash_kv(3) })
    ks:compact(3)
    assert.are.same({ h(rev(3, 0), rev(4, 0)), 3 }, { ks:hash_kv() })
    ks:put("/a", "3")   -- 5
    -- etcd's HashByRev: /a's revision 3 is at the compaction and would not be kept at 5
    assert.are.same({ h(rev(4, 0), rev(5, 0)), 3 }, { ks:hash_kv() })
    assert.are.same({ h(rev(3, 0), rev(4, 0)), 3 }, { ks:hash_kv(4) })
    H.raises("required revision has been compacted (compacted at 3)", ks.hash_kv, ks, 3)
    H.raises("required revision is a future revision (current 5)", ks.hash_kv, ks, 6)
    assert.are.equal((ks:hash_kv()), (etcd.open(be):hash_kv()), "a read-only keyspace hashes too")
  end)

  it("a second writer's revisions are never overwritten: the stale handle raises", function()
    local be <close> = new_db()
    local one, two = etcd.open(be, { writable = true }), etcd.open(be, { writable = true })
    one:put("/a", "1")
    local before = dump(be, "key")
    H.raises("the keyspace changed since it was opened (revision 2 is stored; this handle is at 1)",
      two.put, two, "/b", "2")
    assert.are.equal(before, dump(be, "key"))
  end)

  it("random operations: the writer's keyspace always equals a fresh read of the database", function()
    local _ <close>, ks = new_keyspace()
    local seed = tonumber(os.getenv("BACKEND_SEED")) or os.time()
    math.randomseed(seed)
    local function key() return "/k/" .. math.random(0, 12) end
    local leases = {}
    for step = 1, 300 do
      local r = math.random(100)
      local lease = #leases > 0 and math.random(3) == 1 and leases[math.random(#leases)] or nil
      if r <= 40 then
        ks:put(key(), tostring(step), { lease = lease })
      elseif r <= 55 then
        ks:delete(key(), math.random(2) == 1 and { prefix = true } or nil)
      elseif r <= 70 then
        local a, b = key(), key()
        if a ~= b then ks:txn { { "put", a, "t" .. step }, { "put", b, "u" .. step, { lease = lease } } } end
      elseif r <= 78 then
        leases[#leases + 1] = ks:grant(math.random(1, 1000))
      elseif r <= 84 and #leases > 0 then
        ks:revoke(table.remove(leases, math.random(#leases)))
      elseif r <= 90 and ks.revision > ks.compacted then
        ks:compact(math.random(ks.compacted + 1, ks.revision))
      end
      local ok, err = pcall(assert_reread, ks)
      assert(ok, string.format("seed %d, step %d: %s", seed, step, tostring(err)))
    end
  end)

  it("bad input: clear errors, nothing written", function()
    local be <close>, ks = new_keyspace()
    ks:put("/a", "1")
    local ro = etcd.open(be)
    local before = dump(be, "key") .. dump(be, "meta") .. dump(be, "lease")
    for _, case in ipairs {
      { "options must be a table, got string", etcd.open, be, "writable" },
      { "unknown option 'writeable'", etcd.open, be, { writeable = true } },
      { "option writable must be a boolean, got number", etcd.open, be, { writable = 1 } },
      { "the keyspace is read-only: open it with { writable = true }", ro.put, ro, "/a", "2" },
      { "the keyspace is read-only", ro.delete, ro, "/a" },
      { "the keyspace is read-only", ro.txn, ro, {} },
      { "the keyspace is read-only", ro.grant, ro, 10 },
      { "the keyspace is read-only", ro.revoke, ro, 1 },
      { "the keyspace is read-only", ro.compact, ro, 2 },
      { "bad self (a keyspace from etcd.open expected)", ks.put, {}, "/a", "2" },
      { "bad self", ks.hash_kv, nil },
      { "key must be a string, got nil", ks.put, ks },
      { "value must be a string, got number", ks.put, ks, "/a", 5 },
      { "key is not provided", ks.put, ks, "", "v" },
      { "option lease must be a number, got string", ks.put, ks, "/a", "v", { lease = "1" } },
      { "lease must be an integer, got 1.5", ks.put, ks, "/a", "v", { lease = 1.5 } },
      { "lease must be >= 0, got -1", ks.put, ks, "/a", "v", { lease = -1 } },
      { "unknown option 'ttl'", ks.put, ks, "/a", "v", { ttl = 1 } },
      { "key must be a string, got table", ks.delete, ks, {} },
      { "key is not provided", ks.delete, ks, "" },
      { "prefix and range_end exclude each other", ks.delete, ks, "/a", { prefix = true, range_end = "/b" } },
      { "option range_end must be a string, got boolean", ks.delete, ks, "/a", { range_end = true } },
      { "ops must be a table, got string", ks.txn, ks, "put" },
      { "op 1 must be a table, got string", ks.txn, ks, { "put" } },
      { "ttl must be an integer, got nil", ks.grant, ks },
      { "ttl must be 1 to 9000000000, got 0", ks.grant, ks, 0 },
      { "ttl must be 1 to 9000000000, got 9000000001", ks.grant, ks, 9000000001 },
      { "lease id must be >= 1, got 0", ks.grant, ks, 10, 0 },
      { "lease id must be an integer, got x", ks.revoke, ks, "x" },
      { "rev must be an integer, got nil", ks.compact, ks },
      { "rev must be >= 1, got 0", ks.compact, ks, 0 },
      { "rev must be >= 0, got -1", ks.hash_kv, ks, -1 },
      { "rev must be an integer, got 2.5", ks.hash_kv, ks, 2.5 },
    } do
      H.raises(case[1], table.unpack(case, 2))
    end
    assert.are.equal(before, dump(be, "key") .. dump(be, "meta") .. dump(be, "lease"))
    assert.are.equal(3, ks:put("/a", "2"), "and it goes on")
  end)
end)
