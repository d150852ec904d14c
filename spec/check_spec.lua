-- backend.check: every check passes on a healthy database, and every check finds
-- what it is there to find: on a stand-in whose methods lie (a stale view, a
-- commit that commits nothing, a hash that skips a key, a defrag that loses one),
-- or on a database another process wrote behind the backend's back.
local H = require "spec.helper"
local backend = require "backend"
local check = require "backend.tools.check"

local HOUR = 3600

-- A backend with a few buckets, binary keys and a value in overflow pages.
local function filled(config)
  local be, path = backend.open_tmp(config or { batch_interval = HOUR })
  be:update(function(tx)
    tx:create_bucket("a")
    tx:create_bucket("b\0x")
    tx:create_bucket("empty")
    for i = 1, 20 do tx:put("a", "k" .. i, "v" .. i) end
    tx:put("b\0x", "\0\255", "binary")
    tx:put("b\0x", "big", string.rep("x", 10000))
  end)
  return be, path
end

-- A stand-in for be: be's methods, but those in `with`.
local function proxy(be, with)
  return setmetatable(with, { __index = function(_, name)
    local method = be[name]
    return function(_, ...) return method(be, ...) end
  end })
end

local function names(report)
  local out = {}
  for i, c in ipairs(report.checks) do out[i] = c.name end
  return out
end

-- The messages of findings, as check.describe shows them.
local function described(findings)
  local out = {}
  for i, f in ipairs(findings) do out[i] = check.describe(f) end
  return table.concat(out, "\n")
end

