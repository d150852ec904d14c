--- backend: etcd's MVCC storage backend on LMDB.
-- The facade over the C module `backend.core`: configuration checks, the
-- "stderr" logger, open_tmp, temporary directories and a monotonic clock.
-- The methods are the binding's (its Lua idioms too: backend.idioms).
local core = require "backend.core"
local json = require "dkjson"   -- lua-dkjson
local system = require "system"   -- lua-system

local backend = {
  version = core.version,
  lmdb_version = core.lmdb_version,
  max_key_size = core.max_key_size,
  crc32c = core.crc32c,
}

--- Seconds on a monotonic clock, for timings: Lua has none finer than os.time.
backend.monotonic = system.monotime

local function fail(msg, ...)
  error("backend: " .. string.format(msg, ...), 0)
end

local defaults = {
  batch_interval = 0.1, batch_limit = 10000, mmap_size = 10 << 30, max_buffered_bytes = 256 << 20,
  no_fsync = false, readonly = false, max_readers = 126,
}

-- Every config field and the type it takes.
local field_types = {
  path = "string", batch_interval = "number", batch_limit = "integer", mmap_size = "integer",
  max_buffered_bytes = "integer", no_fsync = "boolean", logger = "logger", readonly = "boolean",
  max_readers = "integer",
}

--- A fresh table of the default configuration (no path).
function backend.default_config()
  local cfg = {}
  for k, v in pairs(defaults) do cfg[k] = v end
  return cfg
end

local levels = { debug = true, info = true, warn = true, error = true }

-- A string for a JSON line: one that is not UTF-8 (a path, say) is written as
-- if its bytes were Latin-1, so that every line stays valid JSON.
local function json_text(v)
  if type(v) ~= "string" or utf8.len(v) then return v end
  return (v:gsub("[\128-\255]", function(b) return utf8.char(b:byte()) end))
end

-- JSON lines on stderr: {"level":..., "msg":..., "ts":..., fields...}; a field
-- never hides the first three.
local function stderr_logger(level, message, fields)
  local line = {}
  for k, v in pairs(fields) do line[k] = json_text(v) end
  line.level, line.msg, line.ts = level, json_text(message), os.time()
  io.stderr:write(json.encode(line, { keyorder = { "level", "msg", "ts" } }), "\n")   -- those first
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
  if want == "integer" then   -- an integral float is an integer too (2^30, 1e4), as in Lua's own functions
    local n = type(value) == "number" and math.tointeger(value)
    if not n then fail("config.%s must be an integer, got %s", name, type(value)) end
    return n
  end
  if type(value) ~= want then fail("config.%s must be a %s, got %s", name, want, type(value)) end
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

--- Opens an etcd data file (bbolt: a live `member/snap/db` or the output of
-- `etcdctl snapshot save`, whose SHA-256 trailer is verified) read-only:
-- `f:info()`, `f:walk(on_bucket, on_kv)`, `f:close()`.
backend.open_bolt = core.open_bolt

--- Copies every bucket of the etcd data file `src`, byte for byte, into a new
-- backend database `dst` (a path or a config; it must not exist). Returns
-- { buckets, keys, bytes, hash }: hash is etcd's, and the new database's.
function backend.import_bolt(src, dst)
  local cfg = normalize(dst)
  if cfg.path == nil then fail("config.path is required") end
  return core.import_bolt(src, cfg)
end

local export_fields = { trailer = "boolean", progress = "function" }

--- Writes the committed data of `src` (a path, opened read-only, or an open
-- Backend, read through a snapshot while writers go on) as a new etcd data
-- file `dst` (bbolt, with `etcdctl snapshot save`'s SHA-256 trailer unless
-- opts.trailer == false). opts.progress(done, total) counts the file's bytes.
-- Returns { buckets, keys, bytes, hash, size }: hash is `src`'s, and etcd's.
function backend.export_bolt(src, dst, opts)
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then
    fail("bad argument #3 to 'export_bolt' (table expected, got %s)", type(opts))
  end
  for k, v in pairs(opts) do
    local want = export_fields[k]
    if not want then fail("unknown export_bolt option '%s'", tostring(k)) end
    if type(v) ~= want then fail("opts.%s must be a %s, got %s", k, want, type(v)) end
  end
  return core.export_bolt(src, dst, opts.trailer ~= false, opts.progress)
end

--- A new private directory (mode 0700) in $TMPDIR (or /tmp): its path.
-- lua-luv's mkdtemp(3), loaded on first use: nothing else needs libuv.
function backend.mkdtemp()
  local tmpdir = os.getenv("TMPDIR")
  if tmpdir == nil or tmpdir == "" then tmpdir = "/tmp" end
  local dir, err = require("luv").fs_mkdtemp(tmpdir .. "/backend-XXXXXX")
  if not dir then fail("creating a temporary directory: %s", err) end
  return dir
end

--- Open a backend on a new temporary file: returns the backend and its path.
-- The file (and its directory) is removed on close unless `config.keep`.
function backend.open_tmp(config)
  if config == nil then config = {} end
  if type(config) ~= "table" then fail("bad argument #1 to 'open_tmp' (table expected, got %s)", type(config)) end
  if config.keep ~= nil and type(config.keep) ~= "boolean" then
    fail("config.keep must be a boolean, got %s", type(config.keep))
  end
  if config.path ~= nil then fail("open_tmp chooses the path itself; do not set config.path") end
  local cfg = normalize(config, { keep = true })
  local dir = backend.mkdtemp()
  cfg.path = dir .. "/database"
  cfg.owns_dir = not config.keep   -- the core removes the files and the directory
  local ok, be = pcall(core.open, cfg)
  if not ok then   -- a config the core refuses leaves no directory behind
    os.remove(cfg.path)
    os.remove(cfg.path .. "-lock")
    os.remove(dir)
    error(be, 0)
  end
  return be, cfg.path
end

-- Interrupts (Ctrl-C) --------------------------------------------------------

--- Whether err is an interrupt: the "interrupted!" error that the lua
-- interpreter (and catch_interrupt) raise on SIGINT, with or without its position.
backend.interrupted = core.interrupted

local function pass_interrupt(ok, ...)
  if not ok and backend.interrupted((...)) then error((...), 0) end
  return ok, ...
end

--- pcall(fn, ...), except that an interrupt is raised on, never returned: Ctrl-C
-- stops a program however many errors it handles on its way.
function backend.pcall(fn, ...)
  return pass_interrupt(pcall(fn, ...))
end

--- Arms SIGINT as the lua interpreter does while it runs a script, again: the
-- next SIGINT raises "interrupted!" in the main thread at its next Lua
-- instruction (a blocking read returns first); a second one before that kills
-- the process. The interpreter disarms after one; call this again to catch the next.
backend.catch_interrupt = core.catch_interrupt

return backend
