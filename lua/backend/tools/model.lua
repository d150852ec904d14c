--- backend.tools.model — a pure-Lua reference model of what the `backend` module shows.
--
-- The model keeps buckets of binary-safe keys in byte order and answers every read
-- the way the backend must (API.md). Whether data is committed or only buffered
-- does not change what a reader sees, so the model only tracks *views*:
--
--   * the BatchTx view (`m:range`, `m:get`, ...): every write at once, deletes included;
--   * the published view (the shared ReadTx): the state as of the last `m:unlock()`
--     (`m:rollback()` goes back to it);
--   * frozen views: `m:concurrent_read_tx()` and `m:snapshot()` copy the published
--     state at the moment they are taken and never change;
--   * the committed view (`m:committed()`): what LMDB holds, as far as the model can
--     know it (after `force_commit`, `commit`, `hash`, `snapshot`, `defrag`, `close`,
--     and limit commits at unlock). Background timer commits are not modelled.
--
-- Copies are cheap: buckets are copy-on-write, so taking a view costs O(buckets).
--
--   local model = require "backend.tools.model"
--   local m = model.new{ batch_limit = 10000 }
--   m:lock(); m:create_bucket("key"); m:put("key", "abc", "1"); m:unlock()
--   local keys, vals = m:range("key", "a", "b")
--   local rtx = m:read_tx(); rtx:rlock(); rtx:get("key", "abc"); rtx:runlock()
--   local ctx = m:concurrent_read_tx()     -- frozen
--   local h = m:hash()                      -- CRC-32C as be:hash() computes it
--
-- Errors are raised like the backend raises them: strings starting "backend: ".
-- Nothing in this file needs the C module.

local byte, format, type = string.byte, string.format, type
local tointeger = math.tointeger
local sort, concat = table.sort, table.concat

local model = { _VERSION = "backend.model 1" }

-- ---------------------------------------------------------------------------
-- Byte order (memcmp, shorter first on a common prefix), independent of locale.

local function less(a, b)
  if a == b then return false end
  local la, lb = #a, #b
  local n = la < lb and la or lb
  local i = 1
  -- compare 8 bytes at a time while they are equal
  while i + 7 <= n do
    local a1, a2, a3, a4, a5, a6, a7, a8 = byte(a, i, i + 7)
    local b1, b2, b3, b4, b5, b6, b7, b8 = byte(b, i, i + 7)
    if a1 ~= b1 then return a1 < b1 end
    if a2 ~= b2 then return a2 < b2 end
    if a3 ~= b3 then return a3 < b3 end
    if a4 ~= b4 then return a4 < b4 end
    if a5 ~= b5 then return a5 < b5 end
    if a6 ~= b6 then return a6 < b6 end
    if a7 ~= b7 then return a7 < b7 end
    if a8 ~= b8 then return a8 < b8 end
    i = i + 8
  end
  while i <= n do
    local x, y = byte(a, i), byte(b, i)
    if x ~= y then return x < y end
    i = i + 1
  end
  return la < lb
end
model.less = less

--- Sorts an array of strings in byte order (in place) and returns it.
function model.sort(t)
  sort(t, less)
  return t
end

-- first index i with keys[i] >= k (#keys + 1 if none)
local function lower_bound(keys, k)
  local lo, hi = 1, #keys + 1
  while lo < hi do
    local mid = (lo + hi) // 2
    if less(keys[mid], k) then lo = mid + 1 else hi = mid end
  end
  return lo
end
model.lower_bound = lower_bound

-- ---------------------------------------------------------------------------
-- CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), continuable:
-- crc32c(b, crc32c(a)) == crc32c(a .. b), like Go's crc32.Update.

