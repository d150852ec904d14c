--- backend.tools.ctl: the `backendctl` command-line tool (bin/backendctl) as
-- a module, so that it runs and is tested without a process:
--
--   local code = require("backend.tools.ctl").main({ "stat", "/var/lib/app/db" })
--
-- main(args [, streams]) returns the exit code: 0 ok, 1 not found / check
-- failed, 2 usage error, 3 runtime error (a failed write to stdout or stderr
-- too), 130 interrupted (Ctrl-C). streams = { input, out, err, terminal }
-- replaces io.stdin, io.stdout, io.stderr and the terminal test (prompts,
-- progress bars) for a test. The command line is parsed by lua-argparse.
local argparse = require "argparse"
local backend = require "backend"
local dkjson = require "dkjson"
local mime = require "mime"   -- lua-socket's, for base64
local uv = require "luv"
local repl = require "backend.tools.repl"

local ctl = {}
local fmt = string.format

local OK, NOT_FOUND, USAGE, FAILED, INTERRUPTED = 0, 1, 2, 3, 130

-- Errors ------------------------------------------------------------------------

-- A usage error: main prints it with the usage of `parser` (the command being
-- parsed or run) and returns 2.
local Usage = {}

local function usage_error(msg, ...)
  error(setmetatable({ msg = fmt(msg, ...) }, Usage), 0)
end

-- A runtime error (3), like the library's: main prints it as "backendctl: ...".
local function fail(msg, ...)
  error(fmt(msg, ...), 0)
end

-- Options: descriptors that command() turns into argparse options -------------------

local function flag(name, help)
  return { name = name, help = help }
end

-- An option with a value (`--name VALUE` or `--name=VALUE`): `convert` is a
-- list of the values allowed, or a function returning the value or nil and
-- what is wanted instead; `many` collects repeated ones in an array.
local function option(name, metavar, help, convert, many)
  return { name = name, metavar = metavar, help = help, convert = convert, many = many }
end

local function count(s)
  local n = math.tointeger(tonumber(s))
  if not n or n < 0 then return nil, "a non-negative integer" end
  return n
end

-- A lease ID in hex, as etcdctl prints and takes it.
local function lease_id(s)
  local id = #s <= 16 and s:match("^%x+$") and math.tointeger(tonumber(s, 16))
  if not id then return nil, "a lease ID in hex" end
  return id
end

local JSON = flag("json", "print JSON (see `backendctl --help` for how bytes are encoded)")
local PROGRESS = {
  flag("progress", "progress on stderr even when it is not a terminal"),
  flag("no-progress", "no progress, even on a terminal"),
}

-- JSON ----------------------------------------------------------------------------

-- Standard base64 (RFC 4648, padded), as Go's encoding/json writes []byte.
local function base64(s)
  return (mime.b64(s)) or ""   -- nil for ""
end

-- A byte string as tool output gives it: the string itself when it is valid
-- UTF-8, otherwise { base64 = "..." }, so that any key or value round-trips.
local function bytes(s)
  if utf8.len(s) then return s end
  return { base64 = base64(s) }
end

-- v made ready for dkjson, which writes a string's bytes as they are: a string
-- that is not UTF-8 becomes its bytes as code points (what \u00XX escapes
-- meant), so the output is always valid JSON. Collects the object keys in `keys`.
local function utf8_copy(v, keys)
  if type(v) == "string" then
    return utf8.len(v) and v or (v:gsub("[\128-\255]", function(b) return utf8.char(b:byte()) end))
  end
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do
    if type(k) == "string" then keys[k] = true end
    out[k] = utf8_copy(x, keys)
  end
  return out
end

