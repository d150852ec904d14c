--- backend.tools.repl: exploring a database from Lua. The helpers work in any Lua
-- session, the loop is what `backendctl repl` runs:
--
--   local h = require("backend.tools.repl").helpers(be)
--   h.buckets()            -- bucket names (prints one per line)
--   h.scan("key", "/a/")   -- 20 entries from "/a/" on; h.more() for the next 20
--   h.get("key", "k")      -- the value or nil
--   h.hash(), h.stat()     -- hash (decimal, hex); sizes, buckets and pages
--   h.etcd:get("/k")       -- etcd's keyspace, when the database holds etcd data
--
--   require("backend.tools.repl").run(be, "print(#buckets())\n")   -- returns errors, output
--
-- Binary keys and values are shown escaped (\xNN) and long values truncated,
-- with their length.
local backend = require "backend"

local repl = {}
local fmt = string.format

local PREVIEW = 60     -- bytes of a value shown before it is truncated
local KEY_WIDTH = 40   -- widest key column in aligned entries
local PAGE = 20        -- entries per scan page

-- Text --------------------------------------------------------------------------

--- s for a terminal or a text line: valid UTF-8 stays text; control
-- characters (tab and newline too), backslash and, when s is not UTF-8, every
-- byte >= 0x80 are escaped as \xNN and \\.
function repl.escape(s)
  local special = utf8.len(s) and "[%c\\]" or "[%c\\\128-\255]"
  return (s:gsub(special, function(c)
    return c == "\\" and "\\\\" or fmt("\\x%02x", c:byte())
  end))
end

function repl.hex(s)
  return (s:gsub(".", function(c) return fmt("%02x", c:byte()) end))
end

--- The bytes of a hex string (whitespace ignored), or nil if it is not one.
function repl.unhex(s)
  s = s:gsub("%s", "")
  if #s % 2 == 1 or s:find("%X") then return nil end
  return (s:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end))
end