local crc_table
local function crc32c(s, crc)
  if not crc_table then
    crc_table = {}
    for i = 0, 255 do
      local c = i
      for _ = 1, 8 do
        if c & 1 == 1 then c = (c >> 1) ~ 0x82F63B78 else c = c >> 1 end
      end
      crc_table[i] = c
    end
  end
  local t = crc_table
  local c = (crc or 0) ~ 0xFFFFFFFF
  for i = 1, #s do
    c = t[(c ~ byte(s, i)) & 0xFF] ~ (c >> 8)
  end
  return c ~ 0xFFFFFFFF
end
model.crc32c = crc32c

-- ---------------------------------------------------------------------------
-- Argument checks, with the backend's messages.

local function fail(msg, ...)
  error("backend: " .. format(msg, ...), 0)
end

local function typename(v)
  return type(v) == "number" and "number" or type(v)
end

local function check_string(v, argn, fname)
  if type(v) ~= "string" then
    fail("bad argument #%d to '%s' (string expected, got %s)", argn, fname, typename(v))
  end
  return v
end


-- Argument numbers count the receiver as #1, as the backend does:
-- tx:put(bucket #2, key #3, value #4); tx:range(bucket #2, key #3, end_key #4, limit #5).
local function check_bucket(self, name, fname)
  check_string(name, 2, fname)
  if name == "" then fail("bucket name must not be empty") end
  local max = self and self.max_key_size
  if max and #name > max then
    fail("bucket name is too long (%d bytes; the limit is %d bytes)", #name, max)
  end
  return name
end

local function check_key(self, key, argn, fname, allow_empty)
  check_string(key, argn, fname)
  if key == "" and not allow_empty then fail("key must not be empty") end
  local max = self and self.max_key_size
  if max and #key > max then
    fail("key is too long (%d bytes; the limit is %d bytes)", #key, max)
  end
  return key
end

local function check_limit(limit, fname)
  if limit == nil then return 0 end
  if type(limit) ~= "number" then
    fail("bad argument #5 to '%s' (number expected, got %s)", fname, typename(limit))
  end
  local n = tointeger(limit)
  if not n then fail("bad argument #5 to '%s' (integer expected, got number)", fname) end
  return n
end

-- ---------------------------------------------------------------------------
-- Buckets: { map = {k = v}, keys = sorted array, frozen = bool }. A frozen bucket
-- is shared by at least one view; writers copy it first.

local function new_bucket()
  return { map = {}, keys = {}, frozen = false }
end

local function clone_bucket(b)
  local map, keys = {}, {}
  for k, v in next, b.map do map[k] = v end
  for i = 1, #b.keys do keys[i] = b.keys[i] end
  return { map = map, keys = keys, frozen = false }
end

local function bucket_put(b, k, v)
  if b.map[k] == nil then
    local keys = b.keys
    table.insert(keys, lower_bound(keys, k), k)
  end
  b.map[k] = v
end

local function bucket_delete(b, k)
  if b.map[k] ~= nil then
    b.map[k] = nil
    local keys = b.keys
    table.remove(keys, lower_bound(keys, k))
  end
end

-- a state is a table name -> bucket; freezing marks every bucket shared and
-- returns a new table (so adding/removing buckets later does not touch the copy)
local function freeze(state)
  local copy = {}
  for name, b in next, state do
    b.frozen = true
    copy[name] = b
  end
  return copy
end

-- ---------------------------------------------------------------------------
-- View: read-only access to one state. Every tx kind reads through one of these.

local View = {}
View.__index = View
model.View = View

local function new_view(state, kind)
  return setmetatable({ state = state, kind = kind or "view" }, View)
end

function View:bucket_names()
  local names = {}
  for name in next, self.state do names[#names + 1] = name end
  return model.sort(names)
end

function View:has_bucket(name)
  return self.state[name] ~= nil
end

--- Number of keys in `bucket` (0 if it does not exist).
function View:count(bucket)
  local b = self.state[bucket]
  return b and #b.keys or 0
end

--- range(bucket, key, end_key, limit) -> keys, values (two arrays, maybe empty).
-- end_key == nil: exactly `key`; else key <= k < end_key. limit nil or <= 0: no limit.
function View:range(bucket, key, end_key, limit)
  check_bucket(nil, bucket, "range")
  check_key(nil, key, 3, "range", end_key ~= nil)
  if end_key ~= nil then check_string(end_key, 4, "range") end
  limit = check_limit(limit, "range")
  local ks, vs = {}, {}
  local b = self.state[bucket]
  if not b then return ks, vs end
  if end_key == nil then
    local v = b.map[key]
    if v ~= nil then ks[1], vs[1] = key, v end
    return ks, vs
  end
  if limit <= 0 then limit = math.maxinteger end
  local keys = b.keys
  local n = 0
  for i = lower_bound(keys, key), #keys do
    local k = keys[i]
    if n >= limit or not less(k, end_key) then break end
    n = n + 1
    ks[n], vs[n] = k, b.map[k]
  end
  return ks, vs
end

function View:get(bucket, key)
  check_bucket(nil, bucket, "get")
  check_key(nil, key, 3, "get")
  local b = self.state[bucket]
  return b and b.map[key]
end

--- fn(k, v) for every key in byte order; errors propagate.
function View:for_each(bucket, fn)
  check_bucket(nil, bucket, "for_each")
  local b = self.state[bucket]
  if not b then return end
  local keys, map = b.keys, b.map
  for i = 1, #keys do fn(keys[i], map[keys[i]]) end
end

--- Iterator over bucket in key order, from `from` (inclusive) to `to` (exclusive).
function View:pairs(bucket, from, to)
  check_bucket(nil, bucket, "pairs")
  if from ~= nil then check_string(from, 3, "pairs") end
  if to ~= nil then check_string(to, 4, "pairs") end
  local b = self.state[bucket]
  if not b then return function() return nil end end
  local keys, map = b.keys, b.map
  local i = from and lower_bound(keys, from) or 1
  return function()
    local k = keys[i]
    if k == nil or (to ~= nil and not less(k, to)) then return nil end
    i = i + 1
    return k, map[k]
  end
end

--- { [bucket] = { keys = {...}, vals = {...} } } — a plain copy of the whole view.
function View:dump()
  local out = {}
  for name, b in next, self.state do
    local ks, vs = {}, {}
    for i, k in ipairs(b.keys) do ks[i], vs[i] = k, b.map[k] end
    out[name] = { keys = ks, vals = vs }
  end
  return out
end

--- CRC-32C over bucket names, then keys and values, in byte order, skipping
-- ignores[bucket][key] == true; `crc` defaults to model.crc32c (pass
-- backend.crc32c to use the C one).
function View:hash(ignores, crc)
  crc = crc or crc32c
  local h = 0
  for _, name in ipairs(self:bucket_names()) do
    h = crc(name, h)
    local b = self.state[name]
    local ign = ignores and ignores[name]
    for _, k in ipairs(b.keys) do
      if not (ign and ign[k] == true) then
        h = crc(k, h)
        h = crc(b.map[k], h)
      end
    end
  end
  return h
end

-- A frozen copy: later writes to the model never reach it.
function View:freeze()
  return new_view(freeze(self.state), self.kind)
end

-- No-ops so a view can stand in for a ConcurrentReadTx.
function View:rlock() return self end
function View:lock() return self end
function View.unlock() end
function View:runlock() self.closed = true end
function View:close() self.closed = true end

--- A printable, Lua-readable rendering of a binary string: "a\000\255".
local function quote(s)
  if s == nil then return "nil" end
  local out = {}
  for i = 1, #s do
    local c = byte(s, i)
    if c == 34 or c == 92 then
      out[i] = "\\" .. string.char(c)
    elseif c >= 32 and c <= 126 then
      out[i] = string.char(c)
    else
      out[i] = format("\\%03d", c)
    end
  end
  return '"' .. concat(out) .. '"'
end
model.quote = quote

--- Compares two views bucket by bucket; returns true, or false and a description
-- of the first difference.
function View:diff(other)
  local a, b = self:bucket_names(), other:bucket_names()
  if #a ~= #b then
    return false, format("bucket lists differ: {%s} vs {%s}", concat(a, ","), concat(b, ","))
  end
  for i = 1, #a do
    if a[i] ~= b[i] then
      return false, format("bucket #%d: %s vs %s", i, quote(a[i]), quote(b[i]))
    end
    local x, y = self.state[a[i]], other.state[b[i]]
    if #x.keys ~= #y.keys then
      return false, format("bucket %s: %d keys vs %d keys", quote(a[i]), #x.keys, #y.keys)
    end
    for j, k in ipairs(x.keys) do
      if y.keys[j] ~= k then
        return false, format("bucket %s key #%d: %s vs %s", quote(a[i]), j, quote(k), quote(y.keys[j]))
      end
      if x.map[k] ~= y.map[k] then
        return false, format("bucket %s key %s: value %s vs %s", quote(a[i]), quote(k),
          quote(x.map[k]), quote(y.map[k]))
      end
    end
  end
  return true
end

-- ---------------------------------------------------------------------------
-- ReadTx model: the shared read tx; sees the published state as of rlock().

local ReadTx = {}
ReadTx.__index = function(_, k)
  local m = ReadTx[k]
  if m then return m end
  local vm = View[k]
  if type(vm) == "function" then
    return function(rtx, ...)
      if not rtx.view then fail("read tx is not locked") end
      return vm(rtx.view, ...)
    end
  end
end

function ReadTx:rlock()
  self.view = new_view(self.model.pub, "read_tx")
  return self
end
function ReadTx:runlock() self.view = nil end
ReadTx.lock = ReadTx.rlock
ReadTx.unlock = ReadTx.runlock

-- ---------------------------------------------------------------------------
-- The model proper.

local Model = {}
Model.__index = Model
model.Model = Model

--- model.new([opts]) — opts.batch_limit (default 10000): an unlock with
-- pending >= batch_limit counts as a commit; opts.max_key_size: key length limit
-- (nil: none, as the real limit is backend.max_key_size).
function model.new(opts)
  opts = opts or {}
  local self = setmetatable({
    cur = {},               -- the BatchTx's state
    pub = {},               -- published (frozen) state: ReadTx, ConcurrentReadTx
    com = {},               -- committed (frozen) state
    locked = false,
    n_pending = 0,
    n_commits = 0,
    batch_limit = opts.batch_limit or 10000,
    max_key_size = opts.max_key_size,
  }, Model)
  return self
end

--- The BatchTx view (live: sees later writes too).
function Model:batch_view() return new_view(self.cur, "batch_tx") end
--- The published view (live until the next unlock: a new table each time).
function Model:published() return new_view(self.pub, "published") end
--- The committed view, as far as the model knows.
function Model:committed() return new_view(self.com, "committed") end

function Model:is_locked() return self.locked end
function Model:pending() return self.n_pending end
--- Commits the model has counted (explicit ones and limit commits; not timer commits).
function Model:commits() return self.n_commits end

-- BatchTx-view reads (no lock check: the model is a reference, not a guard)
function Model:range(...) return View.range(self:batch_view(), ...) end
function Model:get(...) return View.get(self:batch_view(), ...) end
function Model:for_each(...) return View.for_each(self:batch_view(), ...) end
function Model:pairs(...) return View.pairs(self:batch_view(), ...) end
function Model:bucket_names() return View.bucket_names(self:batch_view()) end
function Model:has_bucket(name) return self.cur[name] ~= nil end
function Model:count(bucket) return View.count(self:batch_view(), bucket) end
function Model:dump() return View.dump(self:batch_view()) end

local function do_commit(self)
  if self.n_pending > 0 then self.n_commits = self.n_commits + 1 end
  self.n_pending = 0
  self.com = freeze(self.pub)
end

local function publish(self)
  self.pub = freeze(self.cur)
end

function Model:lock()
  if self.locked then fail("batch tx is already locked") end
  self.locked = true
  self.pending_at_lock = self.n_pending
  return self
end

--- Discards the section's writes: the BatchTx sees the published state again.
function Model:rollback()
  if not self.locked then fail("batch tx is not locked") end
  self.locked = false
  self.cur = freeze(self.pub)
  self.n_pending = self.pending_at_lock
end

-- What commits raises while the section is open (a locked section is never committed).
local function not_in_section(self)
  if self.locked then fail("the batch tx is locked by this thread: unlock or rollback first") end
end

--- Publishes the section's writes; a commit when pending >= batch_limit.
function Model:unlock()
  if not self.locked then fail("batch tx is not locked") end
  self.locked = false
  publish(self)
  if self.n_pending >= self.batch_limit and self.n_pending > 0 then do_commit(self) end
end

local function writable(self)
  if not self.locked then fail("batch tx is not locked") end
end

local function bucket_for_write(self, name)
  local b = self.cur[name]
  if not b then
    fail("bucket '%s' does not exist", (name:gsub("[^\32-\126]", function(c) return format("\\x%02x", byte(c)) end)))
  end
  if b.frozen then
    b = clone_bucket(b)
    self.cur[name] = b
  end
  return b
end

function Model:create_bucket(name)
  writable(self)
  check_bucket(self, name, "create_bucket")
  if not self.cur[name] then self.cur[name] = new_bucket() end
  self.n_pending = self.n_pending + 1
end

function Model:delete_bucket(name)
  writable(self)
  check_bucket(self, name, "delete_bucket")
  self.cur[name] = nil
  self.n_pending = self.n_pending + 1
end

function Model:put(bucket, key, value)
  writable(self)
  check_bucket(self, bucket, "put")
  check_key(self, key, 3, "put")
  check_string(value, 4, "put")
  bucket_put(bucket_for_write(self, bucket), key, value)
  self.n_pending = self.n_pending + 1
end

function Model:seq_put(bucket, key, value)
  writable(self)
  check_bucket(self, bucket, "seq_put")
  check_key(self, key, 3, "seq_put")
  check_string(value, 4, "seq_put")
  bucket_put(bucket_for_write(self, bucket), key, value)
  self.n_pending = self.n_pending + 1
end

function Model:delete(bucket, key)
  writable(self)
  check_bucket(self, bucket, "delete")
  check_key(self, key, 3, "delete")
  bucket_delete(bucket_for_write(self, bucket), key)
  self.n_pending = self.n_pending + 1
end

--- be:force_commit(), and tx:commit() (etcd's exported Commit): commits every
-- unlocked write; raises while the section is open.
function Model:force_commit()
  not_in_section(self)
  do_commit(self)
end
Model.commit = Model.force_commit

--- be:snapshot(): commits, then a frozen view of the committed state.
function Model:snapshot()
  Model.force_commit(self)
  return new_view(self.com, "snapshot")
end

--- be:hash(ignores [, crc]): commits, then hashes the committed state.
function Model:hash(ignores, crc)
  Model.force_commit(self)
  return View.hash(new_view(self.com), ignores, crc)
end

--- be:defrag(): commits; the data are unchanged; views and snapshots go on.
Model.defrag = Model.force_commit

--- be:close() then open again: an open section is rolled back, everything else committed.
function Model:reopen()
  if self.locked then self:rollback() end
  do_commit(self)
  self.n_commits = 0
end

--- be:concurrent_read_tx(): a frozen view of the published state.
function Model:concurrent_read_tx()
  return new_view(self.pub, "concurrent_read_tx")
end

--- be:read_tx(): the shared ReadTx (between rlock and runlock it reads the
-- published state as of rlock).
function Model:read_tx()
  return setmetatable({ model = self }, ReadTx)
end

return model
