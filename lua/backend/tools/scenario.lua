--- backend.tools.scenario: scripted test suites for the backend, written as Lua tables
-- or files, and seeded random ones whose expectations come from the reference
-- model (backend.tools.model).
--
--   local scenario = require "backend.tools.scenario"
--   local result = scenario.run {
--     name = "a delete is seen before the commit",
--     config = { batch_interval = 3600 },
--     steps = {
--       { "create_bucket", "b" },
--       { "put", "b", "k", "v" },
--       { "force_commit" },
--       { "delete", "b", "k" },
--       { "get", "b", "k", expect = false },                  -- false: no such key
--       { "get", "b", "k", via = "committed", expect = "v" },
--     },
--   }
--   print(scenario.format(result))
--
-- A step is { op, arguments..., options... }. `expect = value` makes the step
-- check what it returns (the result of each op is said below); a step that
-- raises, or returns something else, is a failure naming the step's number.
--
-- Writes go through the BatchTx: inside { "lock" } ... { "unlock" }, or else
-- each in a lock section of its own.
--   create_bucket b | delete_bucket b | put b k v | seq_put b k v | delete b k
--   lock | unlock | rollback   (rollback discards the section's writes)
--   commit                  tx:commit(): etcd's Commit, outside a section (inside
--                           one it raises "unlock or rollback first")
-- Reads go through `via = "batch"` (the default: the BatchTx, locked for the read
-- when no section is open), "read" (the shared ReadTx: the one held by { "rlock" },
-- else rlocked for the read), "concurrent" (a new ConcurrentReadTx), or through
-- `view = name` (a view kept by { "view", name } or { "open_snapshot", name }).
--   get b k                 -> the value, or false; also via = "committed" (LMDB only)
--   range b from [to [limit]] -> { { k, v }, ... }   (tx:range)
--   pairs b [from [to]]     -> { { k, v }, ... }     (tx:pairs)
--   for_each b              -> { { k, v }, ... }     (tx:for_each)
--   buckets                 -> { names }
--   pending | commits       -> tx:pending(), be:commits()
--   hash [ignores = t] [view = name] -> be:hash(ignores), or the opened snapshot's
-- The backend:
--   force_commit | defrag | reopen [readonly = true] (close, open the file again)
--   await_commit [seconds]  until nothing is pending (10 s at most)
--   check [defrag = b] [snapshot = b]  backend.check.run passes
-- Views:
--   view name               keeps a new ConcurrentReadTx as `name`
--   close_view name [runlock = true]  closes it (reads on it raise afterwards)
--   rlock | runlock         holds / releases the shared ReadTx (for via = "read")
--   snapshot name           keeps be:snapshot() as `name`
--   open_snapshot name [write = "path" | "file" | "function"]  writes it to a
--                           temporary file (checking the byte counts), closes it,
--                           opens the file read-only as view `name`
-- Errors:
--   error step expect = text  the step raises a "backend: " error containing text
local backend = require "backend"
local check = require "backend.tools.check"
local model = require "backend.tools.model"
local uv = require "luv"

local scenario = {}

local fmt, concat = string.format, table.concat
local quote, show = model.quote, check.show

-- ---------------------------------------------------------------------------
-- Lua source for values: scenario.dump writes them, failure messages show them
-- (`short`: long strings abbreviated).

local KEYWORDS = {}
for w in ("and break do else elseif end false for function goto if in local nil not or repeat return then "
  .. "true until while"):gmatch("%a+") do KEYWORDS[w] = true end

-- The largest positive integer key of t (0 if none).
local function maxn(t)
  local n = 0
  for k in pairs(t) do
    if math.type(k) == "integer" and k > n then n = k end
  end
  return n
end

local render

local function render_key(k, short)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") and not KEYWORDS[k] then return k end
  return "[" .. render(k, short) .. "]"
end

