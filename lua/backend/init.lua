--- backend: etcd's MVCC storage backend on LMDB.
-- The facade over the C module `backend.core`: configuration checks, the
-- "stderr" logger, open_tmp, and the Lua idioms (update, view, pairs,
-- for_each) on top of the C methods.
local core = require "backend.core"
local json = require "backend.json"

local backend = {
  version = core.version,
  lmdb_version = core.lmdb_version,
  max_key_size = core.max_key_size,
  crc32c = core.crc32c,
  monotonic = core.monotonic,   -- seconds on a monotonic clock, for timings
}

local function fail(msg, ...)
  error("backend: " .. string.format(msg, ...), 0)
end

local defaults = {
  batch_interval = 0.1, batch_limit = 10000, mmap_size = 10 << 30,
  no_fsync = false, readonly = false, max_readers = 126,
}

-- Every config field and the type it takes.
local field_types = {
  path = "string", batch_interval = "number", batch_limit = "integer", mmap_size = "integer",
  no_fsync = "boolean", logger = "logger", readonly = "boolean", max_readers = "integer",
}

--- A fresh table of the default configuration (no path).
function backend.default_config()
  local cfg = {}
  for k, v in pairs(defaults) do cfg[k] = v end
  return cfg
end

local levels = { debug = true, info = true, warn = true, error = true }

-- JSON lines on stderr: {"level":..., "msg":..., "ts":..., fields...}.
local function stderr_logger(level, message, fields)
  local line = { level = level, msg = message, ts = os.time() }
  for k, v in pairs(fields) do line[k] = v end
  io.stderr:write(json.encode(line), "\n")
end

local function check_field(name, value)
  local want = field_types[name]
  if not want then fail("unknown config field '%s'", tostring(name)) end
  if want == "logger" then
    if value == "stderr" then return stderr_logger end
    if type(value) ~= "function" then fail("config.logger must be a function or \"stderr\"") end
    return function(level, message, fields)
      assert(levels[level])
      value(level, message, fields)
    end
  end
  local ok = want == "integer" and math.type(value) == "integer" or type(value) == want
  if not ok then fail("config.%s must be %s %s, got %s", name, want == "integer" and "an" or "a", want, type(value)) end
  return value
end

local function normalize(config, extra)
  if type(config) == "string" then config = { path = config } end
  if type(config) ~= "table" then
    fail("bad argument #1 to 'open' (path or config table expected, got %s)", type(config))
  end
  local cfg = backend.default_config()
  for k, v in pairs(config) do
    if not (extra and extra[k]) then cfg[k] = check_field(k, v) end
  end
  return cfg
end

--- Open a database file: `open(path)` or `open(config)`.
function backend.open(config)
  local cfg = normalize(config)
  if cfg.path == nil then fail("config.path is required") end
  return core.open(cfg)
end

--- Open a backend on a new temporary file: returns the backend and its path.
-- The file (and its directory) is removed on close unless `config.keep`.
function backend.open_tmp(config)
  config = config or {}
  if type(config) ~= "table" then fail("bad argument #1 to 'open_tmp' (table expected, got %s)", type(config)) end
  if config.keep ~= nil and type(config.keep) ~= "boolean" then fail("config.keep must be a boolean") end
  if config.path ~= nil then fail("open_tmp chooses the path itself; do not set config.path") end
  local cfg = normalize(config, { keep = true })
  cfg.path = core.mkdtemp() .. "/database"
  cfg.remove_on_close = not config.keep
  return core.open(cfg), cfg.path
end

-- Lua methods on the C types ------------------------------------------------

local methods = core.methods

-- Argument errors numbered as Lua numbers them (a method call skips self).
local function check_arg(value, want, i, fname)
  if type(value) == want then return end
  local info = debug.getinfo(3, "n")
  if info and info.namewhat == "method" then i = i - 1 end
  fail("bad argument #%d to '%s' (%s expected, got %s)", i, fname, want, type(value))
end
local CHUNK = 256
local END = string.rep("\255", (core.max_key_size or 511) + 1)   -- above every key

-- Iterate bucket in key order from `from` (inclusive) to `to` (exclusive;
-- nil: to the end) in chunks, so no cursor is held between steps.
local function iterate(tx, bucket, from, to)
  local keys, vals = tx:range(bucket, from or "", to or END, CHUNK)
  local i = 0
  return function()
    tx:_check()   -- a closed or invalidated tx stops the loop at once
    i = i + 1
    if i > #keys then
      if #keys < CHUNK then return nil end
      keys, vals = tx:range(bucket, keys[#keys] .. "\0", to or END, CHUNK)
      i = 1
      if #keys == 0 then return nil end
    end
    return keys[i], vals[i]
  end
end

local function tx_pairs(tx, bucket, from, to)
  check_arg(bucket, "string", 2, "pairs")
  if from ~= nil then check_arg(from, "string", 3, "pairs") end
  if to ~= nil then check_arg(to, "string", 4, "pairs") end
  return iterate(tx, bucket, from, to)
end

local function tx_for_each(tx, bucket, fn)
  check_arg(bucket, "string", 2, "for_each")
  check_arg(fn, "function", 3, "for_each")
  for k, v in iterate(tx, bucket) do fn(k, v) end
end

for _, name in ipairs { "BatchTx", "ReadTx", "ConcurrentReadTx" } do
  methods[name].pairs = tx_pairs
  methods[name].for_each = tx_for_each
end

local function rethrow(ok, ...)
  if not ok then error((...), 0) end
  return ...
end

--- lock(), fn(tx), unlock(): unlocks even when fn raises, then re-raises.
function methods.Backend.update(be, fn)
  check_arg(fn, "function", 2, "update")
  local tx = be:batch_tx():lock()
  local results = table.pack(pcall(fn, tx))
  tx:unlock()
  return rethrow(table.unpack(results, 1, results.n))
end

--- fn(rtx) on a concurrent read tx that is closed afterwards, even on error.
function methods.Backend.view(be, fn)
  check_arg(fn, "function", 2, "view")
  local rtx = be:concurrent_read_tx()
  local results = table.pack(pcall(fn, rtx))
  rtx:close()
  return rethrow(table.unpack(results, 1, results.n))
end

return backend
