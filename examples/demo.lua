--- A short tour of the backend: run with `make demo` (or `lua5.4 examples/demo.lua`).
-- Opens a temporary database, writes, reads while the writes are still
-- buffered, holds a concurrent read tx across later writes, snapshots,
-- hashes, defragments and prints the statistics.
local backend = require "backend"

local function say(fmt, ...) print(string.format(fmt, ...)) end

local be, path = backend.open_tmp { batch_interval = 0.05 }
say("backend %s (LMDB %s) opened %s", backend.version, backend.lmdb_version, path)

-- Write: lock the batch tx, write, unlock. Unlock makes the writes visible.
be:update(function(tx)
  tx:create_bucket("key")
  tx:create_bucket("meta")
  for i = 1, 1000 do
    tx:put("key", string.format("user/%04d", i), string.format("value %d", i))
  end
  tx:put("meta", "consistent_index", string.pack(">I8", 1000))
end)
say("wrote 1000 keys; pending (not yet committed): %d, commits so far: %d",
  be:batch_tx():pending(), be:commits())

-- Read while the writes are still buffered: the shared read tx sees them.
local rtx = be:read_tx():rlock()
local keys = rtx:range("key", "user/0100", "user/0105")
say("read while buffered, user/0100..0104: %s", table.concat(keys, " "))
rtx:runlock()

-- A concurrent read tx is a consistent view as of its creation.
local view <close> = be:concurrent_read_tx()
be:update(function(tx)
  tx:delete("key", "user/0001")
  tx:put("key", "user/0002", "changed")
end)
say("after a delete and an overwrite: view sees user/0001=%q user/0002=%q; " ..
  "a new read sees user/0001=%s user/0002=%q",
  view:get("key", "user/0001"), view:get("key", "user/0002"),
  tostring(be:view(function(r) return r:get("key", "user/0001") end)),
  be:view(function(r) return r:get("key", "user/0002") end))

-- Iterate in key order with break.
local n = 0
for k, v in view:pairs("key", "user/0998") do
  n = n + 1
  say("  %s = %s", k, v)
end
say("iterated %d keys from user/0998", n)
view:close()

-- Durability: force_commit returns once everything is fsync'd.
be:force_commit()
say("force_commit: commits %d, pending %d", be:commits(), be:batch_tx():pending())

-- Snapshot: a point-in-time copy that opens as a database of its own.
local snap_path = path .. ".snapshot"
do
  local snap <close> = be:snapshot()
  local bytes = snap:write_to(snap_path)
  say("snapshot: %d bytes written to %s", bytes, snap_path)
end
local copy = backend.open(snap_path)
say("hash of the backend %08x, of the snapshot %08x", be:hash(), copy:hash())
copy:close()
os.remove(snap_path)
os.remove(snap_path .. "-lock")

-- Defrag after deleting most keys: the file shrinks, the data stays.
be:update(function(tx)
  for i = 1, 1000 do
    if i % 10 ~= 0 then tx:delete("key", string.format("user/%04d", i)) end
  end
end)
be:force_commit()
local before, hash = be:size(), be:hash()
be:defrag()
say("defrag: size %d -> %d bytes (in use %d), hash unchanged: %s",
  before, be:size(), be:size_in_use(), tostring(be:hash() == hash))

local stats = be:stats()
local names = {}
for k in pairs(stats) do names[#names + 1] = k end
table.sort(names)
say("stats:")
for _, k in ipairs(names) do
  local v = stats[k]
  if type(v) == "table" then   -- a histogram: how many, how long in all
    v = string.format("%d observed, %.6f s in all", v.count, v.sum)
  end
  say("  %-22s %s", k, tostring(v))
end
be:close()
say("closed; temporary file removed: %s", tostring(io.open(path) == nil))