-- A string as a Lua expression: runs of 32 or more of one byte (the random
-- values and longest keys are mostly such runs) as string.rep.
local function render_string(v, short)
  local parts, start, i = {}, 1, 1
  local function literal(j)
    if j >= start then parts[#parts + 1] = (short and show or quote)(v:sub(start, j)) end
  end
  while i <= #v do
    local c, j = v:byte(i), i
    while v:byte(j + 1) == c do j = j + 1 end
    if j - i + 1 >= 32 then
      literal(i - 1)
      parts[#parts + 1] = fmt("string.rep(%s, %d)", quote(string.char(c)), j - i + 1)
      start = j + 1
    end
    i = j + 1
  end
  literal(#v)
  return #parts > 0 and concat(parts, " .. ") or '""'
end

function render(v, short)
  local t = type(v)
  if t == "string" then
    return render_string(v, short)
  elseif math.type(v) == "float" then
    if v ~= v or v == math.huge or v == -math.huge then
      error("backend: scenario: cannot write the number " .. tostring(v), 0)
    end
    local s
    for digits = 14, 17 do   -- the shortest that reads back as v
      s = fmt("%." .. digits .. "g", v)
      if tonumber(s) == v then break end
    end
    return s:find("[.e]") and s or s .. ".0"
  elseif t == "number" or t == "boolean" or t == "nil" then
    return tostring(v)
  elseif t == "table" then
    local parts, n = {}, maxn(v)
    for i = 1, n do parts[i] = render(v[i], short) end
    local named = {}
    for k, x in pairs(v) do
      if not (math.type(k) == "integer" and k >= 1 and k <= n) then
        named[#named + 1] = render_key(k, short) .. " = " .. render(x, short)
      end
    end
    table.sort(named)
    table.move(named, 1, #named, n + 1, parts)
    return #parts == 0 and "{}" or "{ " .. concat(parts, ", ") .. " }"
  end
  error("backend: scenario: cannot write a " .. t, 0)
end

--- A step as text, for messages: `get("b", "k") view="v1"`.
function scenario.describe(step)
  local args = {}
  for i = 2, maxn(step) do
    args[i - 1] = (step[1] == "error" and i == 2 and type(step[2]) == "table") and scenario.describe(step[2])
      or render(step[i], true)
  end
  local named = {}
  for k, v in pairs(step) do
    if type(k) == "string" and k ~= "expect" then named[#named + 1] = k .. "=" .. render(v, true) end
  end
  table.sort(named)
  return fmt("%s(%s)%s", tostring(step[1]), concat(args, ", "), #named > 0 and " " .. concat(named, " ") or "")
end

-- ---------------------------------------------------------------------------
-- Running steps

-- A step's failure (as opposed to an error the step raised).
local Failure = {}

local function failure(msg, ...)
  error(setmetatable({ message = fmt(msg, ...) }, Failure), 0)
end

local function misuse(msg, ...)
  error("backend: scenario: " .. fmt(msg, ...), 0)
end

local function defer(fn)
  return setmetatable({}, { __close = fn })
end

local function same(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then return a == b end
  for k, v in pairs(a) do
    if not same(v, b[k]) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end

-- How got differs from want (nil if it does not): the first entry that differs.
local function difference(got, want)
  if same(got, want) then return nil end
  if type(got) == "table" and type(want) == "table" then
    for i = 1, math.max(maxn(got), maxn(want)) do
      if not same(got[i], want[i]) then
        return fmt("entry #%d is %s, want %s (%d entries, want %d)", i, render(got[i], true),
          render(want[i], true), maxn(got), maxn(want))
      end
    end
  end
  return fmt("got %s, want %s", render(got, true), render(want, true))
end

-- Keys and values (two arrays) as { { k, v }, ... }.
local function zip(keys, values)
  local out = {}
  for i, k in ipairs(keys) do out[i] = { k, values[i] } end
  return out
end

local function named_view(st, name)
  return st.views[name] or misuse("no view named %s", quote(name))
end

-- fn(tx) on the BatchTx, locked for the call when no section is open.
local function with_batch(st, fn)
  if st.locked then return fn(st.be:batch_tx()) end
  local tx <close> = st.be:batch_tx():lock()
  return fn(tx)
end

-- fn(reader) on the reader a read step names (via or view).
local function with_reader(st, step, fn)
  if step.view then return fn(named_view(st, step.view).tx) end
  local via = step.via or "batch"
  if via == "batch" then return with_batch(st, fn) end
  if via == "concurrent" then
    local ctx <close> = st.be:concurrent_read_tx()
    return fn(ctx)
  end
  if st.rtx then return fn(st.rtx) end
  local rtx = st.be:read_tx()
  rtx:rlock()
  local _ <close> = defer(function() rtx:runlock() end)
  return fn(rtx)
end

-- A view kept under a name: tx (a ConcurrentReadTx), and for an opened
-- snapshot its backend `be` and temporary directory `dir`.
local function close_view(v, runlock)
  v.closed = true
  if v.tx and runlock then v.tx:runlock() elseif v.tx then v.tx:close() end
  if v.be then v.be:close() end
  if v.dir then
    os.remove(v.dir .. "/snapshot")
    os.remove(v.dir .. "/snapshot-lock")
    os.remove(v.dir)
  end
end

-- Keeps v as view `name`, in place of a closed one (or one left half made by
-- a step that failed).
local function new_view(st, name, v)
  local old = st.views[name]
  if old and old.tx and not old.closed then misuse("view %s is open already", quote(name)) end
  if old and not old.closed then close_view(old) end
  st.views[name] = v
  return v
end

local function file_size(path)
  local f = assert(io.open(path, "rb"))
  local n = f:seek("end")
  f:close()
  return n
end

-- Writes snap to path as `how` says (a path, an open file, a function taking
-- chunks); returns what write_to returned.
local function write_snapshot(snap, path, how)
  if how == nil or how == "path" then return snap:write_to(path) end
  local f <close> = assert(io.open(path, "wb"))
  return snap:write_to(how == "file" and f or function(chunk) f:write(chunk) end)
end

local function writer(method)
  return function(st, step)
    with_batch(st, function(tx) tx[method](tx, table.unpack(step, 2, maxn(step))) end)
  end
end

local function collect(iterate)
  local out = {}
  iterate(function(k, v) out[#out + 1] = { k, v } end)
  return out
end

-- Each op: `args` (a letter per positional argument: s a string, o an optional
-- string, i an optional integer, n an optional number, t a step), the named
-- options it takes, what `expect` holds, and `run(st, step)` returning the result.
local READ = { via = "via", view = "string" }
local OPS = {
  create_bucket = { args = "s", run = writer("create_bucket") },
  delete_bucket = { args = "s", run = writer("delete_bucket") },
  put = { args = "sss", run = writer("put") },
  seq_put = { args = "sss", run = writer("seq_put") },
  delete = { args = "ss", run = writer("delete") },
  commit = { args = "", run = function(st) st.be:batch_tx():commit() end },
  lock = { args = "", run = function(st)
    st.be:batch_tx():lock()
    st.locked = true
  end },
  unlock = { args = "", run = function(st)
    st.be:batch_tx():unlock()
    st.locked = false
  end },
  rollback = { args = "", run = function(st)
    st.be:batch_tx():rollback()
    st.locked = false
  end },
  get = { args = "ss", opts = READ, expect = "string or false", run = function(st, step)
    if step.via == "committed" then return st.be:_committed_get(step[2], step[3]) or false end
    return with_reader(st, step, function(r) return r:get(step[2], step[3]) or false end)
  end },
  range = { args = "ssoi", opts = READ, expect = "table", run = function(st, step)
    return with_reader(st, step, function(r) return zip(r:range(step[2], step[3], step[4], step[5])) end)
  end },
  pairs = { args = "soo", opts = READ, expect = "table", run = function(st, step)
    return with_reader(st, step, function(r)
      return collect(function(add) for k, v in r:pairs(step[2], step[3], step[4]) do add(k, v) end end)
    end)
  end },
  for_each = { args = "s", opts = READ, expect = "table", run = function(st, step)
    return with_reader(st, step, function(r) return collect(function(add) r:for_each(step[2], add) end) end)
  end },
  buckets = { args = "", opts = READ, expect = "table", run = function(st, step)
    return with_reader(st, step, function(r) return r:buckets() end)
  end },
  pending = { args = "", expect = "integer", run = function(st) return st.be:batch_tx():pending() end },
  commits = { args = "", expect = "integer", run = function(st) return st.be:commits() end },
  hash = { args = "", opts = { ignores = "table", view = "string" }, expect = "integer", run = function(st, step)
    local be = step.view and (named_view(st, step.view).be or misuse("view %s is not a snapshot", quote(step.view)))
    return (be or st.be):hash(step.ignores)
  end },
  force_commit = { args = "", run = function(st) st.be:force_commit() end },
  defrag = { args = "", run = function(st) st.be:defrag() end },
  reopen = { args = "", opts = { readonly = "boolean" }, run = function(st, step)
    st.locked, st.rtx = false, nil   -- both end with the backend
    st.be:close()
    local cfg = {}
    for k, v in pairs(st.config) do cfg[k] = v end
    cfg.path, cfg.readonly = st.path, step.readonly
    st.be = backend.open(cfg)
  end },
  await_commit = { args = "n", run = function(st, step)
    local deadline = backend.monotonic() + (step[2] or 10)
    while st.be:batch_tx():pending() > 0 do
      if backend.monotonic() > deadline then failure("%d writes still pending", st.be:batch_tx():pending()) end
      uv.sleep(10)   -- ms
    end
  end },
  check = { args = "", opts = { defrag = "boolean", snapshot = "boolean" }, run = function(st, step)
    local report = check.run(st.be, { defrag = step.defrag, snapshot = step.snapshot })
    if not report.ok then
      local lines = {}
      for i = 1, math.min(#report.findings, 5) do lines[i] = check.describe(report.findings[i]) end
      failure("%d findings: %s", #report.findings, concat(lines, "; "))
    end
  end },
  view = { args = "s", run = function(st, step)
    new_view(st, step[2], {}).tx = st.be:concurrent_read_tx()
  end },
  close_view = { args = "s", opts = { runlock = "boolean" }, run = function(st, step)
    close_view(named_view(st, step[2]), step.runlock)
  end },
  rlock = { args = "", run = function(st)
    if st.rtx then misuse("the shared ReadTx is held already") end
    local rtx = st.be:read_tx()
    rtx:rlock()
    st.rtx = rtx
  end },
  runlock = { args = "", run = function(st)
    local rtx = st.rtx or misuse("the shared ReadTx is not held")
    st.rtx = nil
    rtx:runlock()
  end },
  snapshot = { args = "s", run = function(st, step)
    if st.snaps[step[2]] then misuse("snapshot %s exists already", quote(step[2])) end
    st.snaps[step[2]] = st.be:snapshot()
  end },
  open_snapshot = { args = "s", opts = { write = "write" }, run = function(st, step)
    local name = step[2]
    local snap <close> = st.snaps[name] or misuse("no snapshot named %s", quote(name))
    st.snaps[name] = nil
    local size = snap:size()
    local v = new_view(st, name, { dir = backend.mkdtemp() })
    local path = v.dir .. "/snapshot"
    local n = write_snapshot(snap, path, step.write)
    snap:close()
    if n ~= size then failure("write_to wrote %s bytes, size() said %d", tostring(n), size) end
    if file_size(path) ~= n then failure("the file has %d bytes, write_to said %d", file_size(path), n) end
    v.be = backend.open { path = path, readonly = true }
    v.tx = v.be:concurrent_read_tx()
  end },
}

local run_step

OPS.error = { args = "t", expect = "string", run = function(st, step)
  local ok, err = backend.pcall(run_step, st, step[2])
  if ok then failure("did not raise") end
  if getmetatable(err) == Failure then error(err, 0) end
  err = tostring(err)
  if err:sub(1, 9) ~= "backend: " then failure("raised %s, which lacks 'backend: '", quote(err)) end
  return err
end, match = function(got, want)
  if not got:find(want, 1, true) then return fmt("raised %s, want an error containing %s", quote(got), quote(want)) end
end }

function run_step(st, step)
  local op = OPS[step[1]]
  local got = op.run(st, step)
  if step.expect ~= nil then
    local d = (op.match or difference)(got, step.expect)
    if d then failure("%s", d) end
  end
end

-- ---------------------------------------------------------------------------
-- Checking scenarios before they run

local ARG = {
  s = function(v) return type(v) == "string" end,
  o = function(v) return v == nil or type(v) == "string" end,
  i = function(v) return v == nil or math.type(v) == "integer" end,
  n = function(v) return v == nil or type(v) == "number" end,
  t = function(v) return type(v) == "table" end,
}
local ARG_NAME = { s = "a string", o = "a string or nil", i = "an integer or nil", n = "a number or nil",
  t = "a step" }
local VIA = { batch = true, read = true, concurrent = true }
local OPT = {
  via = function(v, op) return VIA[v] or (v == "committed" and op == "get") end,
  write = function(v) return v == "path" or v == "file" or v == "function" end,
}
local EXPECT = {
  ["string or false"] = function(v) return type(v) == "string" or v == false end,
  table = function(v) return type(v) == "table" end,
  integer = function(v) return math.type(v) == "integer" end,
  string = function(v) return type(v) == "string" end,
}

local function check_step(step, where)
  if type(step) ~= "table" then misuse("%s is a %s, not a table", where, type(step)) end
  local name = step[1]
  local op = OPS[name]
  if not op then misuse("%s: unknown op %s", where, type(name) == "string" and quote(name) or tostring(name)) end
  local n = maxn(step)
  if n > #op.args + 1 then misuse("%s: %s takes %d arguments, got %d", where, name, #op.args, n - 1) end
  for i = 1, #op.args do
    local letter = op.args:sub(i, i)
    if not ARG[letter](step[i + 1]) then
      misuse("%s: argument #%d of %s must be %s, got %s", where, i, name, ARG_NAME[letter], type(step[i + 1]))
    end
  end
  for k, v in pairs(step) do
    if k == "expect" then
      if not op.expect then misuse("%s: %s returns nothing to expect", where, name) end
      if not EXPECT[op.expect](v) then
        misuse("%s: expect of %s must be a %s, got %s", where, name, op.expect, type(v))
      end
    elseif math.type(k) ~= "integer" then
      local want = op.opts and op.opts[k]
      if not want then misuse("%s: %s takes no option %s", where, name, tostring(k)) end
      if not (OPT[want] and OPT[want](v, name) or type(v) == want) then
        misuse("%s: option %s of %s cannot be %s", where, k, name, render(v, true))
      end
    end
  end
  if name == "error" then
    check_step(step[2], where .. " (inside error)")
    if step[2].expect ~= nil then misuse("%s: the step inside error has an expect", where) end
  end
end

local FIELDS = { name = "string", config = "table", steps = "table" }

-- Raises a "backend: scenario: " error naming what is wrong with s.
local function validate(s)
  if type(s) ~= "table" then misuse("a scenario is a table, got %s", type(s)) end
  for k, v in pairs(s) do
    if not FIELDS[k] then misuse("unknown field %s", tostring(k)) end
    if type(v) ~= FIELDS[k] then misuse("field %s must be a %s, got %s", k, FIELDS[k], type(v)) end
  end
  if not s.steps then misuse("no steps") end
  for i = 1, maxn(s.steps) do check_step(s.steps[i], "step " .. i) end
  return s
end

-- ---------------------------------------------------------------------------
-- The runner

-- Closes what the steps left open, then the backend; removes its files. An
-- interrupt on the way is raised once all is closed.
local function finish(st)
  local interrupt
  local function close(fn, ...)   -- what a step closed already raises: that is fine
    local ok, err = pcall(fn, ...)
    if not ok and backend.interrupted(err) then interrupt = err end
  end
  for _, v in pairs(st.views) do
    if not v.closed then close(close_view, v) end
  end
  for _, snap in pairs(st.snaps) do close(snap.close, snap) end
  if st.rtx then close(st.rtx.runlock, st.rtx) end
  if st.locked then close(function() st.be:batch_tx():unlock() end) end
  local _ <close> = defer(function()
    os.remove(st.path)
    os.remove(st.path .. "-lock")
    os.remove((st.path:match("^(.*)/[^/]+$")))
  end)
  st.be:close()
  if interrupt then error(interrupt, 0) end
end

--- Runs scenario s on a new temporary backend (s.config, a backend.open_tmp
-- config), closes it and removes it. Returns { ok, name, steps (the number run),
-- failures = { { step = number, message = text }... } }; stops after
-- opts.max_failures (10) failures. A malformed scenario raises.
function scenario.run(s, opts)
  validate(s)
  local max = opts and opts.max_failures or 10
  local config = {}
  for k, v in pairs(s.config or {}) do config[k] = v end
  config.keep = true   -- reopen needs the file; finish removes it
  local be, path = backend.open_tmp(config)
  config.keep = nil
  local st = { be = be, path = path, config = config, views = {}, snaps = {}, locked = false }
  local result = { ok = true, name = s.name or "scenario", steps = 0, failures = {} }
  local function failed(i, what, err)
    result.ok = false
    result.failures[#result.failures + 1] = { step = i, message = fmt("%s: %s", what,
      getmetatable(err) == Failure and err.message or "raised " .. tostring(err)) }
  end
  do   -- an interrupt (Ctrl-C) stops the run at once; the backend is removed all the same
    local _ <close> = defer(function(_, err) if err then pcall(finish, st) end end)
    for i = 1, #s.steps do
      local step = s.steps[i]
      result.steps = i
      local ok, err = backend.pcall(run_step, st, step)
      if not ok then
        failed(i, scenario.describe(step), err)
        if #result.failures >= max then break end
      end
    end
  end
  local ok, err = backend.pcall(finish, st)
  if not ok then failed(result.steps + 1, "closing the backend", err) end
  return result
end

--- The result as text: a line for the outcome, one per failure; with s (the
-- scenario), the steps before the first failure too (opts.context of them, 10).
function scenario.format(result, s, opts)
  local lines = { fmt("%s: %s, %d steps run", result.name, result.ok and "ok" or "FAILED", result.steps) }
  local first = result.failures[1]
  if first and s then
    local context = opts and opts.context or 10
    lines[#lines + 1] = "  the steps before the first failure:"
    for i = math.max(1, first.step - context), math.min(first.step - 1, #s.steps) do
      lines[#lines + 1] = fmt("    %d %s", i, scenario.describe(s.steps[i]))
    end
  end
  for _, f in ipairs(result.failures) do lines[#lines + 1] = fmt("  step %d: %s", f.step, f.message) end
  return concat(lines, "\n")
end

-- ---------------------------------------------------------------------------
-- Files

--- Lua source of s that scenario.load reads back as an equal table.
function scenario.dump(s)
  validate(s)
  local out = { "-- A backend.scenario: run it with scenario.run(scenario.load(path)).", "return {" }
  if s.name then out[#out + 1] = "  name = " .. render(s.name) .. "," end
  if s.config then out[#out + 1] = "  config = " .. render(s.config) .. "," end
  out[#out + 1] = "  steps = {"
  for _, step in ipairs(s.steps) do out[#out + 1] = "    " .. render(step) .. "," end
  out[#out + 1] = "  },"
  out[#out + 1] = "}"
  return concat(out, "\n") .. "\n"
end

-- What a scenario file may use: no os, io, require, load or debug.
local SAFE = { "assert", "error", "ipairs", "next", "pairs", "pcall", "rawequal", "rawlen", "select",
  "setmetatable", "tonumber", "tostring", "type", "xpcall" }

local function sandbox()
  local env = {}
  for _, name in ipairs(SAFE) do env[name] = _G[name] end
  for _, lib in ipairs { "math", "string", "table", "utf8" } do
    env[lib] = {}
    for k, v in pairs(_G[lib]) do env[lib][k] = v end
  end
  env._G = env
  return env
end

--- Reads the scenario in the Lua file at path (a chunk returning the table), run
-- in a sandbox without os and io; checks it and returns it.
function scenario.load(path)
  local f, err = io.open(path, "rb")
  if not f then misuse("%s", err) end
  local source = f:read("a")
  f:close()
  local chunk, lerr = load(source, "@" .. path, "t", sandbox())
  if not chunk then misuse("%s", lerr) end
  local ok, s = backend.pcall(chunk)
  if not ok then misuse("%s", tostring(s)) end
  local vok, verr = backend.pcall(validate, s)
  if not vok then misuse("%s: %s", path, (tostring(verr):gsub("^backend: scenario: ", ""))) end
  return s
end

-- ---------------------------------------------------------------------------
-- Random scenarios checked against the model

-- xorshift64: deterministic, independent of math.random
local function new_rng(seed)
  local s = (seed * 0x9E3779B97F4A7C15 + 0x2545F4914F6CDD1D) | 1
  local r = {}
  function r.next()
    s = s ~ (s << 13)
    s = s ~ (s >> 7)
    s = s ~ (s << 17)
    return s
  end
  function r.int(n) return (r.next() >> 1) % n + 1 end
  function r.chance(p) return r.int(1000000) <= p * 1000000 end
  function r.pick(t) return t[r.int(#t)] end
  -- weighted choice over { {name, weight}, ... }
  function r.choose(list)
    local total = 0
    for _, e in ipairs(list) do total = total + e[2] end
    local x = (r.next() >> 11) / (1 << 53) * total
    for _, e in ipairs(list) do
      x = x - e[2]
      if x < 0 then return e[1] end
    end
    return list[#list][1]
  end
  return r
end

local ALPHABET = { "a", "b", "\0", "\255" }
local BUCKETS = { "key", "lease", "b\0x", "\255" }
local LIMITS = { "nil", 0, -1, 1, 1, 2, 3, 5, 100 }
local HUGE_END = "\255\255\255\255\255"
local MAX_KEY = backend.max_key_size

--- The configs random scenarios take by seed: seed n runs on configs[(n - 1) % 4 + 1].
scenario.configs = {
  { name = "quiet (no background commits)", config = { batch_interval = 3600, batch_limit = 1000000000 } },
  { name = "busy (interval 1 ms, limit 3)", config = { batch_interval = 0.001, batch_limit = 3 } },
  { name = "small map (mmap_size 64 KiB, interval 5 ms, limit 100)",
    config = { batch_interval = 0.005, batch_limit = 100, mmap_size = 65536 } },
  { name = "no_fsync (interval 20 ms, limit 7)", config = { no_fsync = true, batch_interval = 0.02, batch_limit = 7 } },
}

-- 1 to 3 bytes from ALPHABET; rarely a key of exactly the maximum length, and
-- (only when `for_write`) rarely one byte too long, which both sides must refuse
local function rand_key(r, for_write)
  local t = {}
  for i = 1, r.int(3) do t[i] = r.pick(ALPHABET) end
  local k = concat(t)
  local c = r.int(300)
  if c == 1 then
    return (k .. string.rep(r.pick(ALPHABET), MAX_KEY)):sub(1, MAX_KEY)
  elseif c == 2 and for_write then
    return (k .. string.rep(r.pick(ALPHABET), MAX_KEY + 1)):sub(1, MAX_KEY + 1)
  end
  return k
end

local function rand_value(r, i)
  local c = r.int(20)
  if c == 1 then return "" end
  if c == 2 then return string.rep(string.char(r.int(256) - 1), 3000 + r.int(3000)) end
  if c == 3 then return "\0v\255" .. i end
  return "v" .. i
end

-- bucket, key, end key, limit
local function rand_range(r)
  local key, stop
  local mode = r.int(10)
  if mode <= 3 then
    key = rand_key(r)
  elseif mode == 4 then
    key, stop = "", rand_key(r)
  elseif mode == 5 then
    key, stop = rand_key(r), HUGE_END
  elseif mode == 6 then
    key, stop = "", HUGE_END
  else
    key, stop = rand_key(r), rand_key(r)
  end
  local limit = r.pick(LIMITS)
  if limit == "nil" then limit = nil end
  return r.pick(BUCKETS), key, stop, limit
end

local function all_pairs(view, b)
  return collect(function(add) view:for_each(b, add) end)
end

--- A scenario of o.ops (500) random operations chosen by o.seed on o.config (by
-- default scenario.configs by seed), each read expecting what the model says: every
-- reader (BatchTx, ReadTx, held ConcurrentReadTxs, snapshots, read-only reopens,
-- LMDB after commits) compared along the way; pending() and commits() too when the
-- config rules background commits out (batch_interval >= 3600 and batch_limit > ops).
function scenario.random(o)
  local seed = math.tointeger(o and o.seed) or misuse("random needs an integer seed")
  local nops = o.ops or 500
  local named = o.config == nil and scenario.configs[(seed - 1) % #scenario.configs + 1]
  local config = named and named.config or o.config
  local quiet = (config.batch_interval or 0.1) >= 3600 and (config.batch_limit or 10000) > nops
  local r = new_rng(seed)
  local m = model.new { batch_limit = config.batch_limit, max_key_size = MAX_KEY }
  local steps = {}
  local locked = false
  local held, snaps = {}, {}   -- { name, view }: ConcurrentReadTxs and snapshots kept
  local rtx                    -- the model's view as of { "rlock" }, while held
  local crc = backend.crc32c

  local function emit(step) steps[#steps + 1] = step end

  -- a read step with `where` (via or view) added
  local function read(step, where)
    for k, v in pairs(where) do step[k] = v end
    emit(step)
  end

  local function cmp_range(where, view, b, k, e, l)
    read({ "range", b, k, e, l, expect = zip(view:range(b, k, e, l)) }, where)
  end

  local function cmp_get(where, view, b, k)
    read({ "get", b, k, expect = view:get(b, k) or false }, where)
  end

  -- every bucket through for_each, and now and then through pairs
  local function cmp_full(where, view)
    for _, b in ipairs(BUCKETS) do
      local want = all_pairs(view, b)
      read({ "for_each", b, expect = want }, where)
      if r.chance(0.3) then read({ "pairs", b, expect = want }, where) end
    end
  end

  local function cmp_committed(n)
    local view = m:committed()
    for _ = 1, n do cmp_get({ via = "committed" }, view, r.pick(BUCKETS), rand_key(r)) end
    local b = r.pick(BUCKETS)
    view:for_each(b, function(k, v) emit { "get", b, k, via = "committed", expect = v } end)
  end

  local function check_pending()
    if quiet then emit { "pending", expect = m:pending() } end
  end

  local function check_commits()
    if quiet then emit { "commits", expect = m:commits() } end
  end

  -- a write on both; the model's error is the one to expect
  local function write(name, ...)
    local ok, err = backend.pcall(m[name], m, ...)
    emit(ok and { name, ... } or { "error", { name, ... }, expect = err })
  end

  -- every held view must now raise `needle`; then they are closed
  local function drop_views(needle)
    for _, h in ipairs(held) do
      emit { "error", { "get", "key", "a", view = h.name }, expect = needle }
      emit { "close_view", h.name }
    end
    for _, s in ipairs(snaps) do emit { "error", { "open_snapshot", s.name }, expect = needle } end
    held, snaps = {}, {}
  end

  local function release_rtx()
    if rtx then
      emit { "runlock" }
      rtx = nil
    end
  end

  local function snapshot_round_trip(s)
    emit { "open_snapshot", s.name, write = ({ "path", "file", "function" })[r.int(3)] }
    cmp_full({ view = s.name }, s.view)
    emit { "hash", view = s.name, expect = s.view:hash(nil, crc) }
    emit { "close_view", s.name }
  end

  local function reopen(readonly_peek)
    release_rtx()
    emit { "reopen", readonly = readonly_peek or nil }
    drop_views("is closed")
    m:reopen()
    if readonly_peek then
      cmp_full({ via = "concurrent" }, m:batch_view())
      cmp_range({ via = "read" }, m:batch_view(), rand_range(r))
      emit { "error", { "put", "key", "a", "x" }, expect = "read-only" }
      emit { "reopen" }
    end
    cmp_full({ via = "concurrent" }, m:batch_view())
    check_pending()
  end

  local op = {}
  function op.put(i, name)
    local b, k, v = r.pick(BUCKETS), rand_key(r, true), rand_value(r, i)
    write(name or "put", b, k, v)
    if #k <= MAX_KEY and r.chance(0.2) then cmp_get({}, m:batch_view(), b, k) end
    check_pending()
  end
  function op.seq_put(i) op.put(i, "seq_put") end
  function op.delete()
    local b, k = r.pick(BUCKETS), rand_key(r, true)
    if r.chance(0.5) then   -- prefer an existing key
      local ks = m:range(b, "", HUGE_END)
      if #ks > 0 then k = r.pick(ks) end
    end
    write("delete", b, k)
    if #k <= MAX_KEY and r.chance(0.3) then cmp_get({}, m:batch_view(), b, k) end
    check_pending()
  end
  function op.create_bucket(_, name)
    write(name or "create_bucket", r.pick(BUCKETS))
    check_pending()
  end
  function op.delete_bucket(i) op.create_bucket(i, "delete_bucket") end
  function op.batch_range() cmp_range({}, m:batch_view(), rand_range(r)) end
  function op.batch_get() cmp_get({}, m:batch_view(), r.pick(BUCKETS), rand_key(r)) end
  function op.batch_full() cmp_full({}, m:batch_view()) end
  function op.read_tx_range()
    local view = rtx or m:published()
    cmp_range({ via = "read" }, view, rand_range(r))
    if r.chance(0.3) then cmp_get({ via = "read" }, view, r.pick(BUCKETS), rand_key(r)) end
    if r.chance(0.05) then cmp_full({ via = "read" }, view) end
  end
  function op.hold_rtx()
    if rtx then
      cmp_full({ via = "read" }, rtx)
      release_rtx()
    else
      emit { "rlock" }
      rtx = m:published()
    end
  end
  function op.ctx_range()
    local view = m:concurrent_read_tx()
    cmp_range({ via = "concurrent" }, view, rand_range(r))
    if r.chance(0.05) then cmp_full({ via = "concurrent" }, view) end
  end
  function op.hold_ctx(i)
    if #held >= 6 then
      local h = table.remove(held, 1)
      cmp_full({ view = h.name }, h.view)
      emit { "close_view", h.name }
    end
    held[#held + 1] = { name = "v" .. i, view = m:concurrent_read_tx() }
    emit { "view", "v" .. i }
  end
  function op.held_ctx_range()
    if #held > 0 then
      local h = r.pick(held)
      cmp_range({ view = h.name }, h.view, rand_range(r))
    end
  end
  function op.close_ctx()
    if #held > 0 then
      local h = table.remove(held, r.int(#held))
      cmp_full({ view = h.name }, h.view)
      emit { "close_view", h.name, runlock = r.chance(0.5) or nil }
      emit { "error", { "get", "key", "a", view = h.name }, expect = "is closed" }
    end
  end
  function op.commit()
    emit { "commit" }
    m:commit()
    check_pending()
    check_commits()
    cmp_committed(5)
  end
  function op.commit_in_section()   -- a locked section is never committed
    local ok, err = pcall(m.commit, m)
    assert(not ok, "the model committed a locked section")
    local call = ({ "commit", "force_commit", "hash", "defrag" })[r.int(4)]
    emit { "error", { call }, expect = err:match("unlock or rollback first") }
  end
  function op.unlock()
    emit { "unlock" }
    m:unlock()
    locked = false
    check_pending()
  end
  function op.rollback()
    emit { "rollback" }
    m:rollback()
    locked = false
    check_pending()
    if r.chance(0.5) then cmp_full({}, m:batch_view()) end
  end
  function op.lock()
    emit { "lock" }
    m:lock()
    locked = true
  end
  function op.force_commit()
    emit { "force_commit" }
    m:force_commit()
    emit { "pending", expect = 0 }
    check_commits()
    cmp_committed(10)
  end
  function op.await_commit()
    emit { "await_commit" }
    m:force_commit()
    cmp_committed(10)
  end
  function op.hash()
    local ignores
    if r.chance(0.3) then
      ignores = {}
      for _ = 1, 3 do
        local b = r.pick(BUCKETS)
        ignores[b] = ignores[b] or {}
        ignores[b][rand_key(r)] = true
      end
    end
    emit { "hash", ignores = ignores, expect = m:hash(ignores, crc) }
    check_pending()
  end
  function op.snapshot(i)
    if #snaps >= 2 then snapshot_round_trip(table.remove(snaps, 1)) end
    snaps[#snaps + 1] = { name = "s" .. i, view = m:snapshot() }
    emit { "snapshot", "s" .. i }
    check_pending()
  end
  function op.write_snapshot()
    if #snaps > 0 then snapshot_round_trip(table.remove(snaps, r.int(#snaps))) end
  end
  function op.defrag()
    emit { "defrag" }
    m:defrag()   -- views and snapshots go on reading what they saw
    cmp_full({ via = "concurrent" }, m:batch_view())
    check_pending()
    cmp_committed(10)
  end
  function op.reopen() reopen(false) end
  function op.readonly_peek() reopen(true) end
  function op.check()   -- backend.check's views, committed, hash, lmdb, snapshot
    if not rtx then   -- its ReadTx would be the held one, an older state
      emit { "check" }
      m:force_commit()
    end
  end

  local LOCKED_OPS = {
    { "put", 30 }, { "seq_put", 5 }, { "delete", 12 }, { "create_bucket", 4 }, { "delete_bucket", 1.2 },
    { "batch_range", 8 }, { "batch_get", 4 }, { "batch_full", 0.5 },
    { "read_tx_range", 2 }, { "ctx_range", 2 }, { "hold_ctx", 1.5 }, { "held_ctx_range", 2 },
    { "hold_rtx", 0.5 }, { "commit_in_section", 0.5 }, { "unlock", 12 }, { "rollback", 2 },
  }
  local UNLOCKED_OPS = {
    { "lock", 60 }, { "read_tx_range", 8 }, { "ctx_range", 5 }, { "hold_ctx", 4 }, { "held_ctx_range", 6 },
    { "hold_rtx", 1.5 }, { "close_ctx", 3 }, { "commit", 1 }, { "force_commit", 4 }, { "hash", 2 },
    { "snapshot", 1.2 }, { "write_snapshot", 1.2 },
    { "defrag", 0.7 }, { "reopen", 0.7 }, { "readonly_peek", 0.4 }, { "await_commit", quiet and 0 or 1.5 },
    { "check", 0.3 },
  }

  for i = 1, nops do op[r.choose(locked and LOCKED_OPS or UNLOCKED_OPS)](i) end

  -- the end: everything agrees, through every reader, and after a reopen
  if locked then op.unlock() end
  release_rtx()
  for _, h in ipairs(held) do
    cmp_full({ view = h.name }, h.view)
    emit { "close_view", h.name }
  end
  held = {}
  for _, s in ipairs(snaps) do snapshot_round_trip(s) end
  snaps = {}
  cmp_full({}, m:batch_view())
  cmp_full({ via = "read" }, m:published())
  cmp_full({ via = "concurrent" }, m:batch_view())
  emit { "hash", expect = m:hash(nil, crc) }
  reopen(false)
  emit { "check" }
  return {
    name = fmt("random seed %d, %s, %d ops", seed, named and named.name or "config " .. render(config, true), nops),
    config = config,
    steps = steps,
  }
end

return scenario
