--- backend.etcd: etcd's keyspace (v3.4) in a backend holding etcd's data (see
-- `backend.import_bolt`), read and written in etcd's own on-disk format:
-- revision keys, `mvccpb.KeyValue` records, leases, the meta bucket, so that
-- keys, values and history read the way `etcdctl get` shows them, and what is
-- written here is what etcd itself would have written for the same requests.
--
--   local ks = require("backend.etcd").open(be)
--   ks:get("/k")                    -- the live KeyValue, or nil
--   ks:get("/k", { rev = 42 })      -- as of revision 42
--   ks:range("/dir/", { prefix = true })
--   ks:history("/k")                -- every put and delete of /k still stored
--
--   local ks = require("backend.etcd").open(be, { writable = true })
--   ks:put("/k", "v")               -- the new revision
--   ks:delete("/dir/", { prefix = true })
--   ks:txn { { "put", "/a", "1" }, { "delete", "/b" } }
local etcd = {}

local KEY_BUCKET, META_BUCKET, LEASE_BUCKET = "key", "meta", "lease"
local CONSISTENT_INDEX, SCHEDULED_COMPACT, FINISHED_COMPACT = "consistent_index", "scheduledCompactRev",
  "finishedCompactRev"
local MAX_LEASE_TTL = 9000000000   -- etcd's lease.MaxLeaseTTL

local function fail(msg, ...)
  error("backend: etcd: " .. string.format(msg, ...), 0)
end

-- Revisions ---------------------------------------------------------------------