-- One line of JSON with the keys of every object sorted: stable output, and
-- etcdctl's order for status.
local function encode(v)
  local keys, order = {}, {}
  v = utf8_copy(v, keys)
  for k in pairs(keys) do order[#order + 1] = k end
  table.sort(order)
  return dkjson.encode(v, { keyorder = order })
end

-- Bytes from the command line: as they are, or from hex with --hex.
local function bytes_arg(opts, s, what)
  if not opts.hex then return s end
  local b = repl.unhex(s)
  if not b then usage_error("%s is not hex: '%s'", what, s) end
  return b
end

-- VALUE as given, or what stdin holds for "-".
local function stdin_or(c, value)
  if value ~= "-" then return value end
  local data, err = c.input:read("a")
  if not data then fail("stdin: %s", err) end
  return data
end

local function map(list, fn)
  local out = {}
  for i, v in ipairs(list) do out[i] = fn(v) end
  return out
end

-- A shallow copy of t with the fields of `changes` set.
local function copy(t, changes)
  local out = {}
  for k, v in pairs(t) do out[k] = v end
  for k, v in pairs(changes) do out[k] = v end
  return out
end

-- The context: streams, terminal tests, output helpers ----------------------------

local Context = {}
Context.__index = Context

local function is_terminal(fd)
  return uv.guess_handle(fd) == "tty"
end

-- An output stream whose write and flush raise on failure ("stdout: No space
-- left on device"): output that did not arrive must not pass for success.
local function checked(stream, name)
  local function check(ok, err)
    if not ok then fail("%s: %s", name, err) end
  end
  return {
    write = function(self, ...)
      check(stream:write(...))
      return self
    end,
    flush = function(self)
      if stream.flush then check(stream:flush()) end
      return self
    end,
  }
end

-- c.raw_err: stderr as it is, for the last message (its failure is not reported).
local function context(streams)
  local s = streams or { input = io.stdin, out = io.stdout, err = io.stderr }
  local c = setmetatable({ input = s.input, raw_err = s.err }, Context)
  c.out, c.err = checked(s.out, "stdout"), checked(s.err, "stderr")
  c.terminal = streams and function() return streams.terminal == true end or is_terminal
  return c
end

function Context:print(...)
  self.out:write(...)
  self.out:write("\n")
end

function Context:json(v)
  self:print(encode(v))
end

function Context:warn(msg, ...)
  self.err:write("backendctl: ", fmt(msg, ...), "\n")
end

-- Nothing to show: "backendctl: msg" on stderr (the byte strings escaped), exit status 1.
function Context:none(msg, ...)
  self:warn(msg, table.unpack(map({ ... }, repl.escape)))
  return NOT_FOUND
end

-- Progress on stderr: with --progress, or on a terminal unless --no-progress.
function Context:progress_on()
  return self.opts.progress or not self.opts["no-progress"] and self.terminal(2)
end

--- A progress(done, total) function drawing a bar on stderr, or nil when bars are off.
function Context:progress(label)
  if not self:progress_on() then return nil end
  local shown = -1
  return function(done, total)
    local pct = total > 0 and done * 100 // total or 100
    if pct == shown then return end
    shown = pct
    local bar = pct * 30 // 100
    self.err:write(fmt("\r%s [%s%s] %3d%% %s", label, ("#"):rep(bar), ("."):rep(30 - bar), pct,
      repl.human_bytes(done)))
    if done >= total then self.err:write("\n") end
  end
end

-- Databases ---------------------------------------------------------------------------

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

-- Read-only: works while another process writes, and never creates a file.
local function open_read(path)
  return backend.open { path = path, readonly = true }
end

-- For writing: the file must exist unless `create`, so that a typo does not
-- leave a new empty database behind.
local function open_write(path, create)
  if not (create or exists(path)) then fail("%s: No such file or directory", path) end
  return backend.open(path)
end

-- What the file at path holds, by the magic number of its first meta page
-- (after the 16-byte page header): "etcd" (bbolt), "backend" (LMDB) or nil.
-- Only a regular file is opened: opening a FIFO would wait for a writer.
local MAGIC = { [0xED0CDAED] = "etcd", [0xBEEFC0DE] = "backend" }

local function file_kind(path)
  local st = uv.fs_stat(path)
  if not (st and st.type == "file") then return nil end
  local f, err = io.open(path, "rb")
  if not f then fail("%s", err) end
  local head = f:read(20) or ""
  f:close()
  return #head == 20 and MAGIC[string.unpack("<I4", head, 17)] or nil
end

-- on_etcd(f) on the etcd data file at `path` read directly (a BoltFile), or
-- on_backend(be) on the database there opened read-only; returns what it returns.
local function read_either(path, on_etcd, on_backend)
  if file_kind(path) == "etcd" then
    local f <close> = backend.open_bolt(path)
    return on_etcd(f)
  end
  local be <close> = open_read(path)
  return on_backend(be)
end

-- fn(be, imported) on the database at `path` opened read-only, or, for an
-- etcd data file, on a temporary import of it (removed afterwards); returns
-- what fn returns.
local function with_database(path, fn)
  if file_kind(path) ~= "etcd" then
    local be <close> = open_read(path)
    return fn(be, false)
  end
  local dir = backend.mkdtemp()   -- private, in $TMPDIR (or /tmp)
  local tmp = dir .. "/db"
  local results = table.pack(pcall(function()
    backend.import_bolt(path, tmp)
    local be <close> = open_read(tmp)
    return fn(be, true)
  end))
  for _, f in ipairs { tmp, tmp .. "-lock", dir } do os.remove(f) end
  if not results[1] then error(results[2], 0) end
  return table.unpack(results, 2, results.n)
end

-- Commands -----------------------------------------------------------------------------

local commands = {}   -- name -> def

-- An early end with text on stdout (-h/--help, --version): main prints it and returns 0.
local Exit = {}

-- The parser's own way of ending (print and os.exit) would end a test's process:
-- usage errors end the parse as Usage errors instead.
local parser = argparse("backendctl",
  "Inspect, edit and check backend databases (etcd's MVCC backend on LMDB) and etcd data files.")
  :add_help(false)
  :command_target("command")
parser.error = function(p, msg)
  error(setmetatable({ msg = msg, parser = p }, Usage), 0)
end

local try = {}   -- parser -> where its help is

-- -h/--help on cmd: its help, as an Exit.
local function with_help(cmd, where)
  try[cmd] = where
  return cmd:add_help { description = "this help", action = function()
    error(setmetatable({ text = cmd:get_help() .. "\n" }, Exit), 0)
  end }
end

-- "NAME" (required), "[NAME]" (optional), "[NAME...]" (any number, an array),
-- as o.name or as o[targets[NAME]].
local function add_args(cmd, specs, targets)
  for _, spec in ipairs(specs) do
    local bracket, name, many = spec:match("^(%[?)([%u_]+)(%.*)%]?$")
    cmd:argument(name):argname(name):target(targets and targets[name] or name:lower())
      :args(many ~= "" and "*" or bracket ~= "" and "?" or 1)
  end
end

-- Option descriptors as argparse options, each under its own name (o["no-progress"]).
local function add_options(cmd, options)
  for _, o in ipairs(options) do
    local spelled = (#o.name == 1 and "-" or "--") .. o.name
    local names = #o.name == 1 and spelled .. " --" .. o.name or spelled   -- -n and --n alike
    if not o.metavar then
      cmd:flag(names, o.help):target(o.name)
    else
      local a = cmd:option(names, o.help):argname(o.metavar):target(o.name):count(o.many and "*" or "0-1")
      if type(o.convert) == "table" then
        a:choices(o.convert)
      elseif o.convert then
        a:convert(function(s)
          local v, want = o.convert(s)
          if v == nil then return nil, fmt("%s wants %s, got '%s'", spelled, want, s) end
          return v
        end)
      end
    end
  end
end

-- A subcommand of `owner` (the tool, or etcd) from def: args (positional
-- specs), options, summary, help (text), progress (adds --progress and
-- --no-progress). Every one takes -h/--help.
local function subcommand(owner, name, def, where, targets)
  local cmd = owner:command(name):summary(def.summary)
    :description((def.summary:gsub("^%l", string.upper)) .. "." .. (def.help and "\n\n" .. def.help or ""))
  with_help(cmd, where)
  add_args(cmd, def.args or {}, targets)
  add_options(cmd, def.options or {})
  if def.progress then add_options(cmd, PROGRESS) end
  return cmd
end

-- def.run(c, opts) -> exit code or nil.
local function command(name, def)
  commands[name] = def
  def.parser = subcommand(parser, name, def, "backendctl help " .. name)
  return def.parser
end

command("stat", {
  args = { "PATH" }, options = { JSON },
  summary = "sizes, buckets (entries, depth, pages) and counters of a database",
  help = "Sizes (file, in use, page, map), then every bucket with its entries, B+tree depth\n"
    .. "and branch, leaf and overflow pages (committed data). For an etcd data file (bbolt),\n"
    .. "read directly: sizes, page size, txid, and every bucket with its entries; --json adds\n"
    .. "\"format\": \"bbolt\".",
  run = function(c, o)
    local st = read_either(o.path, function(f) return repl.bolt_stat(f, o.path) end,
      function(be) return repl.helpers(be).stat() end)
    if not o.json then return c:print(tostring(st)) end
    c:json(copy(st, { buckets = map(st.buckets, function(b) return copy(b, { name = bytes(b.name) }) end) }))
  end,
})

command("buckets", {
  args = { "PATH" }, options = { JSON },
  summary = "bucket names, one per line (escaped)",
  help = "Bucket names in byte order.",
  run = function(c, o)
    local be <close> = open_read(o.path)
    local names = be:view(function(rtx) return rtx:buckets() end)
    if o.json then return c:json(map(names, bytes)) end
    for _, name in ipairs(names) do c:print(repl.escape(name)) end
  end,
})

command("get", {
  args = { "PATH", "BUCKET", "KEY" },
  options = { flag("hex", "KEY is given in hex; the value is printed in hex"), JSON },
  summary = "the value of a key, raw on stdout",
  help = "Writes the value exactly as stored (no newline added). Exit status 1 if there is none.",
  run = function(c, o)
    local key = bytes_arg(o, o.key, "KEY")
    local be <close> = open_read(o.path)
    local value = be:view(function(rtx) return rtx:get(o.bucket, key) end)
    if value == nil then
      return c:none("%s: not found in bucket %s", key, o.bucket)
    end
    if o.json then
      c:json { bucket = bytes(o.bucket), key = bytes(key), value = bytes(value) }
    elseif o.hex then
      c:print(repl.hex(value))
    else
      c.out:write(value)
    end
  end,
})

-- One dumped entry per format; `bucket` is nil in text and hex when one bucket is dumped.
local dump_line = {
  text = function(bucket, k, v)
    return (bucket and repl.escape(bucket) .. "\t" or "") .. repl.escape(k) .. "\t" .. repl.escape(v)
  end,
  hex = function(bucket, k, v)
    return (bucket and repl.hex(bucket) .. "\t" or "") .. repl.hex(k) .. "\t" .. repl.hex(v)
  end,
  json = function(bucket, k, v)
    return encode { bucket = bytes(bucket), key = bytes(k), value = bytes(v) }
  end,
}

-- emit(bucket, key, value) for the entries of `bucket` (nil: every bucket) in
-- [from, to) of the database be, until it returns false. False if there is no such bucket.
local function dump_database(be, bucket, from, to, emit)
  return be:view(function(rtx)
    local buckets = rtx:buckets()
    if bucket then
      local found = false
      for _, b in ipairs(buckets) do found = found or b == bucket end
      if not found then return false end
      buckets = { bucket }
    end
    for _, b in ipairs(buckets) do
      for k, v in rtx:pairs(b, from, to) do
        if not emit(b, k, v) then return true end
      end
    end
    return true
  end)
end

-- Raised from a walk's callback to end the walk early.
local STOP = setmetatable({}, { __tostring = function() return "walk stopped" end })

-- dump_database for an etcd data file f (a BoltFile), walked from its start.
local function dump_etcd_file(f, bucket, from, to, emit)
  local less = require("backend.tools.model").less
  local found = bucket == nil
  local ok, err = backend.pcall(f.walk, f, function(b)
    if found and bucket and b ~= bucket then error(STOP, 0) end   -- past the bucket (name order)
    found = found or b == bucket
  end, function(b, k, v)
    if (bucket == nil or b == bucket) and not (from and less(k, from)) and not (to and not less(k, to))
        and not emit(b, k, v) then
      error(STOP, 0)
    end
  end)
  if not ok and err ~= STOP then error(err, 0) end
  return found
end

command("dump", {
  args = { "PATH", "[BUCKET]" },
  options = {
    option("from", "KEY", "start at KEY (inclusive)"),
    option("to", "KEY", "stop before KEY (exclusive)"),
    option("limit", "N", "at most N entries (0: all)", count),
    option("format", "FORMAT", "text (default), hex or json", { "text", "hex", "json" }),
    flag("hex", "--from and --to are given in hex; implies --format hex"),
  },
  summary = "the entries of a bucket or of every bucket, in key order",
  help = "text: escaped key TAB escaped value per line (bytes as \\xNN); hex: the same in hex;\n"
    .. "json: one object per line {\"bucket\",\"key\",\"value\"}. Without BUCKET every bucket is\n"
    .. "dumped, text and hex lines starting with the bucket. PATH may be an etcd data file\n"
    .. "(bbolt), read directly.\n"
    .. "Exit status 1 if BUCKET does not exist.",
  run = function(c, o)
    local line = dump_line[o.format or (o.hex and "hex" or "text")]
    local from = o.from and bytes_arg(o, o.from, "--from")
    local to = o.to and bytes_arg(o, o.to, "--to")
    local limit, n, all = o.limit or 0, 0, o.bucket == nil or o.format == "json"
    local function emit(b, k, v)   -- false once --limit entries are printed
      if n == limit and limit > 0 then return false end
      n = n + 1
      c:print(line(all and b or nil, k, v))
      return true
    end
    local found = read_either(o.path, function(f) return dump_etcd_file(f, o.bucket, from, to, emit) end,
      function(be) return dump_database(be, o.bucket, from, to, emit) end)
    if not found then return c:none("no bucket %s", o.bucket) end
  end,
})

command("put", {
  args = { "PATH", "BUCKET", "KEY", "VALUE" },
  options = { flag("hex", "KEY and VALUE are given in hex"),
              flag("create", "create the database and the bucket if they do not exist") },
  summary = "write a key (VALUE - reads it from stdin)",
  help = "Puts KEY = VALUE in BUCKET and commits (fsync) before exiting.",
  run = function(c, o)
    local key = bytes_arg(o, o.key, "KEY")
    local value = bytes_arg(o, stdin_or(c, o.value), "VALUE")
    local be <close> = open_write(o.path, o.create)
    be:update(function(tx)
      if o.create then tx:create_bucket(o.bucket) end
      tx:put(o.bucket, key, value)
    end)
    be:force_commit()
  end,
})

command("delete", {
  args = { "PATH", "BUCKET", "KEY" }, options = { flag("hex", "KEY is given in hex") },
  summary = "delete a key",
  help = "Deletes KEY from BUCKET and commits (fsync) before exiting. Exit status 1 if it was not there.",
  run = function(c, o)
    local key = bytes_arg(o, o.key, "KEY")
    local be <close> = open_write(o.path)
    local found = be:update(function(tx)
      if tx:get(o.bucket, key) == nil then return false end
      tx:delete(o.bucket, key)
      return true
    end)
    be:force_commit()
    if not found then
      return c:none("%s: not found in bucket %s", key, o.bucket)
    end
  end,
})

command("hash", {
  args = { "PATH" },
  options = { option("ignore", "BUCKET:KEY", "leave this key out (repeatable)", nil, true), JSON },
  summary = "etcd's hash (CRC-32C of buckets, keys and values): decimal and hex",
  help = "Prints the hash in decimal, then in hex (8 digits). PATH may be an etcd data file\n"
    .. "(bbolt), read directly: the hash is etcd's own (`etcdctl snapshot status`'s HASH).",
  run = function(c, o)
    local ignores
    for _, spec in ipairs(o.ignore or {}) do
      local bucket, key = spec:match("^([^:]+):(.+)$")
      if not bucket then usage_error("--ignore wants BUCKET:KEY, got '%s'", spec) end
      ignores = ignores or {}
      ignores[bucket] = ignores[bucket] or {}
      ignores[bucket][key] = true
    end
    local h = read_either(o.path, function(f) return require("backend.etcd").bolt_hash(f, ignores) end,
      function(be) return be:hash(ignores) end)
    if o.json then return c:json { hash = h, hex = fmt("%08x", h) } end
    c:print(fmt("%d %08x", h, h))
  end,
})

command("snapshot", {
  args = { "PATH", "DEST" }, options = { JSON }, progress = true,
  summary = "write a point-in-time copy of a database to DEST (a new file; - for stdout)",
  help = "DEST must not exist; it opens as a database of its own. Prints the bytes written.\n"
    .. "DEST - writes the snapshot to stdout instead (not a terminal), and nothing else.",
  run = function(c, o)
    if o.dest == "-" then
      if o.json then usage_error("--json prints to stdout, where DEST - writes the snapshot") end
      if c.terminal(1) then usage_error("stdout is a terminal: redirect it (DEST - writes binary data)") end
    end
    local be <close> = open_read(o.path)
    local snap <close> = be:snapshot()
    if o.dest == "-" then
      snap:write_to(function(chunk) c.out:write(chunk) end, c:progress("snapshot"))
      return
    end
    local written = snap:write_to(o.dest, c:progress("snapshot"))
    if o.json then return c:json { bytes = written, path = o.dest } end
    c:print(fmt("%d bytes written to %s", written, o.dest))
  end,
})

command("defrag", {
  args = { "PATH" }, options = { JSON }, progress = true,
  summary = "compact a database in place; prints its size before and after",
  help = "Rewrites the file with full pages and no free ones. Needs the database not open for\n"
    .. "writing elsewhere.",
  run = function(c, o)
    local be <close> = open_write(o.path)
    be:force_commit()
    local before = be:size()
    local bar = c:progress("defrag")
    if bar then   -- in the background, so that the bar can move
      local job <close> = be:defrag { background = true }
      while not job:done() do
        local copied, total = job:progress()
        if total > 0 and copied < total then bar(copied, total) end
        uv.sleep(100)   -- ms
      end
      job:wait()
      local _, total = job:progress()
      bar(total, total)
    else
      be:defrag()
    end
    local after = be:size()
    if o.json then return c:json { before = before, after = after } end
    c:print(fmt("%s: %d → %d bytes (%s → %s)", o.path, before, after,
      repl.human_bytes(before), repl.human_bytes(after)))
  end,
})

-- What `open` says of a file too damaged to be a database: for `check`, a
-- failed check (exit status 1), not a runtime error.
local DAMAGED = { " is truncated or damaged: ", " is not a backend database (no LMDB header: " }

-- check.run's report on the database at o.path; a damaged file gets a report
-- of its one failed check, "open".
local function check_report(check, o)
  local started = backend.monotonic()
  local ok, opened = backend.pcall(function() return o.defrag and open_write(o.path) or open_read(o.path) end)
  if not ok then
    local msg = tostring(opened):gsub("^backend: ", "")
    for _, what in ipairs(DAMAGED) do
      if msg:find(what, 1, true) then
        return { ok = false, findings = { { check = "open", message = msg } },
                 checks = { { name = "open", ok = false, detail = "the database opens",
                              seconds = backend.monotonic() - started } } }
      end
    end
    error(opened, 0)
  end
  local be <close> = opened
  local report = check.run(be, { defrag = o.defrag, reopen = o.reopen, config = { readonly = not o.defrag } })
  if report.backend then   -- reopened by --reopen: nothing more to do with it
    report.backend:close()
    report.backend = nil
  end
  return report
end

command("check", {
  args = { "PATH" },
  options = { flag("defrag", "also defragment and check again (opens for writing)"),
              flag("reopen", "also close, reopen and check again"), JSON },
  summary = "verify a database (backend.tools.check); exit status 1 if a check fails or the file is damaged",
  help = "Runs every check of backend.tools.check and prints each with its result and findings.\n"
    .. "Ctrl-C stops it (exit status 130): an interrupted check is not a failed one.",
  run = function(c, o)
    local check = require "backend.tools.check"
    local report = check_report(check, o)
    if o.json then
      c:json(copy(report, { findings = map(report.findings, function(f)
        return copy(f, { bucket = f.bucket and bytes(f.bucket), key = f.key and bytes(f.key) })
      end) }))
    else
      c:print(check.format(report))
    end
    return report.ok and OK or NOT_FOUND
  end,
})

command("import", {
  args = { "SRC", "DEST" }, options = { JSON },
  summary = "copy an etcd data file (bbolt) into a new backend database",
  help = "SRC: etcd's member/snap/db or the output of `etcdctl snapshot save` (its SHA-256\n"
    .. "trailer is verified). DEST must not exist. Every bucket is copied byte for byte: the\n"
    .. "new database has etcd's hash. A SRC that is a backend database already is refused.",
  run = function(c, o)
    if file_kind(o.src) == "backend" then
      fail("%s is a backend database already (LMDB), not an etcd data file: there is nothing to import",
        o.src)
    end
    local r = backend.import_bolt(o.src, o.dest)
    if o.json then
      return c:json { buckets = r.buckets, keys = r.keys, bytes = r.bytes, hash = r.hash, path = o.dest }
    end
    c:print(fmt("imported %d keys (%s) in %d buckets into %s; hash %08x",
      r.keys, repl.human_bytes(r.bytes), r.buckets, o.dest, r.hash))
  end,
})

command("export", {
  args = { "SRC", "DEST" },
  options = { flag("no-trailer", "leave out the SHA-256 trailer (then `etcdctl snapshot restore` needs "
    .. "--skip-hash-check)"), JSON },
  progress = true,
  summary = "write a backend database as an etcd data file (bbolt) at DEST, a new file",
  help = "The inverse of import: DEST is a file as `etcdctl snapshot save` writes it (with its SHA-256\n"
    .. "trailer unless --no-trailer), for `etcdctl snapshot restore`. SRC is opened read-only: another\n"
    .. "process may write it meanwhile; the file holds SRC as it was when the export began. DEST must\n"
    .. "not exist. Prints what was written and the hash (SRC's, which is etcd's HASH of DEST).",
  run = function(c, o)
    if file_kind(o.src) == "etcd" then
      fail("%s is an etcd data file already (bbolt): there is nothing to export", o.src)
    end
    local r = backend.export_bolt(o.src, o.dest, { trailer = not o["no-trailer"], progress = c:progress("export") })
    if o.json then
      return c:json { buckets = r.buckets, keys = r.keys, bytes = r.bytes, hash = r.hash, size = r.size, path = o.dest }
    end
    c:print(fmt("exported %d keys (%s) in %d buckets to %s (%s); hash %08x",
      r.keys, repl.human_bytes(r.bytes), r.buckets, o.dest, repl.human_bytes(r.size), r.hash))
  end,
})

-- etcdctl's tables (olekukonko/tablewriter): headers centred, cells right-aligned.
local function etcdctl_table(header, row)
  local widths, rule = {}, {}
  for i, h in ipairs(header) do
    widths[i] = math.max(#h, #row[i])
    rule[i] = ("-"):rep(widths[i] + 2)
  end
  rule = "+" .. table.concat(rule, "+") .. "+"
  local function line(cells, centred)
    local out = {}
    for i, s in ipairs(cells) do
      local gap = widths[i] - #s
      local left = centred and gap // 2 or gap
      out[i] = " " .. (" "):rep(left) .. s .. (" "):rep(gap - left) .. " "
    end
    return "|" .. table.concat(out, "|") .. "|"
  end
  return table.concat({ rule, line(header, true), rule, line(row), rule }, "\n")
end

command("status", {
  args = { "FILE" },
  options = { JSON, option("w", "FORMAT", "table (default), json or simple, as etcdctl's -w",
    { "table", "json", "simple" }) },
  summary = "what `etcdctl snapshot status` prints, for an etcd file or an imported database",
  help = "FILE is an etcd data file (bbolt, recognised by its magic number) or a backend\n"
    .. "database holding etcd data. Prints hash (hex), revision, total keys and total size;\n"
    .. "--json or -w json prints etcdctl's {\"hash\",\"revision\",\"totalKey\",\"totalSize\"}.",
  run = function(c, o)
    local status = require("backend.etcd").status
    local st = read_either(o.file, status, status)
    local w = o.json and "json" or o.w or "table"
    if w == "json" then return c:json(st) end   -- sorted keys: etcdctl's order
    local row = { fmt("%x", st.hash), tostring(st.revision), tostring(st.totalKey),
                  repl.human_bytes(st.totalSize) }
    if w == "simple" then return c:print(table.concat(row, ", ")) end
    c:print(etcdctl_table({ "HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE" }, row))
  end,
})

-- A KeyValue as `etcdctl -w json` shows it: bytes in base64, no lease when 0.
local function kv_json(kv)
  return { key = base64(kv.key), value = base64(kv.value), create_revision = kv.create_revision,
           mod_revision = kv.mod_revision, version = kv.version, lease = kv.lease ~= 0 and kv.lease or nil }
end

-- `etcd PATH SUBCOMMAND [ARG...]`: each subcommand's summary, args, the
-- options it takes besides --json and --help (of ETCD_OPTIONS), whether it
-- writes (then PATH is opened for writing), and run(c, o, ks).
local etcd_commands = {
  get = { summary = "the key and its value, as `etcdctl get` prints them (--json: like -w json, keys and "
    .. "values in base64); exit status 1 if there is none",
    args = { "KEY" }, options = { "rev", "prefix" }, run = function(c, o, ks)
    local kvs = ks:range(o.key, { rev = o.rev, prefix = o.prefix })
    if #kvs == 0 then return c:none(o.prefix and "no key starts with %s" or "no key %s", o.key) end
    if o.json then
      c:json { header = { revision = ks.revision }, kvs = map(kvs, kv_json), count = #kvs }
    else
      for _, kv in ipairs(kvs) do c:print(repl.escape(kv.key), "\n", repl.escape(kv.value)) end
    end
  end },
  ls = { summary = "live keys starting with PREFIX",
    args = { "[PREFIX]" }, options = { "rev" }, run = function(c, o, ks)
    local keys = map(ks:range(o.prefix_arg or "", { rev = o.rev, prefix = true }), function(kv) return kv.key end)
    if o.json then return c:json { keys = map(keys, base64), count = #keys } end
    for _, k in ipairs(keys) do c:print(repl.escape(k)) end
  end },
  history = { summary = "every revision of KEY still stored (puts and deletes)",
    args = { "KEY" }, run = function(c, o, ks)
    local history = ks:history(o.key)
    if #history == 0 then return c:none("no revision of %s", o.key) end
    if o.json then
      c:json(map(history, function(h)
        return { revision = h.main, sub = h.sub, tombstone = h.tombstone, kv = kv_json(h.kv) }
      end))
    else
      local rows = { { "REVISION", "OP", "VERSION", "CREATED", "LEASE", "VALUE" } }
      for _, h in ipairs(history) do
        local kv = h.kv
        rows[#rows + 1] = h.tombstone and { fmt("%d.%d", h.main, h.sub), "delete", "", "", "", "" }
          or { fmt("%d.%d", h.main, h.sub), "put", tostring(kv.version), tostring(kv.create_revision),
               kv.lease ~= 0 and fmt("%x", kv.lease) or "", repl.preview(kv.value) }
      end
      c:print(repl.columns(rows, "rlrr"))
    end
  end },
  leases = { summary = "leases with their TTL and attached keys",
    run = function(c, o, ks)
    if o.json then
      return c:json(map(ks.leases, function(l)
        return { id = l.id, hex = fmt("%x", l.id), ttl = l.ttl, keys = map(l.keys, base64) }
      end))
    end
    for _, l in ipairs(ks.leases) do
      c:print(fmt("%x ttl %ds, %d keys", l.id, l.ttl, #l.keys))
      for _, k in ipairs(l.keys) do c:print("  ", repl.escape(k)) end
    end
  end },
  meta = { summary = "the meta bucket (consistent index, compaction revisions)",
    run = function(c, o, ks)
    local names = {}
    for k in pairs(ks.meta) do names[#names + 1] = k end
    table.sort(names)
    if o.json then
      local meta = {}
      for _, k in ipairs(names) do
        local v = ks.meta[k]
        meta[k] = type(v) == "string" and bytes(v) or v
      end
      return c:json { revision = ks.revision, compacted = ks.compacted, keys = #ks.keys,
                      revisions = ks.revisions, meta = meta }
    end
    c:print(tostring(ks))
    c:print(repl.columns(map(names, function(k)
      local v = ks.meta[k]
      return { repl.escape(k), type(v) == "string" and repl.preview(v) or tostring(v) }
    end)))
  end },
  hashkv = { summary = "etcd's HashKV, as `etcdctl endpoint hashkv` prints it (PATH for the endpoint)",
    options = { "rev" }, run = function(c, o, ks)
    local hash, compacted = ks:hash_kv(o.rev)
    if o.json then
      return c:json { header = { revision = ks.revision }, hash = hash, compact_revision = compacted }
    end
    c:print(fmt("%s, %d", o.path, hash))
  end },
  put = { summary = "write KEY at a new revision (VALUE - reads it from stdin), as `etcdctl put`",
    args = { "KEY", "VALUE" }, options = { "lease", "create" }, write = true, run = function(c, o, ks)
    local rev = ks:put(o.key, stdin_or(c, o.value), { lease = o.lease })
    if o.json then return c:json { header = { revision = rev } } end
    c:print("OK")
  end },
  del = { summary = "delete KEY (--prefix, --range-end, --from-key) at a new revision, as `etcdctl del`",
    args = { "KEY" }, options = { "prefix", "range-end", "from-key" }, write = true, run = function(c, o, ks)
    local range_end = o["from-key"] and "\0" or o["range-end"]
    if o["from-key"] and o["range-end"] then usage_error("--from-key and --range-end exclude each other") end
    local rev, deleted = ks:delete(o.key, { prefix = o.prefix, range_end = range_end })
    if o.json then return c:json { header = { revision = rev }, deleted = deleted } end
    c:print(tostring(deleted))
  end },
  compact = { summary = "drop the revisions before REV that no read at REV needs, as `etcdctl compact`",
    args = { "REV" }, write = true, run = function(c, o, ks)
    local rev = math.tointeger(tonumber(o.rev_arg))
    if not rev or rev < 1 then usage_error("REV must be a positive integer, got '%s'", o.rev_arg) end
    ks:compact(rev)
    if o.json then return c:json { header = { revision = ks.revision }, compact_revision = rev } end
    c:print(fmt("compacted revision %d", rev))
  end },
}

local ETCD_SUBCOMMANDS = { "get", "ls", "history", "leases", "meta", "hashkv", "put", "del", "compact" }

local ETCD_OPTIONS = {
  rev = option("rev", "N", "as of revision N", count),
  prefix = flag("prefix", "every key starting with KEY"),
  ["range-end"] = option("range-end", "E", "the keys from KEY up to E, exclusive"),
  ["from-key"] = flag("from-key", "every key from KEY on"),
  lease = option("lease", "ID", "attach the key to the lease ID, in hex as etcdctl prints it", lease_id),
  create = flag("create", "create the database if it does not exist"),
}

-- Runs an etcd subcommand on the keyspace at path: read from a backend
-- database or an etcd data file (imported into a temporary database first),
-- or written to a backend database (committed before returning).
local function run_etcd(c, o, sub)
  local etcd = require "backend.etcd"
  if not sub.write then
    return with_database(o.path, function(be) return sub.run(c, o, etcd.open(be)) end)
  end
  if file_kind(o.path) == "etcd" then
    fail("%s is an etcd data file (bbolt): import it first (backendctl import %s DEST), then write to DEST",
      o.path, o.path)
  end
  local be <close> = open_write(o.path, o.create)
  local code = sub.run(c, o, etcd.open(be, { writable = true }))
  be:force_commit()
  return code
end

local etcd_command = command("etcd", {
  args = { "PATH" },
  summary = "etcd's keyspace: get, ls, history, leases, meta, hashkv; put, del, compact",
  help = "PATH is a backend database holding etcd data, or for reading an etcd data file (imported into\n"
    .. "a temporary database first). put, del and compact write etcd 3.4's own format and commit\n"
    .. "(fsync) before exiting. A revision before the compaction or after the last is an error.",
  run = function(c, o)
    local sub = etcd_commands[o.subcommand]
    c.parser = sub.parser
    return run_etcd(c, o, sub)
  end,
}):command_target("subcommand")

for _, name in ipairs(ETCD_SUBCOMMANDS) do
  local sub = etcd_commands[name]
  local options = { JSON }
  for i, opt in ipairs(sub.options or {}) do options[i + 1] = ETCD_OPTIONS[opt] end
  sub.parser = subcommand(etcd_command, name, { summary = sub.summary, args = sub.args, options = options },
    "backendctl etcd PATH " .. name .. " --help", { PREFIX = "prefix_arg", REV = "rev_arg" })
end

command("scenario", {
  args = { "[FILE...]" },
  options = { option("random", "SEED", "run a random scenario made from SEED instead of files", count),
              option("ops", "N", "operations in the random scenario", count),
              flag("dump", "print the scenarios as Lua source instead of running them"), JSON },
  summary = "run test scenarios (backend.tools.scenario); exit status 1 if one fails",
  help = "Runs each FILE (or --random SEED) and prints its result: ok, or the failing steps and the\n"
    .. "steps before the first failure. --dump prints a random scenario as a FILE to replay.",
  run = function(c, o)
    local scenario = require "backend.tools.scenario"
    local list
    if o.random then
      if #o.file > 0 then usage_error("give scenario FILEs or --random SEED, not both") end
      list = { scenario.random { seed = o.random, ops = o.ops } }
    elseif #o.file == 0 then
      usage_error("missing FILE (or --random SEED)")
    else
      list = map(o.file, scenario.load)
    end
    if o.dump then
      for _, s in ipairs(list) do c.out:write(scenario.dump(s)) end
      return
    end
    local results, failed = map(list, scenario.run), 0
    for i, r in ipairs(results) do
      if not r.ok then failed = failed + 1 end
      if not o.json then c:print(scenario.format(r, list[i])) end
    end
    if o.json then
      c:json(results)
    else
      c:print(fmt("%d scenarios, %d failed", #results, failed))
    end
    return failed > 0 and NOT_FOUND or OK
  end,
})

command("repl", {
  args = { "[PATH]" }, options = { flag("write", "open the database for writing (default: read-only)"),
    flag("plain", "no line editing or history on a terminal, even with lua-readline installed") },
  summary = "an interactive Lua session with the database open as `be` and helpers",
  help = "Reads Lua from stdin (a terminal or a pipe) and prints each result. Helpers: buckets(),\n"
    .. "get(bucket, key), scan(bucket [, from [, n]]) and more(), hash(), stat(), etcd (the\n"
    .. "decoded keyspace of etcd data), help(). PATH may be an etcd data file (imported into a\n"
    .. "temporary database first); without PATH: an empty temporary database. On a terminal,\n"
    .. "Ctrl-C cancels the line typed or the statement running, and Ctrl-D ends the session.\n"
    .. "With lua-readline installed, lines are edited with readline and kept in a history\n"
    .. "(not saved); Ctrl-C then drops the line when it is entered (--plain: plain lines).\n"
    .. "Exit status 3 if a piped input raised an error, 130 if Ctrl-C stopped it.",
  run = function(c, o)
    local interactive = c.terminal(0)
    local function session(be, mode)
      local banner = interactive and fmt("backend %s (LMDB %s, %s): %s (%s); help() lists the helpers",
        backend.version, backend.lmdb_version, _VERSION, o.path or be:path(), mode)
      local errors = repl.run(be, c.input, c.out, { prompt = interactive, banner = banner or nil, err = c.err,
        line_editing = not o.plain })
      collectgarbage()   -- closes (and commits) what the session opened and left open
      return (errors > 0 and not interactive) and FAILED or OK
    end
    if not o.path then
      local be <close> = backend.open_tmp()
      return session(be, "temporary")
    elseif o.write then
      local be <close> = open_write(o.path)
      return session(be, "read-write")
    end
    return with_database(o.path, function(be, imported)
      return session(be, imported and "read-only, imported" or "read-only")
    end)
  end,
})

command("metrics", {
  args = { "PATH" },
  summary = "Prometheus metrics of a database (text exposition format)",
  help = "Prints be:metrics().",
  run = function(c, o)
    local be <close> = open_read(o.path)
    c.out:write(be:metrics())
  end,
})

command("help", {
  summary = "the help of a command (as COMMAND --help), or of the tool",
  run = function(c, o)
    local def = o.topic and commands[o.topic]
    if o.topic and not def then usage_error("unknown command '%s'", o.topic) end
    c.out:write((def and def.parser or parser):get_help(), "\n")
  end,
}):argument("command"):argname("COMMAND"):args("?"):target("topic")   -- o.command names the command run

-- The tool's own options and help ----------------------------------------------------------

with_help(parser, "backendctl --help")
parser:flag("--version", "the versions of backendctl, the LMDB it uses and Lua"):action(function()
  error(setmetatable({ text = fmt("backendctl %s (LMDB %s, %s)\n", backend.version, backend.lmdb_version, _VERSION) },
    Exit), 0)
end)
parser:epilog(table.concat({
  "Commands that only read open the database read-only: they work while another process",
  "writes to it, and see what it has committed. Text output shows bytes that are not",
  "printable as \\xNN (a backslash as \\\\; valid UTF-8 stays text). In JSON output a key,",
  "value or bucket name is a string when it is valid UTF-8 (control characters as \\u00XX)",
  "and otherwise an object {\"base64\": \"...\"}; `etcd` gives keys and values in base64 as",
  "`etcdctl -w json` does.",
  "",
  "Options come after their command, before or after its arguments; `--` ends them (for a",
  "key starting with `-`). Every command takes -h/--help; snapshot and export show",
  "progress on stderr when it is a terminal (--progress, --no-progress to choose).",
  "",
  "stat, hash, dump and status read etcd data files (bbolt) directly, as well as backend",
  "databases. Ctrl-C stops any command at once (exit status 130).",
  "",
  "exit status: 0 ok, 1 not found / check failed, 2 usage error, 3 runtime error (a failed",
  "write to stdout or stderr too), 130 interrupted",
}, "\n"))

-- main ------------------------------------------------------------------------------------

local function run(c, args)
  c.parser = parser
  local parsed, o = pcall(parser.parse, parser, args)
  if not parsed then
    if getmetatable(o) ~= Exit then error(o, 0) end
    return c.out:write(o.text)
  end
  local def = commands[o.command]
  c.opts, c.parser = o, def.parser
  return def.run(c, o)
end

-- run(), then stdout flushed: a write error may only show then.
local function run_flushed(c, args)
  local code = run(c, args)
  c.out:flush()
  return code
end

--- Runs `backendctl args...`; returns the exit code.
function ctl.main(args, streams)
  local c = context(streams)
  local ok, result = pcall(run_flushed, c, args)
  if ok then return math.type(result) == "integer" and result or OK end
  local err = c.raw_err
  if backend.interrupted(result) then
    err:write("backendctl: interrupted\n")
    return INTERRUPTED
  end
  if getmetatable(result) == Usage then
    local p = result.parser or c.parser
    err:write("backendctl: ", result.msg, "\n", p:get_usage(), "\n", "Try '", try[p], "'.\n")
    return USAGE
  end
  err:write("backendctl: ", (tostring(result):gsub("^backend: ", "")), "\n")
  return FAILED
end

return ctl
