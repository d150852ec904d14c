--- backend.etcd: etcd's keyspace (v3.4) decoded from a backend holding an
-- etcd data file (see `backend.import_bolt`): revision keys, `mvccpb.KeyValue`
-- records, leases, the meta bucket, so that keys, values and history read the
-- way `etcdctl get` shows them.
--
--   local ks = require("backend.etcd").open(be)
--   ks:get("/k")                    -- the live KeyValue, or nil
--   ks:get("/k", { rev = 42 })      -- as of revision 42
--   ks:range("/dir/", { prefix = true })
--   ks:history("/k")                -- every put and delete of /k still stored
local etcd = {}

local KEY_BUCKET, META_BUCKET, LEASE_BUCKET = "key", "meta", "lease"

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

-- Protocol buffers: just what mvccpb.KeyValue and leasepb.Lease need ------------

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

-- Decodes a message whose fields are all varints or bytes: returns a table
-- field number -> value (the last one wins, as in proto3), or nil, error.
local function fields(s)
  local out, i = {}, 1
  while i <= #s do
    local tag, len
    tag, i = varint(s, i)
    if not tag then return nil, "truncated field tag" end
    local num, wire = tag >> 3, tag & 7
    if wire == 0 then
      out[num], i = varint(s, i)
      if not out[num] then return nil, "truncated varint" end
    elseif wire == 2 then
      len, i = varint(s, i)
      if not len or len < 0 or i + len - 1 > #s then return nil, "truncated bytes field" end
      out[num], i = s:sub(i, i + len - 1), i + len
    elseif wire == 1 or wire == 5 then   -- fixed64/fixed32: skipped
      i = i + (wire == 1 and 8 or 4)
      if i - 1 > #s then return nil, "truncated fixed field" end
    else
      return nil, "unsupported wire type " .. wire
    end
  end
  return out
end

--- mvccpb.KeyValue: key, create_revision, mod_revision, version, value, lease.
function etcd.decode_kv(s)
  local f, err = fields(s)
  if not f then return nil, err end
  return { key = f[1] or "", create_revision = f[2] or 0, mod_revision = f[3] or 0,
           version = f[4] or 0, value = f[5] or "", lease = f[6] or 0 }
end

--- leasepb.Lease: id, ttl (seconds), remaining_ttl.
function etcd.decode_lease(s)
  local f, err = fields(s)
  if not f then return nil, err end
  return { id = f[1] or 0, ttl = f[2] or 0, remaining_ttl = f[3] or 0 }
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

--- Reads the keyspace of `be` (a Backend) as of now: one pass over the key
-- bucket, indexed by user key. Raises if the data is not etcd's.
function etcd.open(be)
  local ks = setmetatable({ by_key = {}, keys = {}, revision = 0, revisions = 0, compacted = 0,
                            meta = {}, leases = {} }, Keyspace)
  be:view(function(rtx)
    read_bucket(rtx, KEY_BUCKET, function(k, v)
      local main, sub, tomb = etcd.decode_revision(k)
      if not main then fail("key bucket: %q is %s", k, sub) end
      local kv, err = etcd.decode_kv(v)
      if not kv then fail("key bucket: revision %d.%d: %s", main, sub, err) end
      local versions = ks.by_key[kv.key]
      if not versions then
        versions = {}
        ks.by_key[kv.key] = versions
        ks.keys[#ks.keys + 1] = kv.key
      end
      versions[#versions + 1] = { main = main, sub = sub, tombstone = tomb, kv = kv }
      ks.revision, ks.revisions = main, ks.revisions + 1
    end)
    read_bucket(rtx, META_BUCKET, function(k, v)
      if k == "consistent_index" and #v == 8 then
        ks.meta.consistent_index = string.unpack(">I8", v)
      elseif k == "scheduledCompactRev" or k == "finishedCompactRev" then
        ks.meta[k] = etcd.decode_revision(v)
      else
        ks.meta[k] = v
      end
    end)
    read_bucket(rtx, LEASE_BUCKET, function(_, v)
      local lease, err = etcd.decode_lease(v)
      if not lease then fail("lease bucket: %s", err) end
      lease.keys = {}
      ks.leases[#ks.leases + 1] = lease
    end)
  end)
  ks.compacted = ks.meta.finishedCompactRev or 0
  table.sort(ks.keys)
  local by_id = {}
  for _, lease in ipairs(ks.leases) do by_id[lease.id] = lease end
  for _, key in ipairs(ks.keys) do
    local kv = ks:get(key)
    if kv and kv.lease ~= 0 and by_id[kv.lease] then table.insert(by_id[kv.lease].keys, key) end
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

--- The KeyValue of key at opts.rev (default: now), or nil if it does not exist then.
function Keyspace:get(key, opts)
  return live(self.by_key[key], self:at(opts))
end

local function prefix_end(prefix)
  for i = #prefix, 1, -1 do
    local b = prefix:byte(i)
    if b < 0xff then return prefix:sub(1, i - 1) .. string.char(b + 1) end
  end
  return nil   -- all 0xff (or empty): to the end
end

--- Live KeyValues in key order at opts.rev, at most opts.limit (0: all), as
-- etcd's Range: the key alone; with opts.range_end, [key, range_end) ("\0":
-- every key from key on); with opts.prefix, the keys starting with key.
function Keyspace:range(key, opts)
  opts = opts or {}
  local rev, limit = self:at(opts), opts.limit or 0
  local range_end = opts.range_end
  if opts.prefix then
    range_end = prefix_end(key)
  elseif range_end == nil then
    return { live(self.by_key[key], rev) }
  elseif range_end == "\0" then
    range_end = nil
  end
  local out = {}
  for _, k in ipairs(self.keys) do
    if k >= key and (range_end == nil or k < range_end) then
      local kv = live(self.by_key[k], rev)
      if kv then
        out[#out + 1] = kv
        if #out == limit then break end
      end
    elseif range_end and k >= range_end then
      break
    end
  end
  return out
end

--- Every stored revision of key, oldest first: { main, sub, tombstone, kv }.
function Keyspace:history(key)
  return self.by_key[key] or {}
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
