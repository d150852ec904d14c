-- Every function and method of the API called with every kind of bad input:
-- wrong types and missing arguments, empty and oversized strings, odd numbers,
-- bad config fields, closed objects and calls out of order. Each call must
-- raise a clear "backend: ..." error (or succeed where the input is valid
-- after all), leave the data as they were, and leave the backend working.
-- The cases are generated from the tables below; the count is printed.
local H = require "spec.helper"
local backend = require "backend"

local HOUR = 3600
local MAX = backend.max_key_size
local LONG = string.rep("k", MAX + 1)
local OK = setmetatable({}, { __tostring = function() return "success" end })
local NONE = setmetatable({}, { __tostring = function() return "no value" end })
local NOP = function() end
local checked = 0

local function exact(msg) return { exact = "backend: " .. msg } end
local function raises_value(v) return { value = v } end
local function too_long(what, n)
  return exact(string.format("%s is too long (%d bytes; the limit is %d bytes)", what, n, MAX))
end

-- The outcome of pcall against `want`: OK, exact(...), raises_value(v), or a
-- plain substring of a "backend: ..." message. A failure message, or nil.
local function check_outcome(want, ok, err)
  if want == OK then
    return not ok and "expected success, got " .. tostring(err) or nil
  end
  if ok then return "expected an error, got none" end
  if type(want) == "table" and want.value ~= nil then
    return err ~= want.value and "expected the callback's error to propagate, got " .. tostring(err) or nil
  end
  if type(err) ~= "string" then return "error is not a string: " .. tostring(err) end
  if err:sub(1, 9) ~= "backend: " then return "message does not start with 'backend: ': " .. err end
  if type(want) == "table" then
    return err ~= want.exact and string.format("expected %q, got %q", want.exact, err) or nil
  end
  return not err:find(want, 1, true) and string.format("expected a message with %q, got %q", want, err) or nil
end

-- The data as every reader sees them, committed and not: the hash (which
-- commits first, so a write made by the bad call would show) and a dump;
-- inside a section, which nothing commits, what the BatchTx reads instead.
local function state(be)
  local dump = be:view(function(v) return H.show(H.all(v, "b")) end)
  local tx = be:batch_tx()
  if pcall(tx.buckets, tx) then return "section " .. H.show(H.all(tx, "b")) .. " " .. dump end
  return be:hash() .. " " .. dump
end

-- A put and a get through the backend (returns true when they work).
local function works(env)
  env.n = (env.n or 0) + 1
  local v = "probe" .. env.n
  env.be:update(function(tx) tx:put("b", "probe", v) end)
  return env.be:view(function(r) return r:get("b", "probe") end) == v
end

local function new_env(config)
  local cfg = { path = H.tmppath(), batch_interval = HOUR, no_fsync = true }
  for k, v in pairs(config or {}) do cfg[k] = v end
  local be = backend.open(cfg)
  be:update(function(tx) tx:create_bucket("b"); tx:put("b", "k1", "v1"); tx:put("b", "k2", "v2") end)
  be:force_commit()
  be:update(function(tx) tx:put("b", "k3", "buffered") end)
  return { be = be, path = cfg.path }
end

-- Runs one case: case.make(env) gives the receiver (and a cleanup); the
-- state (case.state, or state()) is taken before and after case.call(receiver);
-- then the outcome, the state (unchanged after an error) and that the backend
-- works (case.works, or a put+get) are checked. Returns a failure message or nil.
local function run(env, case)
  local recv, cleanup = case.make(env)
  local before = case.state and case.state(env) or state(env.be)
  local ok, err = pcall(case.call, recv)
  local after = case.state and case.state(env) or state(env.be)
  local cok, cerr = pcall(cleanup or NOP)
  checked = checked + 1
  local problem = check_outcome(case.want, ok, err)
    or not cok and "cleanup failed: " .. tostring(cerr)
    or case.want ~= OK and before ~= after and "the data changed: " .. before .. " -> " .. after
    or not (case.works or works)(env) and "the backend does not work afterwards"
  return problem and case.label .. ": " .. problem
end

