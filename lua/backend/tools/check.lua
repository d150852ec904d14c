--- backend.tools.check: consistency checks of a backend, for the specs and the CLI.
--
--   local check = require "backend.tools.check"
--   local report = check.run(be, { defrag = true })
--   print(check.format(report))
--   if not report.ok then os.exit(1) end
--
-- Each check is also a function of its own that returns `findings, detail`:
-- findings is a list (empty when all is well) of
-- { check = name, bucket = name or nil, key = key or nil, message = text }
-- (bucket and key are the raw strings; `check.describe(finding)` shows them
-- escaped), and detail says in one line what was checked. A check stops after
-- `check.max_findings` findings. Misuse (and a backend call that raises) raises
-- an error; `check.run` turns such an error into a failed check, except an
-- interrupt (Ctrl-C, see backend.interrupted), which it raises on at once.
--
--   views(be)      BatchTx, ReadTx and a ConcurrentReadTx read the same buckets,
--                  keys and values (read-only backend: ReadTx and ConcurrentReadTx)
--   committed(be)  after force_commit(), nothing is pending and every key a view
--                  reads is what LMDB holds (be:_committed_get)
--   hash(be)       be:hash() is the CRC-32C of what the views read
--   lmdb(be)       be:bucket_stats() agrees with the views: the same buckets, entries
--                  = keys, tree shapes possible, pages within size_in_use <= size
--   snapshot(be)   a snapshot written to a temporary file opens read-only with the
--                  same content and hash (the file is removed)
--   defrag(be)     defrag() keeps content and hash and does not grow the file
--   reopen(path [, config])  open, hash, close, open again: the same hash; for a
--                  path not open in this process (config: more open() fields)
--
-- The checks read whole buckets through iterators (tx:pairs), never holding a
-- bucket in memory. views() holds the batch tx lock while it reads, and expects
-- the caller not to hold it, nor an rlock on the shared ReadTx (an rlock taken
-- earlier would read an older state). Temporary files go to $TMPDIR (or /tmp).
-- A read-only backend on a file that another process is writing moves on with
-- each of its commits, between one read and the next: findings may then only
-- mean that it wrote meanwhile (check a snapshot of it instead).
local backend = require "backend"
local model = require "backend.tools.model"

local check = { max_findings = 100 }

local fmt = string.format
local less, quote = model.less, model.quote