--- s escaped, cut after `max` bytes (default 60) with "…" and its length.
function repl.preview(s, max)
  max = max or PREVIEW
  if #s <= max then return repl.escape(s) end
  local cut = max
  if utf8.len(s) then   -- cut on a character boundary, so the prefix stays text
    while cut > 0 and (s:byte(cut + 1) & 0xC0) == 0x80 do cut = cut - 1 end
  end
  return fmt("%s… (%d bytes)", repl.escape(s:sub(1, cut)), #s)
end

local SI = { "B", "kB", "MB", "GB", "TB", "PB", "EB" }

--- Bytes as etcdctl shows them (go-humanize's Bytes: SI units, "20 kB", "12 MB").
function repl.human_bytes(n)
  if n < 10 then return fmt("%d B", n) end
  local e = math.floor(math.log(n) / math.log(1000))
  local val = math.floor(n / 1000 ^ e * 10 + 0.5) / 10
  return fmt(val < 10 and "%.1f %s" or "%.0f %s", val, SI[e + 1])
end

local function width(s)
  return utf8.len(s) or #s
end

--- Rows of cells as aligned lines; `align` has one letter per column, "r" for
-- right-aligned ("l" otherwise). The last column is not padded.
function repl.columns(rows, align)
  local widths = {}
  for _, row in ipairs(rows) do
    for i, cell in ipairs(row) do widths[i] = math.max(widths[i] or 0, width(cell)) end
  end
  local lines = {}
  for r, row in ipairs(rows) do
    local cells = {}
    for i, cell in ipairs(row) do
      local pad = (" "):rep(widths[i] - width(cell))
      if (align or ""):sub(i, i) == "r" then
        cells[i] = pad .. cell
      else
        cells[i] = i < #row and cell .. pad or cell
      end
    end
    lines[r] = table.concat(cells, "  ")
  end
  return table.concat(lines, "\n")
end

-- Objects that describe themselves --------------------------------------------

-- A list of byte strings (bucket names), one per line.
local List = { __name = "backend.repl.List" }
List.__index = List

function List:__tostring()
  local lines = {}
  for i, s in ipairs(self) do lines[i] = repl.escape(s) end
  return #lines > 0 and table.concat(lines, "\n") or "(none)"
end

-- One key and its value.
local Entry = { __name = "backend.repl.Entry" }
Entry.__index = Entry

function Entry:__tostring()
  return repl.escape(self.key) .. " = " .. repl.preview(self.value)
end

-- A page of entries of a bucket, in key order: aligned "key  value" lines.
-- page.next is the key the next page starts at (nil: the bucket ends here).
local Page = { __name = "backend.repl.Page" }
Page.__index = Page

function Page:__tostring()
  if #self == 0 then return "(no entries)" end
  local rows = {}
  for i, e in ipairs(self) do rows[i] = { repl.preview(e.key, KEY_WIDTH), repl.preview(e.value) } end
  local text = repl.columns(rows)
  if self.next then text = text .. fmt("\n-- more() for the next %d", self.n) end
  return text
end

local function sized(n)
  return fmt("%d (%s)", n, repl.human_bytes(n))
end

-- A stat as text: the `summary` rows (a "buckets" row added), then a table of
-- the buckets: name, then the fields `columns` (the headings are their names).
local function stat_text(summary, buckets, columns)
  local entries = 0
  local heading = { "BUCKET" }
  for i, c in ipairs(columns) do heading[i + 1] = c:upper():gsub("_", " ") end
  local rows = { heading }
  for _, b in ipairs(buckets) do
    entries = entries + b.entries
    local row = { repl.preview(b.name, KEY_WIDTH) }
    for i, c in ipairs(columns) do row[i + 1] = tostring(b[c]) end
    rows[#rows + 1] = row
  end
  summary[#summary + 1] = { "buckets", fmt("%d, %d entries", #buckets, entries) }
  return repl.columns(summary) .. "\n\n" .. repl.columns(rows, "l" .. ("r"):rep(#columns))
end

-- What stat() returns: be:stats() fields, path, and buckets = be:bucket_stats().
local Stat = { __name = "backend.repl.Stat" }
Stat.__index = Stat

function Stat:__tostring()
  return stat_text({
    { "path", self.path },
    { "size", sized(self.size) },
    { "size in use", sized(self.size_in_use) },
    { "page size", tostring(self.page_size) },
    { "map size", sized(self.map_size) },
    { "commits", fmt("%d by this process (%d failed), %d writes pending, %d read txs open",
                     self.commits, self.commit_failures, self.pending, self.open_read_tx_n) },
  }, self.buckets, { "entries", "depth", "branch_pages", "leaf_pages", "overflow_pages" })
end

-- What bolt_stat() returns: an etcd data file's f:info() fields, path, format
-- ("bbolt") and buckets = { { name, entries }... }.
local BoltStat = { __name = "backend.repl.BoltStat" }
BoltStat.__index = BoltStat

function BoltStat:__tostring()
  return stat_text({
    { "path", self.path },
    { "format", "etcd data file (bbolt)" .. (self.sha256_trailer and ", SHA-256 trailer verified" or "") },
    { "size", sized(self.file_size) },
    { "size in use", sized(self.total_size) },
    { "page size", tostring(self.page_size) },
    { "txid", tostring(self.txid) },
  }, self.buckets, { "entries" })
end

--- The sizes and buckets (with their numbers of entries) of the etcd data file
-- f (a BoltFile, see backend.open_bolt) at `path`; shown as a table by tostring.
function repl.bolt_stat(f, path)
  local st, bucket = f:info(), nil
  st.path, st.format, st.buckets = path, "bbolt", {}
  f:walk(function(name)
    bucket = { name = name, entries = 0 }
    st.buckets[#st.buckets + 1] = bucket
  end, function() bucket.entries = bucket.entries + 1 end)
  return setmetatable(st, BoltStat)
end

-- Help text of the helpers: what help() prints.
local HELP = setmetatable({ text = [==[
be                           the Backend: be:stats(), be:view(fn), be:update(fn), ...
buckets()                    bucket names
get(bucket, key)             the value, or nil
scan(bucket [, from [, n]])  n (20) entries from key `from` on
more()                       the next n entries of the last scan
hash()                       the hash, decimal and hex
stat()                       sizes, buckets (entries, depth, pages) and counters
etcd                         etcd's keyspace, when the database holds etcd data: etcd:get("/k"),
                             etcd:range("/a/", { prefix = true }), etcd:history("/k")]==] }, {
  __tostring = function(self) return self.text end,
})

-- Pretty-printing -----------------------------------------------------------------

local MAX_ITEMS = 30

local function show(v, depth)
  local t = type(v)
  if t == "string" then return '"' .. repl.preview(v) .. '"' end
  if t ~= "table" then return tostring(v) end
  local mt = getmetatable(v)
  if mt and mt.__tostring then return tostring(v) end
  if depth == 0 then return "{...}" end
  local parts, n = {}, #v
  for i = 1, math.min(n, MAX_ITEMS) do parts[i] = show(v[i], depth - 1) end
  local keys = {}
  for k in pairs(v) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  for _, k in ipairs(keys) do
    if #parts == MAX_ITEMS then break end
    local name = type(k) == "string" and k:match("^[%a_][%w_]*$") and k or "[" .. show(k, 0) .. "]"
    parts[#parts + 1] = name .. " = " .. show(v[k], depth - 1)
  end
  if n + #keys > #parts then parts[#parts + 1] = fmt("… (%d more)", n + #keys - #parts) end
  return "{ " .. table.concat(parts, ", ") .. " }"
end

--- v as the REPL prints it: strings quoted, escaped and truncated; objects by
-- their __tostring; tables two levels deep, at most 30 items each.
function repl.show(v)
  return show(v, 2)
end

-- The helpers ----------------------------------------------------------------------

local function check_string(v, name, fname)
  if type(v) ~= "string" then
    error(fmt("bad argument '%s' to '%s' (string expected, got %s)", name, fname, type(v)), 3)
  end
end

--- The helper functions bound to `be` (see the top of this file). `etcd` is
-- decoded on first use, as of then, and is nil when the database does not
-- hold etcd data (no "key" and "meta" buckets).
function repl.helpers(be)
  local h = {}
  local last   -- the last page scanned, for more()

  function h.buckets()
    return setmetatable(be:view(function(rtx) return rtx:buckets() end), List)
  end

  function h.get(bucket, key)
    check_string(bucket, "bucket", "get")
    check_string(key, "key", "get")
    return be:view(function(rtx) return rtx:get(bucket, key) end)
  end

  local function page(bucket, from, n)
    local p = setmetatable({ bucket = bucket, n = n }, Page)
    be:view(function(rtx)
      for k, v in rtx:pairs(bucket, from) do
        if #p == n then
          p.next = k
          break
        end
        p[#p + 1] = setmetatable({ key = k, value = v }, Entry)
      end
    end)
    last = p
    return p
  end

  --- scan(bucket [, from [, n]]), or scan(bucket, n).
  function h.scan(bucket, from, n)
    check_string(bucket, "bucket", "scan")
    if math.type(from) == "integer" then from, n = nil, from end
    if from ~= nil then check_string(from, "from", "scan") end
    n = n or PAGE
    if math.type(n) ~= "integer" or n < 1 then error("bad argument 'n' to 'scan' (positive integer expected)", 2) end
    return page(bucket, from, n)
  end

  function h.more()
    if not (last and last.next) then return setmetatable({}, Page) end
    return page(last.bucket, last.next, last.n)
  end

  function h.hash()
    local x = be:hash()
    return x, fmt("%08x", x)
  end

  function h.stat()
    local st = be:stats()
    st.path, st.buckets = be:path(), be:bucket_stats()
    return setmetatable(st, Stat)
  end

  function h.help()
    return HELP
  end

  local keyspace   -- false once known not to be etcd data
  return setmetatable(h, { __index = function(_, k)
    if k ~= "etcd" then return nil end
    if keyspace == nil then
      local names = {}
      for _, b in ipairs(h.buckets()) do names[b] = true end
      keyspace = names.key and names.meta and require("backend.etcd").open(be) or false
    end
    return keyspace or nil
  end })
end

-- The loop ---------------------------------------------------------------------------

-- A function of a prompt returning the next line of input (a string or a file),
-- or nil; `prompt(p)` shows p first.
local function line_reader(input, prompt)
  if type(input) ~= "string" then
    return function(p) prompt(p); return input:read("l") end
  end
  local pos = 1
  return function(p)
    prompt(p)
    if pos > #input then return nil end
    local nl = input:find("\n", pos, true) or #input + 1
    local line = input:sub(pos, nl - 1)
    pos = nl + 1
    return line
  end
end

-- Line editing and history on a terminal, with lua-readline when it is
-- installed (nil when not). Ctrl-C while a line is edited shows ^C and takes
-- effect when the line is entered: the line is dropped, not run. (Dropping it
-- at once needs readline's callback interface, which lua-readline 3.2 cannot
-- leave in the middle of a line: its handler_remove writes through a stream
-- it has already closed, and the process crashes.)
local function readline_reader(err)
  local ok, rl = pcall(require, "readline")
  if not ok then return nil end
  rl.set_options { histfile = "", completion = false }   -- no history file of ours
  return function(p)
    local ok_read, line = pcall(rl.readline, p)
    if not ok_read then
      if backend.interrupted(line) then err:write("(Ctrl-C: the line was not run)\n") end
      error(line, 0)
    end
    return line
  end
end

-- Compiles one input the way lua.c does: the line as an expression
-- ("return " .. line) first, then as statements, reading more lines while the
-- chunk is incomplete (the syntax error is at <eof>).
local function compile(line, next_line, env)
  if line:sub(1, 1) == "=" then line = "return " .. line:sub(2) end   -- lua.c still takes "=expr"
  local fn = load("return " .. line, "=stdin", "t", env)
  if fn then return fn end
  local chunk = line
  while true do
    local err
    fn, err = load(chunk, "=stdin", "t", env)
    if fn or not err:find("<eof>$") then return fn, err end
    local more = next_line(">> ")
    if not more then return nil, err end
    chunk = chunk .. "\n" .. more
  end
end

--- Reads Lua from `input` (a string or a file), runs each statement or
-- expression with the helpers of `be` (and `be`) in scope, and writes the
-- results to `output` (a file; nil: collected and returned). opts.prompt
-- writes prompts, opts.banner a first line, opts.err takes the error messages
-- (default: output). Returns the number of inputs that raised an error, and
-- the output when `output` was nil. An interrupt (Ctrl-C, see
-- backend.interrupted) is raised on; with opts.prompt (a terminal), it cancels
-- the line being typed or the statement running instead, and the loop goes on
-- with a fresh prompt (backend.catch_interrupt, armed for each input). With
-- opts.prompt, input io.stdin and lua-readline installed, lines are read with
-- line editing and history (opts.line_editing = false: never).
function repl.run(be, input, output, opts)
  opts = opts or {}
  local collected
  if output == nil then
    collected = {}
    output = { write = function(_, ...) table.move({ ... }, 1, select("#", ...), #collected + 1, collected) end }
  end
  local err = opts.err or output
  local helpers = repl.helpers(be)
  local env = setmetatable({ be = be }, { __index = function(_, k)
    local v = helpers[k]
    if v == nil then v = _G[k] end
    return v
  end })
  function env.print(...)
    local n = select("#", ...)
    for i = 1, n do output:write(tostring((select(i, ...))), i < n and "\t" or "\n") end
    if n == 0 then output:write("\n") end
  end
  local function prompt(p)
    if opts.prompt then
      output:write(p)
      if output.flush then output:flush() end
    end
  end
  local next_line = opts.prompt and input == io.stdin and opts.line_editing ~= false and readline_reader(err)
    or line_reader(input, prompt)
  local errors = 0
  -- One input read, run and shown; false at the end of the input.
  local function step()
    local line = next_line("> ")
    if line == nil then return false end
    local fn, msg = compile(line, next_line, env)
    local results = fn and table.pack(pcall(fn)) or { false, msg, n = 2 }
    if results[1] then
      local shown = {}
      for i = 2, results.n do shown[i - 1] = repl.show(results[i]) end
      if #shown > 0 then output:write(table.concat(shown, "\t"), "\n") end
    elseif backend.interrupted(results[2]) then
      if not opts.prompt then error(results[2], 0) end
      err:write("interrupted\n")
    else
      errors = errors + 1
      err:write(tostring(results[2]), "\n")
    end
    return true
  end
  if opts.banner then output:write(opts.banner, "\n") end
  while true do
    if not opts.prompt then
      if not step() then break end
    else
      backend.catch_interrupt()
      local ok, more = pcall(step)
      if ok and not more then break end
      if not ok then
        if not backend.interrupted(more) then error(more, 0) end
        output:write("\n")   -- Ctrl-C while typing: the line is dropped
      end
    end
  end
  if opts.prompt then output:write("\n") end
  return errors, collected and table.concat(collected)
end

return repl