-- Asserts some finding of `findings` shows `text` (check.describe's line).
local function finds(findings, text)
  local all = described(findings)
  assert(all:find(text, 1, true), string.format("no finding shows %q; the findings:\n%s", text, all))
end

describe("backend.check", function()
  teardown(H.cleanup)

  it("passes a healthy database, check by check and in run", function()
    local be <close> = filled()
    be:update(function(tx) tx:put("a", "pending", "yes") end)   -- buffered, not committed
    for _, name in ipairs { "views", "committed", "hash", "lmdb", "snapshot", "defrag" } do
      local findings, detail = check[name](be)
      assert.are.same({}, findings, name .. ": " .. described(findings))
      assert.are.equal("string", type(detail))
    end
    local report = check.run(be)
    assert.is_true(report.ok)
    assert.are.same({ "views", "committed", "hash", "lmdb", "snapshot" }, names(report))
    assert.are.same({}, report.findings)
    for _, c in ipairs(report.checks) do
      assert.is_true(c.ok)
      assert.are.equal("number", type(c.seconds))
    end
    assert.is_truthy(report.checks[1].detail:find("3 buckets, 23 keys", 1, true), report.checks[1].detail)
    assert.are.equal(string.format("%08x", be:hash()), report.checks[3].detail:match("^(%x+) over"))
    local text = check.format(report)
    assert.is_truthy(text:find("\nlmdb       ok     3 buckets, 23 entries", 1, true), text)
    assert.is_truthy(text:find("\nok: 5 checks passed$"), text)
    assert.are.same({}, (check.run(be, { snapshot = false }).findings))
  end)

  it("run with defrag and reopen closes the backend and returns it reopened", function()
    local path = H.tmppath()
    local be = backend.open { path = path, batch_interval = HOUR }
    be:update(function(tx) tx:create_bucket("b"); tx:put("b", "k", "v") end)
    local h = be:hash()
    local report = check.run(be, { defrag = true, reopen = true, config = { batch_interval = HOUR } })
    assert.is_true(report.ok, check.format(report))
    assert.are.same({ "views", "committed", "hash", "lmdb", "snapshot", "defrag", "reopen" }, names(report))
    H.raises("is closed", be.hash, be)
    local again <close> = report.backend
    assert.are.equal(h, again:hash())
    assert.are.equal("v", again:_committed_get("b", "k"))
  end)

  it("reopen of a missing file says so; reopen of a file whose open fails is a failed check", function()
    H.raises("check: reopen: no database at", check.reopen, H.tmppath())
    H.raises("check: reopen needs a database path, got nil", check.reopen)
    local be, path = filled()   -- open_tmp: closing removes the file
    local report = check.run(be, { reopen = true, snapshot = false })
    assert.is_false(report.ok)
    assert.is_nil(report.backend)
    finds(report.findings, "reopen: backend: check: reopen: no database at " .. path)
    assert.is_false(H.exists(path))
  end)

  it("run raises an interrupt (a real SIGINT) at once, as no finding", function()
    local child, errfile = H.spawn([[
      local backend = require "backend"
      local check = require "backend.tools.check"
      local be <close> = backend.open_tmp()
      local after = 0   -- checks run after the interrupt
      check.committed = function() after = after + 1; return {}, "" end
      check.views = function()   -- says it is running, then spins until the SIGINT
        local stat = assert(io.open("/proc/self/stat"))
        io.stdout:write(stat:read("n"), "\n")
        io.stdout:flush()
        while true do end
      end
      local ok, err = pcall(check.run, be)
      print(ok, backend.interrupted(err), after)
    ]])
    local pid = math.tointeger(tonumber(child:read("l")))
    if pid then H.kill(pid, "INT") end
    local out = child:read("a")
    child:close()
    assert.are.equal("false\ttrue\t0\n", out, H.child_stderr(errfile))
  end)

  it("run raises an interrupt in reopen's last open, as no finding", function()
    local be, path = filled { batch_interval = HOUR, keep = true }
    local open, opens = backend.open, 0
    backend.open = function(...)   -- check.reopen opens twice, then run opens for report.backend
      opens = opens + 1
      if opens == 3 then error("interrupted!", 0) end
      return open(...)
    end
    local ok, err = pcall(check.run, be, { reopen = true, snapshot = false })
    backend.open = open
    H.rm_rf(path:match("^(.*)/"))
    assert.are.same({ false, "interrupted!", 3 }, { ok, err, opens })
  end)

  it("checks a read-only backend through ReadTx and ConcurrentReadTx", function()
    local be, path = filled { batch_interval = HOUR, keep = true }
    be:close()
    local ro <close> = backend.open { path = path, readonly = true }
    local report = check.run(ro)
    assert.is_true(report.ok, check.format(report))
    assert.is_truthy(report.checks[1].detail:find("read-only", 1, true))
    ro:close()
    H.rm_rf(path:match("^(.*)/"))
  end)

  describe("views", function()
    it("finds a ConcurrentReadTx that is not as of now", function()
      local be <close> = filled()
      local stale = be:concurrent_read_tx()
      be:update(function(tx)
        tx:put("a", "k1", "changed")
        tx:delete("a", "k2")
        tx:put("b\0x", "\0new", "n")
        tx:create_bucket("c")
      end)
      local findings, detail = check.views(proxy(be, { concurrent_read_tx = function() return stale end }))
      assert.are.equal(4, #findings, described(findings))
      finds(findings, 'views: bucket "a", key "k1": BatchTx reads "changed", ConcurrentReadTx reads "v1"')
      finds(findings, 'views: bucket "a", key "k2": only ConcurrentReadTx has the key (value "v2")')
      finds(findings, 'views: bucket "b\\000x", key "\\000new": only BatchTx has the key (value "n")')
      finds(findings, 'views: bucket "c": the bucket is in BatchTx, not in ConcurrentReadTx')
      assert.are.same({ check = "views", bucket = "b\0x", key = "\0new",
        message = 'only BatchTx has the key (value "n")' }, findings[3])
      assert.is_truthy(detail:find("4 buckets", 1, true), detail)
    end)

    it("finds a ReadTx rlocked before the last writes (why the caller must not hold one)", function()
      local be <close> = filled()
      local rtx = H.rlocked(be)
      be:update(function(tx) tx:put("a", "k3", "new") end)
      local findings = check.views(be)
      rtx:runlock()
      assert.are.equal(1, #findings, described(findings))
      finds(findings, 'bucket "a", key "k3": BatchTx reads "new", ReadTx reads "v3"')
      assert.are.same({}, (check.views(be)))
    end)

    it("stops after check.max_findings findings", function()
      local be <close> = filled()
      local stale = be:concurrent_read_tx()
      be:update(function(tx) for i = 1, 20 do tx:put("a", "k" .. i, "new") end end)
      local saved = check.max_findings
      check.max_findings = 3
      local ok, findings, detail = pcall(check.views, proxy(be, { concurrent_read_tx = function() return stale end }))
      check.max_findings = saved
      assert(ok, findings)
      assert.are.equal(3, #findings)
      assert.are.equal("stopped after 3 findings", detail)
      -- and the batch tx was unlocked on the way out
      be:update(function(tx) tx:put("a", "k1", "again") end)
    end)
  end)

  describe("committed", function()
    it("finds LMDB changed by another process behind the backend's views", function()
      local path = H.tmppath()
      local be <close> = backend.open { path = path, batch_interval = HOUR }
      be:update(function(tx) tx:create_bucket("b"); tx:put("b", "k", "v") end)
      be:force_commit()
      assert.are.same({}, (check.committed(be)))
      -- mdb_load writes through LMDB's own locks, as a second writer may
      local input = "VERSION=3\nformat=bytevalue\ndatabase=b\ntype=btree\nHEADER=END\n 6b\n 58\nDATA=END\n"
      local load = assert(io.popen("mdb_load -n " .. H.q(path), "w"))
      load:write(input)
      assert(load:close(), "mdb_load failed")
      local findings = check.committed(be)
      assert.are.equal(1, #findings, described(findings))
      finds(findings, 'committed: bucket "b", key "k": a view reads "v", LMDB holds "X"')
    end)

    it("finds writes that force_commit() left pending", function()
      local be <close> = filled()
      be:force_commit()
      be:update(function(tx) tx:put("a", "k1", "new"); tx:put("a", "zz", "new") end)
      local findings = check.committed(proxy(be, { force_commit = function() end }))
      assert.are.equal(3, #findings, described(findings))
      finds(findings, "committed: 2 writes are still pending after force_commit()")
      finds(findings, 'bucket "a", key "k1": a view reads "new", LMDB holds "v1"')
      finds(findings, 'bucket "a", key "zz": a view reads "new", LMDB holds no such key')
    end)
  end)

  it("hash finds a hash() that is not of the data", function()
    local be <close> = filled()
    local findings = check.hash(proxy(be, { hash = function() return be:hash { a = { k7 = true } } end }))
    assert.are.equal(1, #findings)
    assert.is_nil(findings[1].bucket)
    assert.is_truthy(findings[1].message:find("^be:hash%(%) is %x+, the CRC%-32C of what a view reads %x+$"),
      findings[1].message)
  end)

  describe("lmdb", function()
    -- be:bucket_stats(), changed by fn(stats)
    local function with_stats(be, fn)
      return proxy(be, { bucket_stats = function()
        local stats = be:bucket_stats()
        fn(stats)
        return stats
      end })
    end

    local cases = {
      { "a bucket missing", function(s) table.remove(s, 1) end,
        'bucket "a": a view reads the bucket, LMDB does not have it' },
      { "an extra bucket", function(s)
        s[#s + 1] = { name = "ghost", entries = 0, depth = 0, branch_pages = 0, leaf_pages = 0, overflow_pages = 0 }
      end, 'bucket "ghost": LMDB has the bucket (0 entries), a view does not' },
      { "a wrong count", function(s) s[1].entries = s[1].entries + 1 end,
        'bucket "a": LMDB counts 21 entries, a view reads 20 keys' },
      { "too many pages", function(s) s[2].overflow_pages = 1 << 30 end, "pages of 4096 bytes are more than" },
      { "a field missing", function(s) s[2].depth = nil end,
        'bucket "b\\000x": be:bucket_stats() entry #2: depth is nil', 2 },   -- and so the bucket is missing
      { "a tree without leaves", function(s) s[1].leaf_pages = 0 end, "20 entries in a tree of depth 1 with 0 leaf" },
      { "a tree without branches", function(s) s[1].depth = 3 end, "a tree of depth 3 has only 0 branch pages" },
      { "a bucket twice", function(s) s[#s + 1] = s[1] end, 'bucket "a": be:bucket_stats() lists the bucket twice' },
    }
    for _, case in ipairs(cases) do
      it("finds " .. case[1], function()
        local be <close> = filled()
        assert.are.same({}, (check.lmdb(be)))
        local findings = check.lmdb(with_stats(be, case[2]))
        assert.are.equal(case[4] or 1, #findings, described(findings))
        finds(findings, case[3])
      end)
    end

    it("raises without be:bucket_stats()", function()
      local be <close> = filled()
      H.raises("check: lmdb needs be:bucket_stats()", check.lmdb, proxy(be, { bucket_stats = false }))
    end)
  end)

  it("snapshot finds a snapshot of other data", function()
    local be <close> = filled()
    local other <close> = backend.open_tmp()
    other:update(function(tx) tx:create_bucket("a"); tx:put("a", "k1", "other") end)
    local findings = check.snapshot(proxy(be, { snapshot = function() return other:snapshot() end }))
    finds(findings, 'snapshot: bucket "a", key "k1": the backend reads "v1", the snapshot reads "other"')
    finds(findings, 'snapshot: bucket "a", key "k2": only the backend has the key')
    finds(findings, 'snapshot: bucket "empty": the bucket is in the backend, not in the snapshot')
    finds(findings, "snapshot: the snapshot's hash is")
  end)

  describe("defrag", function()
    it("finds a defrag that loses a key", function()
      local be <close> = filled()
      local findings = check.defrag(proxy(be, { defrag = function()
        be:defrag()
        be:update(function(tx) tx:delete("b\0x", "big") end)
      end }))
      assert.are.equal(2, #findings, described(findings))
      finds(findings, 'defrag: bucket "b\\000x", key "big": only before defrag() has the key (value "xxxx')
      finds(findings, "defrag: hash() was")
    end)

    it("finds a defrag that grows the file", function()
      local be <close> = filled()
      -- the same data after it, in a file grown by a value written and deleted
      local findings = check.defrag(proxy(be, { defrag = function()
        be:defrag()
        be:update(function(tx) tx:put("a", "huge", string.rep("h", 1 << 20)) end)
        be:force_commit()
        be:update(function(tx) tx:delete("a", "huge") end)
        be:force_commit()
      end }))
      assert.are.equal(1, #findings, described(findings))
      finds(findings, "defrag: defrag() grew the file from")
    end)
  end)

  it("reopen finds a database that changed between two opens", function()
    local path = H.tmppath()
    backend.open(path):close()
    local open, opened = backend.open, 0
    backend.open = function(cfg)
      local be = open(cfg)
      opened = opened + 1
      if opened == 2 then be:update(function(tx) tx:create_bucket("new") end) end
      return be
    end
    local ok, findings = pcall(check.reopen, path)
    backend.open = open
    assert(ok, findings)
    assert.are.equal(1, #findings, described(findings))
    finds(findings, "reopen: hash() was 00000000, ")
  end)

  it("run reports a check that raised as failed and runs the others", function()
    local be <close> = filled()
    local report = check.run(proxy(be, { hash = function() error("backend: disk on fire", 0) end }))
    assert.is_false(report.ok)
    assert.are.same({ true, true, false, true, false }, (function()
      local oks = {}
      for i, c in ipairs(report.checks) do oks[i] = c.ok end
      return oks
    end)())
    finds(report.findings, "hash: backend: disk on fire")
    local text = check.format(report, { max_findings = 1 })
    assert.is_truthy(text:find("\nhash       FAILED raised an error", 1, true), text)
    assert.is_truthy(text:find("\n  ... and 1 more findings\nFAILED: 2 of 5 checks, 2 findings$"), text)
  end)
end)