local function run_all(env, cases)
  local failures = {}
  for _, case in ipairs(cases) do
    local problem = run(env, case)
    if problem then failures[#failures + 1] = problem end
  end
  assert(#failures == 0, #failures .. " of " .. #cases .. " cases failed:\n" .. table.concat(failures, "\n", 1,
    math.min(#failures, 30)))
  assert(#cases > 0, "no cases")
end

-- Receivers: a fresh object of each type, ready to use, and its cleanup.
local MAKE = {
  Backend = function(env) return env.be end,
  BatchTx = function(env)
    local tx = env.be:batch_tx():lock()
    return tx, function() tx:unlock() end
  end,
  ReadTx = function(env)
    local r = H.rlocked(env.be)
    return r, function() r:runlock() end
  end,
  ConcurrentReadTx = function(env)
    local c = env.be:concurrent_read_tx()
    return c, function() c:close() end
  end,
  Snapshot = function(env)
    local s = env.be:snapshot()
    return s, function() s:close() end
  end,
  BoltFile = function()
    local f = backend.open_bolt(H.fixture("tiny.db"))
    return f, function() f:close() end
  end,
  Rows = function(env)   -- k1, k2 and k3, of a view closed since
    return env.be:view(function(v) return v:rows("b", "k", "l") end)
  end,
}
local TYPES = { "Backend", "BatchTx", "ReadTx", "ConcurrentReadTx", "Snapshot", "BoltFile", "Rows" }

-- The function `name` of type `tname`: a method, or a metamethod.
local function method_of(env, tname, name)
  local recv, cleanup = MAKE[tname](env)
  local mt = getmetatable(recv)
  local f = mt.__index[name] or mt[name]
  if cleanup then cleanup() end
  return assert(f, tname .. "." .. name)
end

-- `o:name(...)` (Lua numbers a method's arguments from 1, without self).
local method_callers = {}
local function method_caller(name)
  method_callers[name] = method_callers[name] or assert(load(
    "local o = ...; local r = table.pack(o:" .. name .. "(select(2, ...))); return table.unpack(r, 1, r.n)"))
  return method_callers[name]
end

-- o:name(...), or for a metamethod getmetatable(o).name(o, ...).
local function invoke(o, name, ...)
  if name:find("^__") then return getmetatable(o)[name](o, ...) end
  return method_caller(name)(o, ...)
end

-- Arguments: the type the message names, a good value, the values with
-- their own outcome, and whether nil is fine.
local function arg(want, good, values, optional)
  return { want = want, good = good, values = values or {}, optional = optional }
end
local function str(good, values) return arg("string", good, values) end
local function optstr(good, values) return arg("string", good, values, true) end

local BUCKET_W = str("b", {   -- a bucket written to
  { "", "bucket name must not be empty" }, { LONG, too_long("bucket name", MAX + 1) },
  { string.rep("\0", MAX // 2 + 1), "stored as" }, { "nope", exact("bucket 'nope' does not exist") },
})
local BUCKET_R = str("b", {   -- a bucket read: one that cannot exist reads as empty
  { "", "bucket name must not be empty" }, { LONG, OK }, { "nope", OK },
})
local KEY_W = str("k1", {
  { "", "key must not be empty" }, { LONG, too_long("key", MAX + 1) },
  { string.rep("m", MAX), OK }, { "\0", OK },
})
local KEY_R = str("k1", { { "", "key must not be empty" }, { LONG, too_long("key", MAX + 1) }, { "\0\255", OK } })
local VALUE = str("v", { { "", OK }, { string.rep("v", 1 << 20), OK }, { "\0", OK } })
local BOUND = optstr("k9", { { "", OK }, { LONG, OK }, { nil, OK } })   -- range/pairs bounds
local LIMIT = arg("integer", nil, {
  { 0, OK }, { -1, OK }, { 1, OK }, { 1.0, OK }, { 2^53, OK }, { math.maxinteger, OK }, { math.mininteger, OK },
}, true)
local ROW = arg("integer", 1, {   -- of the three rows MAKE.Rows gives
  { 3, OK }, { 3.0, OK }, { 0, "row 0 out of range 1..3" }, { 4, "row 4 out of range 1..3" },
  { -1, "row -1 out of range 1..3" }, { math.mininteger, "out of range 1..3" },
  { math.maxinteger, "out of range 1..3" },
})
local E = setmetatable({}, { __tostring = function() return "the callback's error" end })
local RAISE = function() error(E) end
local FN = arg("function", NOP, { { RAISE, raises_value(E) } })

local READS = {   -- on every tx type
  range = { BUCKET_R, str("k1", { { "", OK }, { LONG, OK } }), BOUND, LIMIT },
  rows = { BUCKET_R, str("k1", { { "", OK }, { LONG, OK } }), BOUND, LIMIT },
  get = { BUCKET_R, KEY_R },
  pairs = { BUCKET_R, optstr("a", { { "", OK }, { LONG, OK } }), BOUND },
  for_each = { BUCKET_R, FN },
  buckets = {},
}

local function with_reads(t)
  for k, v in pairs(READS) do t[k] = v end
  return t
end

-- Every method of every type, with its arguments; no arguments: self only.
local API = {
  Backend = {
    batch_tx = {}, read_tx = {}, concurrent_read_tx = {}, snapshot = {}, size = {}, size_in_use = {},
    open_read_tx_n = {}, commits = {}, defrag = {}, force_commit = {}, close = {}, stats = {}, path = {},
    metrics = {}, bucket_stats = {},
    __gc = {}, __close = {}, __tostring = {},
    hash = { arg("table", nil, {
      { { b = 5 }, exact("hash ignores must map bucket names to tables") },
      { { [1] = {} }, exact("hash ignores must map bucket names to tables") },
      { { b = { [1] = true } }, exact("hash ignores: keys must be strings") },
      { { b = { k1 = 1 } }, exact("hash ignores: values must be booleans") },
      { { b = { k1 = "yes" } }, exact("hash ignores: values must be booleans") },
      { { b = { k1 = false } }, OK }, { { nope = { x = true } }, OK }, { {}, OK },
    }, true) },
    _committed_get = { str("b", { { "", OK }, { LONG, OK } }), KEY_R },
    update = { FN },
    view = { FN },
  },
  BatchTx = with_reads {
    lock = {}, unlock = {}, rollback = {}, commit = {}, commit_and_stop = {}, pending = {},
    __gc = {}, __close = {}, __tostring = {},
    create_bucket = { str("b", {
      { "", "bucket name must not be empty" }, { LONG, too_long("bucket name", MAX + 1) },
      { string.rep("\1", MAX // 2 + 1), "stored as" }, { "b", OK }, { string.rep("n", MAX), OK },
    }) },
    delete_bucket = { str("b", {
      { "", "bucket name must not be empty" }, { LONG, too_long("bucket name", MAX + 1) }, { "nope", OK },
    }) },
    put = { BUCKET_W, KEY_W, VALUE },
    seq_put = { BUCKET_W, KEY_W, VALUE },
    delete = { BUCKET_W, str("k1", {
      { "", "key must not be empty" }, { LONG, too_long("key", MAX + 1) }, { "missing", OK },
    }) },
  },
  ReadTx = with_reads { rlock = {}, runlock = {}, lock = {}, unlock = {}, __gc = {}, __tostring = {} },
  ConcurrentReadTx = with_reads {
    rlock = {}, runlock = {}, lock = {}, unlock = {}, close = {},
    __close = {}, __tostring = {},   -- no __gc: its group closes it (lifecycle_spec)
  },
  Rows = {
    key = { ROW }, value = { ROW }, keys = {}, values = {}, __len = {}, __tostring = {},
  },
  BoltFile = {
    info = {}, close = {}, __gc = {}, __close = {}, __tostring = {},
    walk = { arg("function", nil, { { RAISE, raises_value(E) } }, true),
             arg("function", nil, { { RAISE, raises_value(E) } }, true) },
  },
  Snapshot = {
    size = {}, close = {}, __gc = {}, __close = {}, __tostring = {},
    write_to = {
      arg("path, file or function", NOP, {
        { "", exact("bad argument #2 to 'write_to' (path must not be empty)") },
        { "x\0y", exact("bad argument #2 to 'write_to' (path must not contain zero bytes)") },
        { "/nonexistent/dir/snap", "/nonexistent/dir/snap: No such file or directory" },
        { "/", "/ already exists (write_to does not overwrite files" },
      }),
      arg("function", nil, { { RAISE, raises_value(E) } }, true),
    },
  },
}

-- Values of every Lua type and some odd numbers; `env.other` is an object
-- of the module of another type than most receivers.
local function odd_values(env)
  return {
    { nil, "nil" }, { NONE, "nil" }, { true, "boolean" }, { false, "boolean" }, { 0, "number" },
    { -1.5, "number" }, { 2^53, "number" }, { 2^63, "number" }, { math.huge, "number" }, { -math.huge, "number" },
    { 0 / 0, "number" }, { "s", "string" }, { "", "string" }, { {}, "table" }, { print, "function" },
    { io.stdout, "userdata" }, { env.other, "userdata" }, { coroutine.create(NOP), "thread" },
  }
end

-- Is `v` of the wrong type for an argument that takes `want`?
local function is_wrong(want, v, optional)
  if v == nil or v == NONE then return not optional end
  if want == "integer" then return not (type(v) == "number" and math.tointeger(v)) end
  if want == "path, file or function" then return not (type(v) == "string" or type(v) == "function" or io.type(v)) end
  return type(v) ~= want
end

local function pack_args(args, i, v)
  local a = {}
  for j, d in ipairs(args) do a[j] = d.good end
  if v == NONE then return a, i - 1 end   -- the argument is missing, and all after it
  a[i] = v
  return a, #args
end

-- Cases: every argument of every method, each wrong value, called as
-- f(self, ...) (self is #1) and as self:m(...) (self not counted).
local function argument_cases(env, tname)
  local cases = {}
  local names = {}
  for name in pairs(API[tname]) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local args, f = API[tname][name], method_of(env, tname, name)
    for i, d in ipairs(args) do
      local function add(label, v, want, style)
        local a, n = pack_args(args, i, v)
        local call = style == "method" and function(o) return method_caller(name)(o, table.unpack(a, 1, n)) end
          or function(o) return f(o, table.unpack(a, 1, n)) end
        cases[#cases + 1] = { label = string.format("%s.%s arg %d = %s (%s)", tname, name, i, label, style),
          make = MAKE[tname], call = call, want = want }
      end
      for _, tv in ipairs(odd_values(env)) do
        local v, got = tv[1], tv[2]
        if is_wrong(d.want, v, d.optional) then
          for _, style in ipairs { "function", "method" } do
            local pos = style == "method" and i or i + 1
            add(string.format("%q", tostring(v)), v,
              exact(string.format("bad argument #%d to '%s' (%s expected, got %s)", pos, name, d.want, got)), style)
          end
        end
      end
      for _, vw in ipairs(d.values) do
        local v = vw[1]
        add(type(v) == "string" and string.format("%q", v:sub(1, 20)) or tostring(v), v, vw[2], "function")
      end
    end
  end
  return cases
end

-- Cases: every method of `tname` called with a self of every wrong kind,
-- and on a table posing as one (self:m() reports "bad self").
local function self_cases(env, tname)
  local cases = {}
  for name in pairs(API[tname]) do
    local f = method_of(env, tname, name)
    local wrong = {}
    for _, tv in ipairs(odd_values(env)) do
      if tv[1] ~= env.other then wrong[#wrong + 1] = tv end
    end
    for _, other in ipairs(TYPES) do
      if other ~= tname then wrong[#wrong + 1] = { other, "userdata" } end
    end
    for _, tv in ipairs(wrong) do
      local v, got = tv[1], tv[2]
      cases[#cases + 1] = {
        label = string.format("%s.%s self = %s", tname, name, tostring(v)),
        make = function(e)
          if not MAKE[v] then return v end
          return MAKE[v](e)   -- an object of another type
        end,
        call = function(o)
          if o == NONE then return f() end
          return f(o, "b", "k1")
        end,
        want = exact(string.format("bad argument #1 to '%s' (backend.%s expected, got %s)", name, tname, got)),
      }
    end
    if not name:find("^__") then
      cases[#cases + 1] = {
        label = string.format("%s:%s on a table posing as one", tname, name),
        make = function(e)
          local recv, cleanup = MAKE[tname](e)
          return setmetatable({}, { __index = getmetatable(recv).__index }), cleanup
        end,
        call = function(o) return method_caller(name)(o, "b", "k1") end,
        want = exact(string.format("calling '%s' on bad self (backend.%s expected, got table)", name, tname)),
      }
    end
  end
  return cases
end

describe("bad input", function()
  local env
  before_each(function()
    env = new_env()
    env.other = env.be:read_tx()   -- a module object, as an argument of the wrong type
  end)
  after_each(function()
    if env then pcall(env.be.close, env.be) end
    env = nil
    H.cleanup()
  end)
  teardown(function()
    print(string.format("\nbadinput_spec: %d calls checked", checked))
  end)

  it("the tables cover every function and method of the API", function()
    local module = {}
    for k, v in pairs(backend) do
      if type(v) == "function" then module[#module + 1] = k end
    end
    table.sort(module)
    assert.are.same({ "catch_interrupt", "crc32c", "default_config", "export_bolt", "import_bolt", "interrupted",
                      "mkdtemp", "monotonic", "open", "open_bolt", "open_tmp", "pcall" }, module)
    for _, tname in ipairs(TYPES) do
      local recv, cleanup = MAKE[tname](env)
      local mt = getmetatable(recv)
      for name, f in pairs(mt.__index) do
        if type(f) == "function" then assert.is_truthy(API[tname][name], tname .. "." .. name .. " is not covered") end
      end
      for name, f in pairs(mt) do
        if type(f) == "function" then assert.is_truthy(API[tname][name], tname .. "." .. name .. " is not covered") end
      end
      for name in pairs(API[tname]) do assert.is_function(mt.__index[name] or mt[name], tname .. "." .. name) end
      if cleanup then cleanup() end
    end
  end)

  for _, tname in ipairs(TYPES) do
    it(tname .. ": every argument of every method, every wrong type and odd value", function()
      run_all(env, argument_cases(env, tname))
    end)

    it(tname .. ": every method with a bad self", function()
      run_all(env, self_cases(env, tname))
    end)
  end

  it("ranges and gets of a single key: an empty or oversized key", function()
    local cases = {}
    for _, tname in ipairs { "BatchTx", "ReadTx", "ConcurrentReadTx" } do
      for _, kw in ipairs { { "", "key must not be empty" }, { LONG, too_long("key", MAX + 1) } } do
        cases[#cases + 1] = { label = tname .. ".range(b, " .. #kw[1] .. " bytes, nil)", make = MAKE[tname],
          call = function(o) return o:range("b", kw[1], nil, 5) end, want = kw[2] }
      end
    end
    run_all(env, cases)
  end)

  it("snap:write_to: a file that is closed or not writable, a progress that raises", function()
    local stat = assert(io.open("/proc/self/stat"))
    local fds = "/proc/" .. stat:read("n") .. "/fd"
    stat:close()
    local function open_fds()
      local p = assert(io.popen("ls " .. fds .. " | wc -l"))
      local n = p:read("n")
      p:close()
      return n
    end
    local dir = H.tmpdir()
    local ro = dir .. "/ro"
    H.write_file(ro, "")
    local path = dir .. "/new"
    run_all(env, {
      { label = "a closed file", make = MAKE.Snapshot, want = exact("attempt to use a closed file"),
        call = function(s) local f = io.tmpfile(); f:close(); return s:write_to(f) end },
      { label = "a file opened for reading", make = MAKE.Snapshot, want = "snapshot write",
        call = function(s) local f = assert(io.open(ro, "rb")); local ok, e = pcall(s.write_to, s, f); f:close()
          if not ok then error(e, 0) end end },
      { label = "a progress that raises, to a path", make = MAKE.Snapshot, want = raises_value(E),
        call = function(s) return s:write_to(path, RAISE) end },
      { label = "a progress that raises, to a function", make = MAKE.Snapshot, want = raises_value(E),
        call = function(s) return s:write_to(NOP, RAISE) end },
    })
    assert.is_false(H.exists(path), "a failed write_to(path) leaves no file")
    local before = open_fds()
    local cases = {}
    for i = 1, 20 do
      cases[i] = { label = "a progress that raises, to a path, again", make = MAKE.Snapshot, want = raises_value(E),
        call = function(s) return s:write_to(path, RAISE) end }
    end
    run_all(env, cases)
    assert.is_true(open_fds() < before + 10, "a failed write_to(path) closes its file")
    assert.are.equal("", H.read_file(ro))
  end)

  it("config: every field with every wrong type and odd value", function()
    local function open_tmp_call(cfg)
      return function()
        local be = backend.open_tmp(cfg)
        local ok, err = pcall(function()
          be:update(function(tx) tx:create_bucket("b") end)
          assert(works { be = be }, "put+get")
        end)
        be:close()
        assert(ok, err)
      end
    end
    local fields = {
      batch_interval = { want = "a number", values = {
        { 0, false }, { -1, false }, { 0 / 0, false }, { math.huge, false }, { -math.huge, false }, { 1e12, false },
        { 1e-9, OK }, { 0.5, OK }, { 3600, OK } }, bad = "config.batch_interval must be a positive number of seconds" },
      batch_limit = { want = "an integer", values = {
        { 0, "config.batch_limit must be at least 1" }, { -1, "config.batch_limit must be a non-negative integer" },
        { math.mininteger, "config.batch_limit must be a non-negative integer" },
        { 1, OK }, { 1e4, OK }, { math.maxinteger, OK } } },
      mmap_size = { want = "an integer", values = {
        { 0, false }, { 4095, false }, { 2^46 + 4096, false }, { math.maxinteger, false },
        { -1, "config.mmap_size must be a non-negative integer" }, { 4096, OK }, { 2^30, OK } },
        bad = "config.mmap_size must be between 4096 and 2^46 bytes" },
      max_buffered_bytes = { want = "an integer", values = {
        { 0, false }, { 2^20 - 1, false }, { 2^46 + 1, false }, { math.maxinteger, false },
        { -1, "config.max_buffered_bytes must be a non-negative integer" }, { 2^20, OK }, { 2^28, OK } },
        bad = "config.max_buffered_bytes must be between 2^20 and 2^46 bytes" },
      max_readers = { want = "an integer", values = {
        { 0, false }, { 100001, false }, { 2^53, false }, { math.maxinteger, false },
        { -1, "config.max_readers must be a non-negative integer" }, { 1, OK }, { 1000, OK } },
        bad = "config.max_readers must be between 1 and 100000" },
      no_fsync = { want = "a boolean", values = { { true, OK }, { false, OK } } },
      readonly = { want = "a boolean", values = { { false, OK }, { true, "No such file or directory" } } },
      keep = { want = "a boolean", values = { { false, OK } } },
      logger = { want = "logger", values = { { "stdout", false }, { "stderr", OK }, { NOP, OK } },
        bad = 'config.logger must be a function or "stderr"' },
    }
    local cases = {}
    for field, spec in pairs(fields) do
      local want_type = spec.want:match("%a+$")
      for _, tv in ipairs(odd_values(env)) do
        local v, got = tv[1], tv[2]
        local wrong = v ~= nil and v ~= NONE and (want_type == "logger" and type(v) ~= "function" and v ~= "stderr"
          or want_type == "integer" and not (type(v) == "number" and math.tointeger(v))
          or want_type ~= "integer" and want_type ~= "logger" and type(v) ~= want_type)
        if wrong then
          cases[#cases + 1] = { label = "open_tmp { " .. field .. " = " .. tostring(v) .. " }", make = NOP,
            call = open_tmp_call { [field] = v },
            want = spec.bad and want_type == "logger" and exact(spec.bad)
              or exact(string.format("config.%s must be %s, got %s", field, spec.want, got)) }
        end
      end
      for _, vw in ipairs(spec.values) do
        cases[#cases + 1] = { label = "open_tmp { " .. field .. " = " .. tostring(vw[1]) .. " }", make = NOP,
          call = open_tmp_call { [field] = vw[1] }, want = vw[2] == false and exact(spec.bad) or vw[2] }
      end
    end
    for _, bad in ipairs {
      { { foo = 1 }, exact("unknown config field 'foo'") }, { { [1] = "x" }, exact("unknown config field '1'") },
      { { [true] = 1 }, exact("unknown config field 'true'") },
      { { path = "x" }, exact("open_tmp chooses the path itself; do not set config.path") },
    } do
      cases[#cases + 1] = { label = "open_tmp " .. tostring(next(bad[1])), make = NOP, call = open_tmp_call(bad[1]),
        want = bad[2] }
    end
    -- backend.open: the path, and the fields on a path that must stay absent
    local dir = H.tmpdir()
    local path = dir .. "/db"
    local function open_call(cfg)
      return function() backend.open(cfg):close() end
    end
    local paths = {
      { { path = "" }, exact("config.path must be a non-empty string") },
      { { path = path .. "\0x" }, exact("config.path must not contain zero bytes") },
      { { path = dir }, dir .. ": Is a directory" },
      { { path = dir .. "/no/such/db" }, "No such file or directory" },
      { {}, exact("config.path is required") }, { "", exact("config.path must be a non-empty string") },
      { { path = path, keep = true }, exact("unknown config field 'keep'") },
      { { path = path, batch_limit = 0 }, exact("config.batch_limit must be at least 1") },
      { { path = path, max_readers = 0 }, exact("config.max_readers must be between 1 and 100000") },
      { { path = path, readonly = true }, "No such file or directory" },
    }
    for _, tv in ipairs(odd_values(env)) do
      local v, got = tv[1], tv[2]
      if v ~= nil and v ~= NONE and type(v) ~= "string" then
        paths[#paths + 1] = { { path = v }, exact("config.path must be a string, got " .. got) }
      end
    end
    for _, pw in ipairs(paths) do
      cases[#cases + 1] = { label = "open " .. tostring(pw[1].path or pw[1]), make = NOP, call = open_call(pw[1]),
        want = pw[2] }
    end
    run_all(env, cases)
    for _, p in ipairs { path, path .. "-lock", path .. "x" } do
      assert.is_false(H.exists(p), "no failed open created " .. p)
    end
  end)

  it("module functions: open, open_tmp, crc32c, default_config, monotonic, open_bolt, import_bolt, export_bolt, "
    .. "mkdtemp, interrupted, pcall, catch_interrupt", function()
    local cases = {}
    local function add(label, call, want)
      cases[#cases + 1] = { label = label, make = NOP, call = call, want = want }
    end
    local tiny, new = H.fixture("tiny.db"), H.tmppath("imported")
    for _, tv in ipairs(odd_values(env)) do
      local v, got = tv[1], tv[2]
      if type(v) ~= "string" then
        local n = v == NONE and 0 or 1
        add("open_bolt(" .. tostring(v) .. ")", function() return backend.open_bolt(table.unpack({ v }, 1, n)) end,
          exact("bad argument #1 to 'open_bolt' (string expected, got " .. got .. ")"))
      end
      if type(v) ~= "string" and v ~= NONE then
        add("import_bolt(" .. tostring(v) .. ", path)", function() return backend.import_bolt(v, new) end,
          exact("bad argument #1 to 'import_bolt' (string expected, got " .. got .. ")"))
      end
      if type(v) ~= "string" and type(v) ~= "table" then
        add("import_bolt(tiny, " .. tostring(v) .. ")", function() return backend.import_bolt(tiny, v) end,
          exact("bad argument #1 to 'open' (path or config table expected, got " .. got .. ")"))
      end
    end
    for _, f in ipairs { "open_bolt", "import_bolt" } do
      add(f .. "('')", function() return backend[f]("", new) end,
        exact("bad argument #1 to '" .. f .. "' (path must not be empty)"))
      add(f .. "('x\\0y')", function() return backend[f]("x\0y", new) end,
        exact("bad argument #1 to '" .. f .. "' (path must not contain zero bytes)"))
      add(f .. "(missing)", function() return backend[f]("/nonexistent/db", new) end, "No such file or directory")
      add(f .. "(a backend database)", function() return backend[f](env.path, new) end, "bbolt")
    end
    add("import_bolt(tiny, an existing file)", function() return backend.import_bolt(tiny, env.path) end,
      "exists")
    local exported = H.tmppath("exported")
    for _, tv in ipairs(odd_values(env)) do
      local v, got = tv[1], tv[2]
      local n = v == NONE and 0 or 1
      if type(v) ~= "string" then
        add("export_bolt(" .. tostring(v) .. ")", function() return backend.export_bolt(table.unpack({ v }, 1, n)) end,
          exact("bad argument #1 to 'export_bolt' (path or backend.Backend expected, got " .. got .. ")"))
        add("export_bolt(be, " .. tostring(v) .. ")",
          function() return backend.export_bolt(env.be, table.unpack({ v }, 1, n)) end,
          exact("bad argument #2 to 'export_bolt' (string expected, got " .. got .. ")"))
      end
      if v ~= nil and v ~= NONE and type(v) ~= "table" then
        add("export_bolt(be, path, " .. tostring(v) .. ")",
          function() return backend.export_bolt(env.be, exported, v) end,
          exact("bad argument #3 to 'export_bolt' (table expected, got " .. got .. ")"))
      end
      for opt, want in pairs { trailer = "boolean", progress = "function" } do
        if v ~= nil and v ~= NONE and type(v) ~= want then
          add("export_bolt(be, path, { " .. opt .. " = " .. tostring(v) .. " })",
            function() return backend.export_bolt(env.be, exported, { [opt] = v }) end,
            exact("opts." .. opt .. " must be a " .. want .. ", got " .. got))
        end
      end
    end
    add("export_bolt(be, path, { bad option })", function() return backend.export_bolt(env.be, exported, { x = 1 }) end,
      exact("unknown export_bolt option 'x'"))
    for _, src in ipairs { "be", "path" } do
      local function from() return src == "be" and env.be or env.path end
      add("export_bolt(" .. src .. ", '')", function() return backend.export_bolt(from(), "") end,
        exact("bad argument #2 to 'export_bolt' (path must not be empty)"))
      add("export_bolt(" .. src .. ", 'x\\0y')", function() return backend.export_bolt(from(), "x\0y") end,
        exact("bad argument #2 to 'export_bolt' (path must not contain zero bytes)"))
      add("export_bolt(" .. src .. ", an existing file)", function() return backend.export_bolt(from(), tiny) end,
        "exists: an export makes a new file")
    end
    add("export_bolt('', path)", function() return backend.export_bolt("", exported) end,
      exact("bad argument #1 to 'export_bolt' (path must not be empty)"))
    add("export_bolt(missing, path)", function() return backend.export_bolt("/nonexistent/db", exported) end,
      "No such file or directory")
    add("export_bolt(an etcd file, path)", function() return backend.export_bolt(tiny, exported) end, "bbolt")
    add("export_bolt(a path open in this process, path)", function() return backend.export_bolt(env.path, exported) end,
      "already open in this process")
    add("export_bolt(be, path)", function() assert(backend.export_bolt(env.be, H.tmppath()).keys >= 3) end, OK)
    add("import_bolt(tiny, { bad field })", function() return backend.import_bolt(tiny, { path = new, x = 1 }) end,
      exact("unknown config field 'x'"))
    add("import_bolt(tiny, { no path })", function() return backend.import_bolt(tiny, {}) end,
      exact("config.path is required"))
    for _, tv in ipairs(odd_values(env)) do
      local v, got = tv[1], tv[2]
      local n = v == NONE and 0 or 1
      if type(v) ~= "string" and type(v) ~= "table" then
        add("open(" .. tostring(v) .. ")", function() return backend.open(table.unpack({ v }, 1, n)) end,
          exact("bad argument #1 to 'open' (path or config table expected, got " .. got .. ")"))
      end
      if v ~= nil and v ~= NONE and type(v) ~= "table" then
        add("open_tmp(" .. tostring(v) .. ")", function() return backend.open_tmp(v) end,
          exact("bad argument #1 to 'open_tmp' (table expected, got " .. got .. ")"))
      end
      if type(v) ~= "string" then
        add("crc32c(" .. tostring(v) .. ")", function() return backend.crc32c(table.unpack({ v }, 1, n)) end,
          exact("bad argument #1 to 'crc32c' (string expected, got " .. got .. ")"))
      end
      if is_wrong("integer", v, true) then
        add("crc32c(s, " .. tostring(v) .. ")", function() return backend.crc32c("s", v) end,
          exact("bad argument #2 to 'crc32c' (integer expected, got " .. got .. ")"))
      end
      add("default_config(" .. tostring(v) .. ")", function() assert(backend.default_config(v).batch_limit) end, OK)
      add("monotonic(" .. tostring(v) .. ")", function() assert(backend.monotonic(v) > 0) end, OK)
      add("mkdtemp(" .. tostring(v) .. ")", function() assert(os.remove(backend.mkdtemp(v))) end, OK)
      add("interrupted(" .. tostring(v) .. ")", function() assert(backend.interrupted(v) == false) end, OK)
      add("catch_interrupt(" .. tostring(v) .. ")", function() backend.catch_interrupt(v) end, OK)
      if type(v) ~= "function" then   -- not callable: pcall's own result
        add("pcall(" .. tostring(v) .. ")", function() assert(not backend.pcall(v)) end, OK)
      end
    end
    add("pcall(error, msg)", function() assert(not backend.pcall(error, "backend: x")) end, OK)
    add("pcall(error, 'interrupted!')", function() return backend.pcall(error, "interrupted!", 0) end,
      raises_value("interrupted!"))
    for _, crc in ipairs { -1, 2^32, 2^53, math.maxinteger, math.mininteger } do
      add("crc32c(s, " .. tostring(crc) .. ")", function() return backend.crc32c("s", crc) end,
        exact("bad argument #2 to 'crc32c' (crc out of range)"))
    end
    add("crc32c(s, 1.0)", function() assert(backend.crc32c("s", 1.0) == backend.crc32c("s", 1)) end, OK)
    add("crc32c(s, 0xFFFFFFFF)", function() assert(math.type(backend.crc32c("s", 0xFFFFFFFF)) == "integer") end, OK)
    add("crc32c('')", function() assert(backend.crc32c("") == 0 and backend.crc32c("", 7) == 7) end, OK)
    add("open_tmp(nil)", function() local be = backend.open_tmp(nil); be:close() end, OK)
    run_all(env, cases)
  end)

  describe("calls out of order and on closed objects", function()
    local READ_CALLS = {
      { "range", "b", "k1" }, { "rows", "b", "k1" }, { "get", "b", "k1" }, { "pairs", "b" },
      { "for_each", "b", NOP },
    }
    local WRITE_CALLS = {
      { "put", "b", "k1", "X" }, { "seq_put", "b", "k9", "X" }, { "delete", "b", "k1" },
      { "create_bucket", "new" }, { "delete_bucket", "b" },
    }
    local COMMIT_CALLS = { { "commit" }, { "commit_and_stop" } }
    -- Cases calling each method of `calls` on `make`'s object.
    local function calls_on(make, calls, want, extra)
      local cases = {}
      for _, c in ipairs(calls) do
        cases[#cases + 1] = { label = c[1] .. (extra or ""), make = make, want = c.want or want,
          call = function(o) return invoke(o, c[1], table.unpack(c, 2)) end }
      end
      return cases
    end
    local function join(...)
      local out = {}
      for _, t in ipairs { ... } do table.move(t, 1, #t, #out + 1, out) end
      return out
    end

    it("BatchTx: unlocked, then locked twice", function()
      local unlocked = function(e) return e.be:batch_tx() end
      local locked = MAKE.BatchTx
      run_all(env, join(
        calls_on(unlocked, join(READ_CALLS, WRITE_CALLS, { { "unlock" }, { "rollback" } }),
          exact("batch tx is not locked")),
        calls_on(unlocked, { { "pending" }, { "__close" }, { "commit" } }, OK),
        calls_on(locked, { { "lock" } }, exact("batch tx is already locked by this thread")),
        calls_on(locked, COMMIT_CALLS, "unlock or rollback first"),
        { { label = "update inside a locked section", make = locked, want = "already locked",
          call = function() return env.be:update(NOP) end } }))
    end)

    it("ReadTx: not rlocked; rlock twice is fine", function()
      local plain = function(e) return e.be:read_tx() end
      run_all(env, join(
        calls_on(plain, join(READ_CALLS, { { "runlock" }, { "unlock" } }),
          exact("read tx is not locked (call rlock() first)")),
        { { label = "rlock twice", make = plain, want = OK,
          call = function(r) r:rlock(); r:rlock(); assert(r:get("b", "k1") == "v1"); r:runlock(); r:runlock() end } }))
    end)

    it("a closed ConcurrentReadTx, Snapshot and BoltFile", function()
      local function closed(tname)
        return function(e) local o = MAKE[tname](e); o:close(); return o end
      end
      run_all(env, join(
        calls_on(closed("ConcurrentReadTx"), join(READ_CALLS, { { "rlock" }, { "lock" }, { "unlock" } }),
          exact("concurrent read tx is closed")),
        calls_on(closed("ConcurrentReadTx"), { { "close" }, { "runlock" }, { "__close" } }, OK),
        calls_on(closed("Snapshot"), { { "size" }, { "write_to", NOP } }, exact("snapshot is closed")),
        calls_on(closed("Snapshot"), { { "close" }, { "__close" }, { "__gc" } }, OK),
        calls_on(closed("BoltFile"), { { "info" }, { "walk", NOP, NOP } }, exact("etcd file is closed")),
        calls_on(closed("BoltFile"), { { "close" }, { "__close" }, { "__gc" } }, OK)))
    end)

    it("read views and snapshots outlive a defrag", function()
      local function outlived(tname)
        return function(e)
          local o, cleanup = MAKE[tname](e)
          e.be:defrag()
          return o, cleanup
        end
      end
      run_all(env, join(
        calls_on(outlived("ConcurrentReadTx"), READ_CALLS, OK),
        calls_on(outlived("ReadTx"), READ_CALLS, OK),
        calls_on(outlived("Snapshot"), { { "size" }, { "write_to", NOP } }, OK)))
    end)

    it("a BatchTx stopped by commit_and_stop", function()
      local function stopped(e)
        local tx = e.be:batch_tx()
        if not e.stopped then
          tx:commit_and_stop()
          e.stopped = true
        end
        return tx
      end
      local cases = join(
        calls_on(stopped, join(WRITE_CALLS, COMMIT_CALLS, { { "range", "b", "k1" }, { "rows", "b", "k1" },
          { "get", "b", "k1" }, { "pairs", "b" }, { "lock" } }),
          exact("batch tx is stopped (commit_and_stop)"), " (stopped)"),
        calls_on(stopped, { { "pending" } }, OK, " (stopped)"))
      for _, c in ipairs(cases) do   -- reads work, writes raise
        c.works = function(e) return e.be:view(function(r) return r:get("b", "k1") end) == "v1"
          and not pcall(e.be.update, e.be, NOP) end
      end
      run_all(env, cases)
    end)

    it("a read-only backend refuses writes", function()
      local path = env.path
      env.be:close()
      env = { be = backend.open { path = path, readonly = true } }
      local cases = {
        { label = "lock", make = function(e) return e.be:batch_tx() end, want = exact("backend is read-only"),
          call = function(tx) return tx:lock() end },
        { label = "update", make = MAKE.Backend, want = exact("backend is read-only"),
          call = function(be) return be:update(NOP) end },
        { label = "defrag", make = MAKE.Backend, want = exact("backend is read-only"),
          call = function(be) return be:defrag() end },
        { label = "force_commit", make = MAKE.Backend, want = OK, call = function(be) return be:force_commit() end },
      }
      for _, c in ipairs(cases) do
        c.works = function(e) return e.be:view(function(r) return r:get("b", "k1") end) == "v1" end
      end
      run_all(env, cases)
    end)

    it("a closed Backend and every object it made", function()
      -- each case on a fresh backend closed with its objects open; the data
      -- are checked by reopening the file
      local function closed_env(tname, prepare)
        return function(e)
          local fresh = new_env()
          e.closed_path = fresh.path
          e.closed_hash = fresh.be:hash()   -- before a section opens: nothing commits one
          local o = tname == "Backend" and fresh.be or MAKE[tname](fresh)
          if prepare then prepare(o) end
          fresh.be:close()
          return o
        end
      end
      local function reopened(e)
        local be = backend.open(e.closed_path)
        local h = be:hash()
        be:close()
        return h
      end
      local cases = {}
      local closed = exact("backend is closed")
      local backend_calls = {}
      for name, args in pairs(API.Backend) do
        if #args == 0 and not name:find("^__") and name ~= "close" then backend_calls[#backend_calls + 1] = { name } end
      end
      table.sort(backend_calls, function(a, b) return a[1] < b[1] end)
      table.move({ { "hash", { b = { k1 = true } } }, { "_committed_get", "b", "k1" }, { "update", NOP },
        { "view", NOP } }, 1, 4, #backend_calls + 1, backend_calls)
      local groups = {
        { "Backend", nil, backend_calls, closed },
        { "Backend", nil, { { "close" }, { "__close" }, { "__gc" }, { "__tostring" } }, OK },
        { "BatchTx", function(tx) tx:unlock() end,
          join(READ_CALLS, WRITE_CALLS, COMMIT_CALLS, { { "lock" }, { "unlock" }, { "rollback" }, { "pending" } }),
          closed },
        { "BatchTx", nil, { { "__close" }, { "__tostring" } }, OK, " (closed while locked)" },
        { "ReadTx", nil, join(READ_CALLS, { { "rlock" }, { "lock" } }), closed },
        { "ReadTx", nil, { { "runlock" } }, OK, " (closed while rlocked)" },
        { "ReadTx", function(r) r:runlock() end, { { "runlock" }, { "unlock" } },
          exact("read tx is not locked (call rlock() first)") },
        { "ConcurrentReadTx", nil, join(READ_CALLS, { { "rlock" }, { "lock" }, { "unlock" } }), closed },
        { "ConcurrentReadTx", nil, { { "close" }, { "runlock" }, { "__close" } }, OK },
        { "Snapshot", nil, { { "size" }, { "write_to", NOP } }, closed },
        { "Snapshot", nil, { { "close" }, { "__close" }, { "__gc" } }, OK },
      }
      for _, g in ipairs(groups) do
        for _, c in ipairs(calls_on(closed_env(g[1], g[2]), g[3], g[4], g[5])) do
          c.label = g[1] .. "." .. c.label .. " after close"
          c.state = function(e) return reopened(e) == e.closed_hash end
          cases[#cases + 1] = c
        end
      end
      run_all(env, cases)
    end)
  end)

  it("failed open_tmp calls leave no temporary directory behind", function()
    local out, left, errfile = H.spawn_in_tmpdir [[
      local backend = require "backend"
      local n = 0
      for _, cfg in ipairs { { batch_interval = 0 }, { batch_limit = 0 }, { batch_limit = -1 }, { mmap_size = 1 },
        { max_readers = 0 }, { max_readers = 1e6 }, { readonly = true } } do
        local ok = pcall(backend.open_tmp, cfg)
        n = n + (ok and 0 or 1)
      end
      print(n)
    ]]
    assert.are.equal("7\n", out, H.child_stderr(errfile))
    checked = checked + 7
    assert.are.equal("", left, "left in TMPDIR")
  end)

  -- LMDB writes a value's overflow pages in one write(2), which Linux caps at
  -- 0x7ffff000 bytes: the largest value is that many bytes of whole pages
  -- less LMDB's 16-byte page header (tests/core_test.c checks the bound
  -- itself without the memory).
  it("values that no commit could write raise at put (BACKEND_TEST_BIG=1: 5 GiB of memory)", function()
    if os.getenv("BACKEND_TEST_BIG") ~= "1" then
      pending("set BACKEND_TEST_BIG=1 to build a 2 GiB value")
      return
    end
    local page = env.be:stats().page_size
    local max = 0x7ffff000 // page * page - 16
    local huge = string.rep("x", max + 1)
    run_all(env, { { label = "put(b, k, 2 GiB)", make = MAKE.BatchTx,
      call = function(tx) return tx:put("b", "k", huge) end,
      want = exact(string.format("value is too long (%d bytes; the limit is %d, the largest LMDB can "
        .. "write in one piece)", max + 1, max)) } })
    huge = huge:sub(1, max)
    env.be:update(function(tx) tx:put("b", "huge", huge) end)
    env.be:force_commit()   -- the largest value commits
    assert.are.equal(max, #env.be:_committed_get("b", "huge"))
    huge = nil   -- luacheck: ignore 311
    collectgarbage()
  end)
end)