--- A string as it is shown in messages: escaped, long ones abbreviated.
function check.show(s)
  if s ~= nil and #s > 40 then
    return fmt("%s..(%d bytes)", quote(s:sub(1, 24)), #s)
  end
  return quote(s)
end
local show = check.show

-- A to-be-closed value that runs fn when its scope ends.
local function defer(fn)
  return setmetatable({}, { __close = fn })
end

-- Raised when a check has collected check.max_findings findings.
local FULL = setmetatable({}, { __tostring = function() return "too many findings" end })

-- The findings of one check.
local Findings = {}
Findings.__index = Findings

function Findings:add(bucket, key, msg, ...)
  local list = self.list
  if #list >= check.max_findings then error(FULL, 0) end
  list[#list + 1] = { check = self.name, bucket = bucket, key = key, message = fmt(msg, ...) }
end

-- Defines check[name](...) -> findings, detail, from body(findings, ...) -> detail.
local function define(name, body)
  check[name] = function(...)
    local f = setmetatable({ name = name, list = {} }, Findings)
    local ok, detail = pcall(body, f, ...)
    if not ok then
      if detail ~= FULL then error(detail, 0) end
      detail = fmt("stopped after %d findings", #f.list)
    end
    return f.list, detail
  end
end

-- Iterator over the strings of an array (as keys with value true).
local function each(t)
  local i = 0
  return function()
    i = i + 1
    if t[i] ~= nil then return t[i], true end
  end
end

-- Walks two iterators of (key, value) in key order in step; on(key, va, vb) for
-- every key of either, with nil for the side that lacks it.
local function merge(ia, ib, on)
  local ka, va = ia()
  local kb, vb = ib()
  while ka ~= nil or kb ~= nil do
    if ka == kb then
      on(ka, va, vb)
      ka, va = ia()
      kb, vb = ib()
    elseif kb == nil or (ka ~= nil and less(ka, kb)) then
      on(ka, va, nil)
      ka, va = ia()
    else
      on(kb, nil, vb)
      kb, vb = ib()
    end
  end
end

-- Adds to f every difference between what readers a and b (named an and bn)
-- hold; returns the number of buckets and keys they have in common.
local function compare(f, a, an, b, bn)
  local buckets, keys = 0, 0
  merge(each(a:buckets()), each(b:buckets()), function(name, in_a, in_b)
    if not in_b then return f:add(name, nil, "the bucket is in %s, not in %s", an, bn) end
    if not in_a then return f:add(name, nil, "the bucket is in %s, not in %s", bn, an) end
    buckets = buckets + 1
    merge(a:pairs(name), b:pairs(name), function(k, va, vb)
      if va == nil then
        f:add(name, k, "only %s has the key (value %s)", bn, show(vb))
      elseif vb == nil then
        f:add(name, k, "only %s has the key (value %s)", an, show(va))
      else
        keys = keys + 1
        if va ~= vb then f:add(name, k, "%s reads %s, %s reads %s", an, show(va), bn, show(vb)) end
      end
    end)
  end)
  return buckets, keys
end

-- CRC-32C over each bucket name, then each key and value, as be:hash() computes
-- it; returns the hash, the number of buckets and of keys.
local function hash_of(reader)
  local crc, names, keys = 0, reader:buckets(), 0
  for _, name in ipairs(names) do
    crc = backend.crc32c(name, crc)
    for k, v in reader:pairs(name) do
      crc = backend.crc32c(v, backend.crc32c(k, crc))
      keys = keys + 1
    end
  end
  return crc, #names, keys
end

local function exists(path)
  local file = io.open(path, "rb")
  if file then file:close() end
  return file ~= nil
end

-- A copy of the open() config `config` (nil: none) with `path`.
local function with_path(config, path)
  local cfg = {}
  for k, v in pairs(config or {}) do cfg[k] = v end
  cfg.path = path
  return cfg
end

local function rlocked(be)
  local rtx = be:read_tx()
  rtx:rlock()
  return rtx
end

define("views", function(f, be)
  local tx = be:batch_tx()
  local locked, err = backend.pcall(tx.lock, tx)
  if not locked and not tostring(err):find("read-only", 1, true) then error(err, 0) end
  local _ <close> = locked and tx or nil   -- unlocks
  local rtx = rlocked(be)
  local _ <close> = defer(function() rtx:runlock() end)
  local ctx <close> = be:concurrent_read_tx()
  if not locked then
    local buckets, keys = compare(f, rtx, "ReadTx", ctx, "ConcurrentReadTx")
    return fmt("%d buckets, %d keys read alike by ReadTx and ConcurrentReadTx (read-only: no BatchTx)",
      buckets, keys)
  end
  local buckets, keys = compare(f, tx, "BatchTx", rtx, "ReadTx")
  compare(f, tx, "BatchTx", ctx, "ConcurrentReadTx")
  return fmt("%d buckets, %d keys read alike by BatchTx, ReadTx and ConcurrentReadTx", buckets, keys)
end)

define("committed", function(f, be)
  be:force_commit()
  local pending = be:batch_tx():pending()
  if pending ~= 0 then f:add(nil, nil, "%d writes are still pending after force_commit()", pending) end
  local ctx <close> = be:concurrent_read_tx()
  local names, keys = ctx:buckets(), 0
  for _, name in ipairs(names) do
    for k, v in ctx:pairs(name) do
      keys = keys + 1
      local c = be:_committed_get(name, k)
      if c ~= v then
        f:add(name, k, "a view reads %s, LMDB holds %s", show(v), c == nil and "no such key" or show(c))
      end
    end
  end
  return fmt("%d keys in %d buckets read back from LMDB; %d writes pending", keys, #names, pending)
end)

define("hash", function(f, be)
  local h = be:hash()   -- commits first; nothing is written in between
  local ctx <close> = be:concurrent_read_tx()
  local crc, buckets, keys = hash_of(ctx)
  if crc ~= h then f:add(nil, nil, "be:hash() is %08x, the CRC-32C of what a view reads %08x", h, crc) end
  return fmt("%08x over %d buckets, %d keys", h, buckets, keys)
end)

local STATS_FIELDS = { "entries", "depth", "branch_pages", "leaf_pages", "overflow_pages" }

-- What is wrong with one entry of be:bucket_stats(), if anything, and whether
-- the entry can still be counted (its numbers are there).
local function bad_stats(s)
  if type(s) ~= "table" or type(s.name) ~= "string" then return "an entry without a name" end
  for _, field in ipairs(STATS_FIELDS) do
    local n = s[field]
    if math.type(n) ~= "integer" or n < 0 then return fmt("%s is %s", field, tostring(n)) end
  end
  if s.entries > 0 and (s.depth < 1 or s.leaf_pages < 1) then
    return fmt("%d entries in a tree of depth %d with %d leaf pages", s.entries, s.depth, s.leaf_pages), true
  end
  if s.branch_pages < s.depth - 1 then
    return fmt("a tree of depth %d has only %d branch pages", s.depth, s.branch_pages), true
  end
end

define("lmdb", function(f, be)
  if not be.bucket_stats then error("backend: check: lmdb needs be:bucket_stats(), which this build lacks", 0) end
  local stats = be:bucket_stats()   -- commits first
  local ctx <close> = be:concurrent_read_tx()
  local by_name, names = {}, {}
  for i, s in ipairs(stats) do
    local bad, usable = bad_stats(s)
    if bad then f:add(type(s) == "table" and s.name or nil, nil, "be:bucket_stats() entry #%d: %s", i, bad) end
    if usable or not bad then
      if by_name[s.name] then
        f:add(s.name, nil, "be:bucket_stats() lists the bucket twice")
      else
        by_name[s.name] = s
        names[#names + 1] = s.name
      end
    end
  end
  local pages, entries = 0, 0
  merge(each(model.sort(names)), each(ctx:buckets()), function(name, in_lmdb, in_view)
    local s = by_name[name]
    if not in_view then return f:add(name, nil, "LMDB has the bucket (%d entries), a view does not", s.entries) end
    if not in_lmdb then return f:add(name, nil, "a view reads the bucket, LMDB does not have it") end
    local n = 0
    for _ in ctx:pairs(name) do n = n + 1 end
    if n ~= s.entries then f:add(name, nil, "LMDB counts %d entries, a view reads %d keys", s.entries, n) end
    pages = pages + s.branch_pages + s.leaf_pages + s.overflow_pages
    entries = entries + s.entries
  end)
  local page_size, in_use, size = be:stats().page_size, be:size_in_use(), be:size()
  if pages * page_size > in_use then
    f:add(nil, nil, "the buckets' %d pages of %d bytes are more than size_in_use() (%d bytes)", pages, page_size,
      in_use)
  end
  if in_use > size then f:add(nil, nil, "size_in_use() is %d bytes, more than size() (%d bytes)", in_use, size) end
  return fmt("%d buckets, %d entries in %d pages of %d bytes; %d bytes in use of %d", #names, entries, pages,
    page_size, in_use, size)
end)

-- A temporary copy of a database: copy.path is where to write it; closing the
-- copy closes copy.be (if opened) and removes its files.
local Copy = {
  __close = function(c)
    if c.be then c.be:close() end
    os.remove(c.path)
    os.remove(c.path .. "-lock")
    os.remove(c.dir)
  end,
}

local function temp_copy()
  local dir = backend.mkdtemp()
  return setmetatable({ dir = dir, path = dir .. "/copy" }, Copy)
end

-- Writes snap into copy, closes snap and opens the copy read-only.
local function fill(f, copy, snap)
  local size = snap:size()
  local written = snap:write_to(copy.path)
  snap:close()
  if written ~= size then f:add(nil, nil, "the snapshot's size() is %d, write_to wrote %d bytes", size, written) end
  copy.be = backend.open { path = copy.path, readonly = true }
  return written
end

define("snapshot", function(f, be)
  local snap <close> = be:snapshot()
  local h = be:hash()   -- the snapshot's state: nothing is written in between
  local ctx <close> = be:concurrent_read_tx()
  local copy <close> = temp_copy()
  local bytes = fill(f, copy, snap)
  local cctx <close> = copy.be:concurrent_read_tx()
  local buckets, keys = compare(f, ctx, "the backend", cctx, "the snapshot")
  local ch = copy.be:hash()
  if ch ~= h then f:add(nil, nil, "the snapshot's hash is %08x, the backend's %08x", ch, h) end
  return fmt("%d bytes, %d buckets, %d keys, hash %08x", bytes, buckets, keys, ch)
end)

define("defrag", function(f, be)
  local h = be:hash()   -- commits: the size before is that of the data
  local before = be:size()
  local copy <close> = temp_copy()
  do
    local snap <close> = be:snapshot()
    fill(f, copy, snap)
  end
  be:defrag()
  local after, h2 = be:size(), be:hash()
  if h2 ~= h then f:add(nil, nil, "hash() was %08x before defrag(), %08x after", h, h2) end
  if after > before then f:add(nil, nil, "defrag() grew the file from %d to %d bytes", before, after) end
  local ctx <close> = be:concurrent_read_tx()
  local cctx <close> = copy.be:concurrent_read_tx()
  local buckets, keys = compare(f, cctx, "before defrag()", ctx, "after")
  return fmt("%d buckets, %d keys, hash %08x kept; size %d -> %d bytes", buckets, keys, h2, before, after)
end)

define("reopen", function(f, path, config)
  if type(path) ~= "string" then
    error(fmt("backend: check: reopen needs a database path, got %s", type(path)), 0)
  end
  if not exists(path) then error(fmt("backend: check: reopen: no database at %s", path), 0) end
  local hashes = {}
  for i = 1, 2 do
    local be <close> = backend.open(with_path(config, path))
    hashes[i] = be:hash()
    be:close()
  end
  if hashes[1] ~= hashes[2] then
    f:add(nil, nil, "hash() was %08x, %08x after closing and opening again", hashes[1], hashes[2])
  end
  return fmt("hash %08x, the same after closing and opening again", hashes[1])
end)

--- Runs the checks on be and returns a report:
-- { ok = bool, checks = { { name, ok, detail, seconds }... }, findings = {...} }.
-- opts (defaults): snapshot (true), defrag (false: it rewrites the file),
-- reopen (false: be is closed, checked with check.reopen, and opened again with
-- opts.config plus its path as report.backend; nil if that open failed).
-- A check that raises is a failed check with the error as its finding, but an
-- interrupt (Ctrl-C) is raised on at once: it says nothing about the database.
function check.run(be, opts)
  opts = opts or {}
  local report = { ok = true, checks = {}, findings = {} }
  local function run(name, ...)
    local t0 = backend.monotonic()
    local ok, findings, detail = backend.pcall(check[name], ...)
    if not ok then
      findings, detail = { { check = name, message = tostring(findings) } }, "raised an error"
    end
    report.checks[#report.checks + 1] = { name = name, ok = #findings == 0, detail = detail,
      seconds = backend.monotonic() - t0 }
    table.move(findings, 1, #findings, #report.findings + 1, report.findings)
    report.ok = report.ok and #findings == 0
  end
  for _, name in ipairs { "views", "committed", "hash", "lmdb" } do run(name, be) end
  if opts.snapshot ~= false then run("snapshot", be) end
  if opts.defrag then run("defrag", be) end
  if opts.reopen then
    local path = be:path()
    be:close()
    run("reopen", path, opts.config)
    if exists(path) then   -- else open() would make a new, empty database
      local ok, reopened = backend.pcall(backend.open, with_path(opts.config, path))
      if ok then
        report.backend = reopened
      else
        report.ok = false
        report.findings[#report.findings + 1] = { check = "reopen", message = tostring(reopened) }
      end
    end
  end
  return report
end

--- One finding as a line: `check: bucket "b", key "k\000": message`.
function check.describe(finding)
  local where = {}
  if finding.bucket then where[#where + 1] = "bucket " .. show(finding.bucket) end
  if finding.key then where[#where + 1] = "key " .. show(finding.key) end
  where = #where > 0 and table.concat(where, ", ") .. ": " or ""
  return fmt("%s: %s%s", finding.check, where, finding.message)
end

--- The report as text: a line per check (name, ok or FAILED, detail, time), the
-- findings (opts.max_findings of them at most), then a summary line.
function check.format(report, opts)
  local max = opts and opts.max_findings or math.huge
  local lines, failed = {}, 0
  for _, c in ipairs(report.checks) do
    lines[#lines + 1] = fmt("%-10s %-6s %s (%.3f s)", c.name, c.ok and "ok" or "FAILED", c.detail, c.seconds)
    if not c.ok then failed = failed + 1 end
  end
  local findings = report.findings
  for i = 1, math.min(#findings, max) do lines[#lines + 1] = "  " .. check.describe(findings[i]) end
  if #findings > max then lines[#lines + 1] = fmt("  ... and %d more findings", #findings - max) end
  if report.ok then
    lines[#lines + 1] = fmt("ok: %d checks passed", #report.checks)
  else
    lines[#lines + 1] = fmt("FAILED: %d of %d checks, %d findings", failed, #report.checks, #findings)
  end
  return table.concat(lines, "\n")
end

return check
