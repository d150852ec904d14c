-- Shared helpers for the specs. busted loads this file as its helper; specs get
-- the same table with `local H = require "spec.helper"`.
local H = {}
package.loaded["spec.helper"] = H

local format = string.format
local uv = require "luv"
local dirs = {}

--- Quotes s for /bin/sh.
function H.q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

--- The strings of the array args, each quoted for /bin/sh, joined by spaces.
function H.words(args)
  local out = {}
  for i, a in ipairs(args) do out[i] = H.q(a) end
  return table.concat(out, " ")
end

function H.sleep(secs)
  os.execute(format("sleep %.3f", secs))
end

--- Polls fn() until it returns true, sleeping `step` (0.02 s) between tries, for
-- about `secs` (10) seconds. Returns true if fn() became true.
function H.wait_until(fn, secs, step)
  secs, step = secs or 10, step or 0.02
  local deadline = os.time() + secs + 1
  for _ = 0, math.ceil(secs / step) do
    if fn() then return true end
    if os.time() > deadline then break end
    H.sleep(step)
  end
  return fn() and true or false
end

--- A fresh private directory (removed by H.cleanup()).
function H.tmpdir()
  local name = os.tmpname()
  os.remove(name)
  assert(os.execute("mkdir -m 700 " .. H.q(name)), "mkdir " .. name)
  dirs[#dirs + 1] = name
  return name
end

--- A path for a file that does not exist yet, in a fresh directory.
function H.tmppath(base)
  return H.tmpdir() .. "/" .. (base or "db")
end

function H.rm_rf(path)
  os.execute("rm -rf " .. H.q(path))
end

--- Removes every directory made by H.tmpdir().
function H.cleanup()
  for i = #dirs, 1, -1 do
    H.rm_rf(dirs[i])
    dirs[i] = nil
  end
end

function H.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

function H.read_file(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

function H.write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

function H.file_size(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local n = f:seek("end")
  f:close()
  return n
end

--- The value of the JSON text s (dkjson), asserting it is JSON.
function H.json_decode(s)
  local v, _, err = require("dkjson").decode(s)
  assert(v ~= nil, "not JSON: " .. tostring(err) .. ": " .. s)
  return v
end

--- Runs fn(...), which must raise; returns the message (a string).
function H.error_of(fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error, got none")
  return tostring(err)
end

--- Asserts fn(...) raises a "backend: ..." error containing `needle` (plain text).
function H.raises(needle, fn, ...)
  local err = H.error_of(fn, ...)
  assert(err:sub(1, 9) == "backend: ",
    format("error message should start with 'backend: ', got %q", err))
  assert(err:find(needle, 1, true),
    format("error message should contain %q, got %q", needle, err))
  return err
end

--- be:read_tx(), rlocked (rlock's return value is not relied on).
function H.rlocked(be)
  local rtx = be:read_tx()
  rtx:rlock()
  return rtx
end

--- All pairs of a bucket through tx:for_each: keys, values.
function H.all(tx, bucket)
  local ks, vs = {}, {}
  tx:for_each(bucket, function(k, v) ks[#ks + 1] = k; vs[#vs + 1] = v end)
  return ks, vs
end

--- "k=v,k=v" for a pair of arrays (binary-safe, for messages and comparisons).
function H.show(ks, vs)
  local out = {}
  for i = 1, #ks do
    out[i] = format("%q", ks[i]) .. (vs and ("=" .. format("%q", tostring(vs[i]))) or "")
  end
  return "{" .. table.concat(out, ",") .. "}"
end

--- Absolute path of the repository (busted runs from its root).
function H.root()
  if not H._root then
    local p = assert(io.popen("pwd"))
    H._root = p:read("l")
    p:close()
  end
  return H._root
end

--- The path of one of the real etcd data files in spec/fixtures/etcd (each
-- with the `etcdctl snapshot status` it printed and notes on how it was made).
function H.fixture(name)
  local path = H.root() .. "/spec/fixtures/etcd/" .. name
  assert(H.exists(path), "fixture " .. path .. " not found")
  return path
end

-- The search paths come from the environment, where the Makefile puts them
-- (the one place that sets them): busted and every lua5.4 child share them.
if not os.getenv("LUA_CPATH_5_4") then
  error("the specs find the module through LUA_PATH_5_4 and LUA_CPATH_5_4: run them with "
    .. "`make spec` (busted's options in SPEC_FLAGS), or after eval \"$(make -s env)\"", 0)
end

--- Shell prefix handing a child lua5.4 the search paths this suite runs with
-- (the Makefile's: this tree's modules, and the module from $(BUILD)).
function H.lua_env()
  return format("export LUA_PATH_5_4=%s; export LUA_CPATH_5_4=%s; ",
    H.q(os.getenv("LUA_PATH_5_4") or ";;"), H.q(os.getenv("LUA_CPATH_5_4")))
end

--- Starts `lua5.4 script args...` (script source written to a temp file) with
-- io.popen(mode "r") (killed after 120 s at the latest); its stderr goes to a file. Returns the handle and the path of
-- that file.
function H.spawn(src, ...)
  return H.spawn_after(":", src, ...)
end

--- H.spawn, with a shell command run first in the child's shell (e.g. "umask 000").
function H.spawn_after(shell, src, ...)
  local dir = H.tmpdir()
  local script, errfile = dir .. "/child.lua", dir .. "/stderr"
  H.write_file(script, src)
  -- `timeout` keeps a stuck child from hanging the suite; the child's own pid is
  -- what it reads from /proc/self/stat
  local cmd = H.lua_env() .. shell .. "; exec timeout -s KILL 120 lua5.4 " .. H.q(script) .. " "
    .. H.words { ... } .. " 2>" .. H.q(errfile)
  return assert(io.popen(cmd, "r")), errfile
end

--- Runs the Lua source `src` in a child (H.spawn, with args ...) that calls
-- `ready([delay])` just before the wait to interrupt; `delay` seconds after
-- that (the child's, else this call's), sends it a SIGINT (a Ctrl-C). Returns
-- the child's output after the ready line, its exit code and the path of its
-- stderr file.
function H.interrupt(src, delay, ...)
  local child, errfile = H.spawn([[
local function ready(delay)
  local stat = assert(io.open("/proc/self/stat"))
  io.stdout:write("ready ", stat:read("n"), " ", delay or -1, "\n")
  stat:close()
  io.stdout:flush()
end
]] .. src, ...)
  local line = child:read("l")
  local pid, wait = (line or ""):match("^ready (%d+) (%S+)$")
  pid, wait = math.tointeger(tonumber(pid)), tonumber(wait)
  if pid then
    if wait and wait >= 0 then delay = wait end
    -- luv's sleep and kill: a shell each would add its start-up (much more under ASan)
    uv.sleep(math.floor(delay * 1000))
    uv.kill(pid, "sigint")
  end
  local out = child:read("a")
  local _, _, code = child:close()
  assert(pid, format("never ready: %q %q", tostring(line) .. out, H.read_file(errfile)))
  return out, code, errfile
end

--- Runs the Lua source `src` in a child whose TMPDIR is a fresh directory;
-- returns the child's stdout, what it left in that directory (`ls -A`) and the
-- path of its stderr file.
function H.spawn_in_tmpdir(src)
  local tmp = H.tmpdir()
  local child, errfile = H.spawn_after("export TMPDIR=" .. H.q(tmp), src)
  local out = child:read("a")
  child:close()
  local p = assert(io.popen("ls -A " .. H.q(tmp)))
  local left = p:read("a")
  p:close()
  return out, left, errfile
end

function H.kill(pid, sig)
  return os.execute(format("kill -%s %d 2>/dev/null", sig or "KILL", pid))
end

--- The output of the shell command cmd.
function H.capture(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  return out
end

--- The names in dir (`ls -A`), sorted; those starting with `prefix` if given.
function H.ls(dir, prefix)
  local out = {}
  local p = assert(io.popen("ls -A " .. H.q(dir)))
  for name in p:lines() do
    if not prefix or name:sub(1, #prefix) == prefix then out[#out + 1] = name end
  end
  p:close()
  return out
end

-- A child that dies (os.exit, no cleanup) in the middle of snap:write_to(target).
local DYING_WRITER = [[
local backend = require "backend"
local be = backend.open(arg[1] .. ".src")
be:update(function(tx) tx:create_bucket("b"); tx:put("b", "k", "v") end)
local snap = be:snapshot()
snap:write_to(arg[1], function() os.exit(0) end)
]]

--- Leaves beside `target` what a process that died while writing a snapshot to it
-- leaves: a temporary directory of the module, its owner gone. Returns its path.
-- (A target that exists is moved aside meanwhile: write_to makes new files only.)
function H.dead_leftover(target)
  local before = {}
  local dir, base = target:match("^(.*)/([^/]+)$")
  for _, name in ipairs(H.ls(dir, base .. ".backend-tmp.")) do before[name] = true end
  local aside = H.exists(target) and assert(os.rename(target, target .. ".aside"))
  local child, errfile = H.spawn(DYING_WRITER, target)
  child:read("a")
  child:close()
  if aside then assert(os.rename(target .. ".aside", target)) end
  for _, name in ipairs(H.ls(dir, base .. ".backend-tmp.")) do
    if not before[name] then return dir .. "/" .. name end
  end
  error("the dying writer left no temporary directory: " .. H.child_stderr(errfile))
end

--- The stderr of a spawned child (for failure messages).
function H.child_stderr(errfile)
  local ok, s = pcall(H.read_file, errfile)
  return ok and s or ""
end

return H
