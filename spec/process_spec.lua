-- Processes and files: one writer per database, read-only readers beside it,
-- defrag leftovers cleaned at open.
local backend = require "backend"
local H = require "spec.helper"

-- A child that opens `path` (as `mode`), prints what happened, and for a
-- reader waits for flag files to read again.
local CHILD = [[
local backend = require "backend"
local path, mode, flag = arg[1], arg[2], arg[3]
local function exists(p) local f = io.open(p) if f then f:close() return true end end
local ok, be = pcall(backend.open, { path = path, readonly = mode == "readonly" })
if not ok then print("error " .. be) return end
print("opened")
io.stdout:flush()
for round = 1, 2 do
  while not exists(flag .. round) do os.execute("sleep 0.02") end
  local function get(k) return tostring(be:view(function(r) return r:get("b", k) end)) end
  print(string.format("round %d k1=%s k2=%s k3=%s", round, get("k1"), get("k2"), get("k3")))
  io.stdout:flush()
  if mode ~= "readonly" then break end
end
be:close()
]]

describe("processes", function()
  after_each(H.cleanup)

  it("a second process opening the database for writing gets a clear error", function()
    local path = H.tmppath()
    local be <close> = backend.open(path)
    local child, errfile = H.spawn(CHILD, path, "write", path .. ".flag")
    local line = child:read("l")
    child:close()
    assert.is_truthy(line, H.child_stderr(errfile))
    assert.are.equal("error backend: " .. be:path() .. " is open for writing by another process", line)
    -- and the first one is unaffected
    be:update(function(tx) tx:create_bucket("b"); tx:put("b", "k", "v") end)
    be:force_commit()
    assert.are.equal("v", be:_committed_get("b", "k"))
  end)

  it("a read-only process sees the writer's committed data only, while it writes", function()
    local path = H.tmppath()
    local be <close> = backend.open { path = path, batch_interval = 3600 }
    be:update(function(tx) tx:create_bucket("b"); tx:put("b", "k1", "one") end)
    be:force_commit()
    local flag = path .. ".flag"
    local child, errfile = H.spawn(CHILD, path, "readonly", flag)
    assert.are.equal("opened", child:read("l"), H.child_stderr(errfile))
    H.write_file(flag .. "1", "")
    assert.are.equal("round 1 k1=one k2=nil k3=nil", child:read("l"))
    be:update(function(tx) tx:put("b", "k2", "two") end)
    be:force_commit()
    be:update(function(tx) tx:put("b", "k3", "buffered, never committed") end)
    H.write_file(flag .. "2", "")
    assert.are.equal("round 2 k1=one k2=two k3=nil", child:read("l"), H.child_stderr(errfile))
    child:close()
    -- the reader leaves the writer's data and lock alone
    assert.are.equal("buffered, never committed", be:view(function(r) return r:get("b", "k3") end))
  end)

  it("read-only backends refuse every write", function()
    local path = H.tmppath()
    local w = backend.open(path)
    w:update(function(tx) tx:create_bucket("b"); tx:put("b", "k", "v") end)
    w:close()
    local r <close> = backend.open { path = path, readonly = true }
    assert.are.equal("v", r:view(function(v) return v:get("b", "k") end))
    H.raises("read-only", function() r:batch_tx():lock() end)
    H.raises("read-only", r.defrag, r)
    assert.are.equal(r:hash(), backend.crc32c("kv", backend.crc32c("b")))
  end)
end)

describe("files", function()
  after_each(H.cleanup)

  it("defrag's leftover temporary files are removed at the next open", function()
    local path = H.tmppath()
    backend.open(path):close()
    local leftover = path .. ".tmp.Ab12Cd"
    local unrelated = path .. ".backup"
    H.write_file(leftover, "half a database")
    H.write_file(unrelated, "keep me")
    backend.open(path):close()
    assert.is_false(H.exists(leftover))
    assert.is_true(H.exists(unrelated))
  end)

  it("creates the database and its lock file with mode 0600", function()
    local path = H.tmppath()
    backend.open(path):close()
    for _, p in ipairs { path, path .. "-lock" } do
      local f = assert(io.popen("stat -c %a " .. H.q(p)))
      assert.are.equal("600", f:read("l"), p)
      f:close()
    end
  end)

  it("says what a file that is not ours looks like", function()
    local path = H.tmppath()
    H.write_file(path, string.rep("x", 4096))
    H.raises("is not a backend database", backend.open, path)
    -- a bbolt meta page: 16-byte header, then magic 0xED0CDAED (little-endian)
    H.write_file(path, string.rep("\0", 16) .. string.pack("<I4I4", 0xED0CDAED, 2) .. string.rep("\0", 4072))
    H.raises("bbolt file", backend.open, path)
    assert.are.equal(4096, H.file_size(path))   -- untouched
  end)
end)