--- A revision key: 8-byte big-endian main revision, "_", 8-byte sub revision,
-- then "t" if it marks a deletion (a tombstone). Returns main, sub, tombstone.
function etcd.decode_revision(b)
  if type(b) ~= "string" or (#b ~= 17 and #b ~= 18) or b:sub(9, 9) ~= "_"
      or (#b == 18 and b:sub(18) ~= "t") then
    return nil, "not an etcd revision key"
  end
  local main, sub = string.unpack(">i8", b), string.unpack(">i8", b, 10)
  return main, sub, #b == 18
end

function etcd.encode_revision(main, sub, tombstone)
  return string.pack(">i8", main) .. "_" .. string.pack(">i8", sub or 0) .. (tombstone and "t" or "")
end

local NO_REVISION_END = string.rep("\255", 18)   -- above every revision key

-- Protocol buffers: just what mvccpb.KeyValue and leasepb.Lease need ------------
-- Each message is a schema, { number, name, kind } in field order, that both
-- the encoder and the decoder follow; kind "bytes" (wire type 2) or "int64"
-- (a varint, wire type 0). Zero values are left out, as gogo/protobuf does.

local KEY_VALUE = { { 1, "key", "bytes" }, { 2, "create_revision", "int64" }, { 3, "mod_revision", "int64" },
                    { 4, "version", "int64" }, { 5, "value", "bytes" }, { 6, "lease", "int64" } }
local LEASE = { { 1, "id", "int64" }, { 2, "ttl", "int64" }, { 3, "remaining_ttl", "int64" } }
local WIRE = { bytes = 2, int64 = 0 }
local ZERO = { bytes = "", int64 = 0 }

local function varint(s, i)
  local n, shift = 0, 0
  repeat
    local b = s:byte(i)
    if not b or shift > 63 then return nil end
    n = n | ((b & 0x7f) << shift)   -- int64 wraps like Go's for negative values
    shift, i = shift + 7, i + 1
  until b < 0x80
  return n, i
end

-- n as a varint: 7 bits a byte, low first; a negative int64 takes 10 bytes.
local function put_varint(out, n)
  while math.ult(0x7f, n) do
    out[#out + 1] = string.char(n & 0x7f | 0x80)
    n = n >> 7   -- logical shift: the sign bit moves down like any other
  end
  out[#out + 1] = string.char(n)
end

-- Reads a message: returns a table field number -> { wire, value } (the last
-- one wins, as in proto3), or nil, error.
local function fields(s)
  local out, i = {}, 1
  while i <= #s do
    local tag, len
    tag, i = varint(s, i)
    if not tag then return nil, "truncated field tag" end
    local num, wire = tag >> 3, tag & 7
    if wire == 0 then
      local v
      v, i = varint(s, i)
      if not v then return nil, "truncated varint" end
      out[num] = { 0, v }
    elseif wire == 2 then
      len, i = varint(s, i)
      if not len or len < 0 or i + len - 1 > #s then return nil, "truncated bytes field" end
      out[num], i = { 2, s:sub(i, i + len - 1) }, i + len
    elseif wire == 1 or wire == 5 then   -- fixed64/fixed32: skipped
      i = i + (wire == 1 and 8 or 4)
      if i - 1 > #s then return nil, "truncated fixed field" end
    else
      return nil, "unsupported wire type " .. wire
    end
  end
  return out
end

local function decode(schema, s)
  local f, err = fields(s)
  if not f then return nil, err end
  local msg = {}
  for _, field in ipairs(schema) do
    local num, name, kind = table.unpack(field)
    local got = f[num]
    if got and got[1] ~= WIRE[kind] then return nil, string.format("field %s has wire type %d", name, got[1]) end
    msg[name] = got and got[2] or ZERO[kind]
  end
  return msg
end

local function encode(schema, msg)
  local out = {}
  for _, field in ipairs(schema) do
    local num, name, kind = table.unpack(field)
    local v = msg[name] or ZERO[kind]
    if v ~= ZERO[kind] then
      put_varint(out, num << 3 | WIRE[kind])
      if kind == "bytes" then
        put_varint(out, #v)
        out[#out + 1] = v
      else
        put_varint(out, v)
      end
    end
  end
  return table.concat(out)
end

--- mvccpb.KeyValue: key, create_revision, mod_revision, version, value, lease.
function etcd.decode_kv(s) return decode(KEY_VALUE, s) end
function etcd.encode_kv(kv) return encode(KEY_VALUE, kv) end

--- leasepb.Lease: id, ttl (seconds), remaining_ttl.
function etcd.decode_lease(s) return decode(LEASE, s) end
function etcd.encode_lease(lease) return encode(LEASE, lease) end

-- Sorted arrays ----------------------------------------------------------------

-- The first index whose element (or its field `by`) is >= v (#list + 1 if none).
local function lower_bound(list, v, by)
  local lo, hi = 1, #list + 1
  while lo < hi do
    local mid = (lo + hi) // 2
    local e = list[mid]
    if by then e = e[by] end
    if e < v then lo = mid + 1 else hi = mid end
  end
  return lo
end

local function sorted_insert(list, s)
  local i = lower_bound(list, s)
  if list[i] ~= s then table.insert(list, i, s) end
end

local function sorted_remove(list, s)
  local i = lower_bound(list, s)
  if list[i] == s then table.remove(list, i) end
end

-- Arguments ---------------------------------------------------------------------

local function check_type(what, v, want)
  if type(v) ~= want then fail("%s must be a %s, got %s", what, want, type(v)) end
end

local function check_integer(what, v, min, max)
  if math.type(v) ~= "integer" then fail("%s must be an integer, got %s", what, tostring(v)) end
  if v < min or (max and v > max) then
    fail("%s must be %s, got %d", what, max and string.format("%d to %d", min, max) or ">= " .. min, v)
  end
end

-- opts must be nil or a table whose fields are all in `allowed` (name -> type).
local function check_opts(opts, allowed)
  if opts == nil then return {} end
  check_type("options", opts, "table")
  for k, v in pairs(opts) do
    if not allowed[k] then fail("unknown option '%s'", tostring(k)) end
    if type(v) ~= allowed[k] then fail("option %s must be a %s, got %s", k, allowed[k], type(v)) end
  end
  return opts
end

local RANGE_OPTS = { prefix = "boolean", range_end = "string" }

-- The first key and the end (exclusive; nil: no end) of the keys a request
-- names, as etcd reads key and range_end: with prefix, the keys starting with
-- key; with range_end, [key, range_end), "\0" meaning every key from key on;
-- with neither, the key alone (single is then true).
local function prefix_end(prefix)
  for i = #prefix, 1, -1 do
    local b = prefix:byte(i)
    if b < 0xff then return prefix:sub(1, i - 1) .. string.char(b + 1) end
  end
  return nil   -- all 0xff (or empty): to the end
end

local function span(key, opts)
  check_type("key", key, "string")
  opts = check_opts(opts, RANGE_OPTS)
  if opts.prefix and opts.range_end then fail("prefix and range_end exclude each other") end
  if opts.prefix then return key, prefix_end(key) end
  if opts.range_end == nil then return key, nil, true end
  return key, opts.range_end ~= "\0" and opts.range_end or nil
end

-- The keyspace ------------------------------------------------------------------

local Keyspace = {}
Keyspace.__index = Keyspace

function Keyspace:__tostring()
  return string.format("etcd keyspace (revision %d, %d revisions of %d keys, compacted at %d)",
    self.revision, self.revisions, #self.keys, self.compacted)
end

local function read_bucket(rtx, bucket, fn)
  for k, v in rtx:pairs(bucket) do fn(k, v) end
end

-- The version of `key` live at revision rev, or nil.
local function live(versions, rev)
  local found
  for _, v in ipairs(versions or {}) do
    if v.main > rev then break end
    found = v
  end
  if found and not found.tombstone then return found.kv end
  return nil
end

-- Appends a stored revision of kv.key to the keyspace in memory; returns
-- true if the key had none (the caller adds it to ks.keys).
local function record(ks, main, sub, tombstone, kv)
  local versions, new = ks.by_key[kv.key], false
  if not versions then
    versions, new = {}, true
    ks.by_key[kv.key] = versions
  end
  versions[#versions + 1] = { main = main, sub = sub, tombstone = tombstone, kv = kv }
  ks.revisions = ks.revisions + 1
  return new
end

-- Adds a lease to ks.leases (in ID order) and ks.lease_by_id.
local function insert_lease(ks, lease)
  ks.lease_by_id[lease.id] = lease
  table.insert(ks.leases, lower_bound(ks.leases, lease.id, "id"), lease)
end

-- Reads the keyspace of be into memory: one pass over each bucket.
local function load(ks, be)
  be:view(function(rtx)
    local last = 0
    read_bucket(rtx, KEY_BUCKET, function(k, v)
      local main, sub, tomb = etcd.decode_revision(k)
      if not main then fail("key bucket: %q is %s", k, sub) end
      local kv, err = etcd.decode_kv(v)
      if not kv then fail("key bucket: revision %d.%d: %s", main, sub, err) end
      if record(ks, main, sub, tomb, kv) then ks.keys[#ks.keys + 1] = kv.key end
      last = main
    end)
    read_bucket(rtx, META_BUCKET, function(k, v)
      if k == CONSISTENT_INDEX and #v == 8 then
        ks.meta[k] = string.unpack(">I8", v)
      elseif k == SCHEDULED_COMPACT or k == FINISHED_COMPACT then
        ks.meta[k] = etcd.decode_revision(v)
      else
        ks.meta[k] = v
      end
    end)
    read_bucket(rtx, LEASE_BUCKET, function(_, v)
      local lease, err = etcd.decode_lease(v)
      if not lease then fail("lease bucket: %s", err) end
      lease.keys = {}
      insert_lease(ks, lease)
    end)
    ks.compacted = ks.meta[FINISHED_COMPACT] or 0
    -- a fresh store is at revision 1; a compaction may have removed the last revisions
    ks.revision = math.max(1, last, ks.compacted)
  end)
  table.sort(ks.keys)
  for _, key in ipairs(ks.keys) do
    local kv = ks:get(key)
    local lease = kv and ks.lease_by_id[kv.lease]
    if lease then table.insert(lease.keys, key) end
  end
end

-- Creates etcd's own buckets that be lacks (an empty database).
local function create_buckets(be)
  local have = {}
  be:view(function(rtx)
    for _, name in ipairs(rtx:buckets()) do have[name] = true end
  end)
  if have[KEY_BUCKET] and have[META_BUCKET] and have[LEASE_BUCKET] then return end
  be:update(function(tx)
    for _, name in ipairs { KEY_BUCKET, META_BUCKET, LEASE_BUCKET } do tx:create_bucket(name) end
  end)
end

--- Reads the keyspace of `be` (a Backend) as of now, indexed by user key.
-- Raises if the data is not etcd's. With opts.writable, the keyspace can be
-- written (etcd's buckets are created on an empty database, and a compaction
-- that etcd scheduled but did not finish is finished, as etcd does on start).
function etcd.open(be, opts)
  opts = check_opts(opts, { writable = "boolean" })
  local ks = setmetatable({ by_key = {}, keys = {}, revision = 1, revisions = 0, compacted = 0,
                            meta = {}, leases = {}, lease_by_id = {}, be = be, writable = opts.writable },
                          Keyspace)
  if ks.writable then create_buckets(be) end
  load(ks, be)
  local scheduled = ks.meta[SCHEDULED_COMPACT]
  if ks.writable and scheduled and scheduled > ks.compacted and scheduled <= ks.revision then
    ks:compact(scheduled)
  end
  return ks
end

-- The revision to read at: opts.rev (0 or nil: the current one), checked the
-- way etcd checks it.
function Keyspace:at(opts)
  local rev = opts and opts.rev or 0
  if math.type(rev) ~= "integer" then fail("rev must be an integer, got %s", tostring(rev)) end
  if rev <= 0 then return self.revision end
  if rev > self.revision then fail("required revision is a future revision (current %d)", self.revision) end
  if rev < self.compacted then fail("required revision has been compacted (compacted at %d)", self.compacted) end
  return rev
end

--- The KeyValue of key at opts.rev (default: now), or nil if it does not exist then.
function Keyspace:get(key, opts)
  return live(self.by_key[key], self:at(opts))
end

-- Calls fn(key) for each key in [first, stop) (stop nil: to the end) that has
-- a stored revision, in order, until fn returns true.
local function each_key(ks, first, stop, fn)
  for i = lower_bound(ks.keys, first), #ks.keys do
    local k = ks.keys[i]
    if stop and k >= stop then break end
    if fn(k) then break end
  end
end

--- Live KeyValues in key order at opts.rev, at most opts.limit (0: all), as
-- etcd's Range: the key alone; with opts.range_end, [key, range_end) ("\0":
-- every key from key on); with opts.prefix, the keys starting with key.
function Keyspace:range(key, opts)
  opts = opts or {}
  local rev, limit = self:at(opts), opts.limit or 0
  local first, stop, single = span(key, { prefix = opts.prefix, range_end = opts.range_end })
  if single then return { live(self.by_key[key], rev) } end
  local out = {}
  each_key(self, first, stop, function(k)
    local kv = live(self.by_key[k], rev)
    if kv then out[#out + 1] = kv end
    return limit > 0 and #out >= limit
  end)
  return out
end

--- Every stored revision of key, oldest first: { main, sub, tombstone, kv }.
function Keyspace:history(key)
  return self.by_key[key] or {}
end

-- Writing -----------------------------------------------------------------------
-- A write is planned first (every check made, nothing changed), then stored in
-- one section of the backend (all or nothing), and only then applied to the
-- keyspace in memory: a failure anywhere leaves both as they were.

-- A change in the making: the bucket writes { bucket, key, value or nil to
-- delete } in order, and what to apply in memory once they are stored.
local function new_change(ks)
  return { ks = ks, main = ks.revision + 1, sub = 0, writes = {}, apply = {}, deleted = {} }
end

local function add(ch, bucket, key, value, apply)
  ch.writes[#ch.writes + 1] = { bucket, key, value }
  ch.apply[#ch.apply + 1] = apply
end

local function attach(ks, key, lease_id)
  local lease = ks.lease_by_id[lease_id]
  if lease then sorted_insert(lease.keys, key) end
end

local function detach(ks, key, lease_id)
  local lease = ks.lease_by_id[lease_id]
  if lease then sorted_remove(lease.keys, key) end
end

local function check_lease(ks, lease)
  check_integer("lease", lease, 0)
  if lease ~= 0 and not ks.lease_by_id[lease] then fail("requested lease not found: %x", lease) end
end

-- A put of key in ch, as etcd's storeTxnWrite.put: the key keeps its create
-- revision and counts one more version while it lives.
local function stage_put(ch, key, value, opts)
  local ks = ch.ks
  check_type("key", key, "string")
  check_type("value", value, "string")
  if key == "" then fail("key is not provided") end
  local lease = check_opts(opts, { lease = "number" }).lease or 0
  check_lease(ks, lease)
  local prev = live(ks.by_key[key], ks.revision)
  local kv = { key = key, value = value, create_revision = prev and prev.create_revision or ch.main,
               mod_revision = ch.main, version = (prev and prev.version or 0) + 1, lease = lease }
  local main, sub = ch.main, ch.sub
  add(ch, KEY_BUCKET, etcd.encode_revision(main, sub), etcd.encode_kv(kv), function()
    if record(ks, main, sub, false, kv) then sorted_insert(ks.keys, key) end
    if prev then detach(ks, key, prev.lease) end
    attach(ks, key, lease)
  end)
  ch.sub = sub + 1
end

-- A deletion of one live key in ch: a tombstone whose KeyValue holds the key alone.
local function stage_tombstone(ch, key)
  local ks = ch.ks
  local prev = live(ks.by_key[key], ks.revision)
  local main, sub = ch.main, ch.sub
  local kv = { key = key, value = "", create_revision = 0, mod_revision = 0, version = 0, lease = 0 }
  add(ch, KEY_BUCKET, etcd.encode_revision(main, sub, true), etcd.encode_kv(kv), function()
    record(ks, main, sub, true, kv)   -- the key was live: it is in ks.keys
    detach(ks, key, prev.lease)
  end)
  ch.sub, ch.deleted[key] = sub + 1, true
end

-- A delete range in ch: every key live now (and not deleted earlier in ch).
-- Returns the number of keys it deletes.
local function stage_delete(ch, key, opts)
  local ks = ch.ks
  local first, stop, single = span(key, opts)
  if first == "" and single then fail("key is not provided") end
  local n = 0
  local function delete(k)
    if not ch.deleted[k] and live(ks.by_key[k], ks.revision) then
      stage_tombstone(ch, k)
      n = n + 1
    end
  end
  if single then delete(key) else each_key(ks, first, stop, delete) end
  return n
end

-- Stores ch (nothing if it writes nothing) with the next consistent index,
-- then applies it in memory. The keyspace must still be what this handle read:
-- revisions stored by another writer since would be overwritten.
local function commit(ch)
  local ks = ch.ks
  if #ch.writes == 0 then return end
  local index = (ks.meta[CONSISTENT_INDEX] or 0) + 1
  ks.be:update(function(tx)
    local newer = tx:range(KEY_BUCKET, etcd.encode_revision(ks.revision + 1, 0), NO_REVISION_END, 1)
    if #newer > 0 then
      fail("the keyspace changed since it was opened (revision %d is stored; this handle is at %d): open it again",
        (etcd.decode_revision(newer[1])), ks.revision)
    end
    for _, w in ipairs(ch.writes) do
      if w[3] == nil then tx:delete(w[1], w[2]) else tx:put(w[1], w[2], w[3]) end
    end
    tx:put(META_BUCKET, CONSISTENT_INDEX, string.pack(">I8", index))
  end)
  ks.meta[CONSISTENT_INDEX] = index
  for _, apply in ipairs(ch.apply) do apply() end
  if ch.sub > 0 then ks.revision = ch.main end
end

local function check_self(ks)
  if getmetatable(ks) ~= Keyspace then fail("bad self (a keyspace from etcd.open expected)") end
end

local function check_writable(ks)
  check_self(ks)
  if not ks.writable then fail("the keyspace is read-only: open it with { writable = true }") end
end

-- The revision a change leaves the keyspace at.
local function done(ch)
  commit(ch)
  return ch.ks.revision
end

--- Puts key = value (opts.lease: a granted lease, 0 or nil: none) at a new
-- revision, which it returns.
function Keyspace:put(key, value, opts)
  check_writable(self)
  local ch = new_change(self)
  stage_put(ch, key, value, opts)
  return done(ch)
end

--- Deletes key (opts.prefix: every key starting with it; opts.range_end:
-- [key, range_end), "\0": every key from key on). Returns the revision and
-- the number of keys deleted (no new revision when there were none).
function Keyspace:delete(key, opts)
  check_writable(self)
  local ch = new_change(self)
  local n = stage_delete(ch, key, opts)
  return done(ch), n
end

--- Several puts and deletes at one revision, as etcd's Txn: ops is an array
-- of { "put", key, value [, opts] } and { "delete", key [, opts] }, applied in
-- order with increasing sub revisions, all or none. As etcd, a key may be put
-- only once and not in a range that the txn deletes. Returns the revision and
-- the number of keys deleted.
function Keyspace:txn(ops)
  check_writable(self)
  check_type("ops", ops, "table")
  for k in pairs(ops) do
    if math.type(k) ~= "integer" or k < 1 or k > #ops then fail("ops must be an array of operations") end
  end
  local ch, puts, ranges, n = new_change(self), {}, {}, 0
  for i, op in ipairs(ops) do
    check_type("op " .. i, op, "table")
    if op[1] == "put" then
      stage_put(ch, op[2], op[3], op[4])
      if puts[op[2]] then fail("duplicate key given in txn request: %q", op[2]) end
      puts[op[2]] = true
    elseif op[1] == "delete" then
      n = n + stage_delete(ch, op[2], op[3])
      ranges[#ranges + 1] = { span(op[2], op[3]) }
    else
      fail("op %d must start with \"put\" or \"delete\", got %s", i, tostring(op[1]))
    end
  end
  for key in pairs(puts) do
    for _, r in ipairs(ranges) do
      local first, stop, single = r[1], r[2], r[3]
      if single and key == first or not single and key >= first and (stop == nil or key < stop) then
        fail("duplicate key given in txn request: %q is put and deleted", key)
      end
    end
  end
  return done(ch), n
end

--- Grants a lease of ttl seconds, with the given id (a positive integer) or
-- the next one after the largest. Returns its id.
function Keyspace:grant(ttl, id)
  check_writable(self)
  check_integer("ttl", ttl, 1, MAX_LEASE_TTL)
  if id == nil then
    local last = self.leases[#self.leases]
    id = last and last.id + 1 or 1
  end
  check_integer("lease id", id, 1)
  if self.lease_by_id[id] then fail("lease already exists: %x", id) end
  local lease = { id = id, ttl = ttl, remaining_ttl = 0, keys = {} }
  local ch = new_change(self)
  add(ch, LEASE_BUCKET, string.pack(">i8", id), etcd.encode_lease(lease), function() insert_lease(self, lease) end)
  commit(ch)
  return id
end

--- Revokes a lease: its keys are deleted at one new revision (in key order, as
-- etcd's lessor deletes them), and it is removed. Returns the revision.
function Keyspace:revoke(id)
  check_writable(self)
  check_integer("lease id", id, 1)
  local lease = self.lease_by_id[id]
  if not lease then fail("requested lease not found: %x", id) end
  local ch = new_change(self)
  for _, key in ipairs(table.move(lease.keys, 1, #lease.keys, 1, {})) do stage_tombstone(ch, key) end
  add(ch, LEASE_BUCKET, string.pack(">i8", id), nil, function()
    self.lease_by_id[id] = nil
    for i, l in ipairs(self.leases) do
      if l == lease then table.remove(self.leases, i) break end
    end
  end)
  return done(ch)
end

-- Compaction and HashKV ---------------------------------------------------------

-- The revision keys (17 bytes, no tombstone mark) that a compaction at rev
-- keeps, as etcd's keyIndex.keep finds them: of each key, its last revision
-- at or before rev, unless that is a deletion.
local function kept(ks, rev)
  local keep = {}
  for _, versions in pairs(ks.by_key) do
    for i = #versions, 1, -1 do
      local v = versions[i]
      if v.main <= rev then
        if not v.tombstone then keep[etcd.encode_revision(v.main, v.sub)] = true end
        break
      end
    end
  end
  return keep
end

-- rev checked as etcd's compaction and HashKV check it.
local function check_rev(ks, rev)
  if rev <= ks.compacted then fail("required revision has been compacted (compacted at %d)", ks.compacted) end
  if rev > ks.revision then fail("required revision is a future revision (current %d)", ks.revision) end
end

--- Removes the revisions at or before rev that no read at rev or later needs
-- (etcd's compaction: of each key only its last revision at or before rev
-- stays, and not even that if it is a deletion), and records the compaction
-- in the meta bucket as etcd does.
function Keyspace:compact(rev)
  check_writable(self)
  check_integer("rev", rev, 1)
  check_rev(self, rev)
  local keep = kept(self, rev)
  local at = etcd.encode_revision(rev, 0)
  local ch = new_change(self)
  add(ch, META_BUCKET, SCHEDULED_COMPACT, at, function() self.meta[SCHEDULED_COMPACT] = rev end)
  for _, key in ipairs(self.keys) do
    for _, v in ipairs(self.by_key[key]) do
      if v.main > rev then break end
      local k = etcd.encode_revision(v.main, v.sub)
      if not keep[k] then add(ch, KEY_BUCKET, k .. (v.tombstone and "t" or ""), nil) end
    end
  end
  add(ch, META_BUCKET, FINISHED_COMPACT, at, function()
    local keys = {}
    for _, key in ipairs(self.keys) do
      local versions, left = self.by_key[key], {}
      for _, v in ipairs(versions) do
        if v.main > rev or keep[etcd.encode_revision(v.main, v.sub)] then left[#left + 1] = v end
      end
      self.revisions = self.revisions - (#versions - #left)
      self.by_key[key] = #left > 0 and left or nil
      if #left > 0 then keys[#keys + 1] = key end
    end
    self.keys, self.compacted, self.meta[FINISHED_COMPACT] = keys, rev, rev
  end)
  commit(ch)
end

--- etcd's HashKV (`etcdctl endpoint hashkv [--rev N]`) at rev (0 or nil: the
-- current revision): CRC-32C of the bucket name "key" and of each revision key
-- and value up to rev, leaving out those at or before the compaction that a
-- compaction at rev would remove (store.HashByRev). Returns the hash and the
-- compaction revision as etcd reports it (-1: never compacted).
function Keyspace:hash_kv(rev)
  check_self(self)
  rev = rev or 0
  check_integer("rev", rev, 0)
  if rev == 0 then rev = self.revision else check_rev(self, rev) end
  local crc32c = require("backend").crc32c
  local keep = kept(self, rev)
  local sparse = next(keep) ~= nil   -- etcd keeps everything when nothing would be kept
  local crc = crc32c(KEY_BUCKET)
  self.be:view(function(rtx)
    for k, v in rtx:pairs(KEY_BUCKET, nil, etcd.encode_revision(rev + 1, 0)) do
      if not (sparse and string.unpack(">i8", k) <= self.compacted and not keep[k:sub(1, 17)]) then
        crc = crc32c(v, crc32c(k, crc))
      end
    end
  end)
  return crc, self.compacted > 0 and self.compacted or -1
end

-- Status: what `etcdctl snapshot status` prints -----------------------------------

local function revision_of(last_key)
  if not last_key then return 0 end
  return (etcd.decode_revision(last_key)) or 0
end

--- etcd's hash of an etcd data file f (a BoltFile, see backend.open_bolt), as
-- be:hash(ignores) computes it for a Backend: CRC-32C over each bucket name,
-- then its keys and values, leaving out the keys k with ignores[bucket][k].
-- on_kv(bucket, key, value), if given, is called for every key on the way.
function etcd.bolt_hash(f, ignores, on_kv)
  local crc32c = require("backend").crc32c
  local crc = 0
  f:walk(function(bucket) crc = crc32c(bucket, crc) end, function(bucket, k, v)
    if not (ignores and ignores[bucket] and ignores[bucket][k]) then crc = crc32c(v, crc32c(k, crc)) end
    if on_kv then on_kv(bucket, k, v) end
  end)
  return crc
end

--- `etcdctl snapshot status` for an etcd data file (a path, or a BoltFile
-- from backend.open_bolt) or for a Backend (an imported one): { hash,
-- revision, totalKey, totalSize }. hash is CRC-32C over every bucket name, key
-- and value; revision the main revision of the key bucket's last key;
-- totalKey the keys of all buckets; totalSize the bytes the file uses (for a
-- Backend, its own file's size).
function etcd.status(source)
  if type(source) == "string" then
    local f <close> = require("backend").open_bolt(source)
    return etcd.status(f)
  end
  local keys, last = 0, nil
  if source.walk then   -- a BoltFile
    local crc = etcd.bolt_hash(source, nil, function(bucket, k)
      keys = keys + 1
      if bucket == KEY_BUCKET then last = k end
    end)
    return { hash = crc, revision = revision_of(last), totalKey = keys, totalSize = source:info().total_size }
  end
  source:view(function(rtx)
    for _, bucket in ipairs(rtx:buckets()) do
      for k in rtx:pairs(bucket) do
        keys = keys + 1
        if bucket == KEY_BUCKET then last = k end
      end
    end
  end)
  return { hash = source:hash(), revision = revision_of(last), totalKey = keys, totalSize = source:size() }
end

return etcd
