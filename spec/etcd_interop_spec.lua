-- The proof against a real etcd (Debian's etcd-server and etcd-client, 3.4):
-- a history written through etcdctl imports to what etcdctl reports (snapshot
-- status, every KeyValue, HashKV); the keyspace writer, given the same requests
-- as the live etcd, stores the very same bytes; and an etcd restored from a
-- file of ours serves our keyspace and goes on from its revision.
--
-- Servers listen on 127.0.0.1 only, on free ports, with their data in a
-- temporary directory; each runs in a process group of its own that after_each
-- kills (and `timeout` kills it anyway after a few minutes). Without the
-- binaries the spec is pending, unless BACKEND_REQUIRE_ETCD=1 (CI) makes that
-- a failure.
local H = require "spec.helper"
local backend = require "backend"
local etcd = require "backend.etcd"
local mime = require "mime"   -- base64, as etcdctl -w json gives bytes

local format = string.format
local LIFETIME = 300   -- seconds any server may live, whatever happens to this process

local function have(cmd)
  return os.execute("command -v " .. cmd .. " >/dev/null 2>&1") == true
end

local report = {}   -- etcdctl's outputs beside ours, printed at the end

local function side_by_side(what, theirs, ours)
  report[#report + 1] = format("  %-44s etcdctl: %-40s ours: %s", what, theirs, ours)
end

-- Runs the shell command cmd (stdin from the string `input`); returns its
-- stdout, or raises with its stderr when it fails.
local function sh(cmd, input)
  local dir = H.tmpdir()
  H.write_file(dir .. "/in", input or "")
  local p = assert(io.popen(cmd .. " <" .. H.q(dir .. "/in") .. " 2>" .. H.q(dir .. "/err")))
  local out = p:read("a")
  local ok = p:close()
  if not ok then error(format("%s failed: %s%s", cmd, out, H.read_file(dir .. "/err")), 0) end
  return out
end

-- etcdctl without a server (snapshot status, snapshot restore).
local function etcdctl(args, input)
  return sh("ETCDCTL_API=3 exec timeout -s KILL 60 etcdctl " .. H.words(args), input)
end

-- Ports ----------------------------------------------------------------------------

-- Every local TCP port in use now (any state), from /proc/net/tcp and tcp6.
local function ports_in_use()
  local used = {}
  for _, f in ipairs { "/proc/net/tcp", "/proc/net/tcp6" } do
    local file = io.open(f)
    if file then
      for line in file:lines() do
        local port = line:match("^%s*%d+:%s+%x+:(%x+)%s")
        if port then used[tonumber(port, 16)] = true end
      end
      file:close()
    end
  end
  return used
end

local rng_seeded = false

-- n distinct ports that nothing uses now (a server that still finds one taken
-- is started again on others).
local function free_ports(n)
  if not rng_seeded then
    math.randomseed(os.time(), tonumber(H.capture("echo $$")) or 0)
    rng_seeded = true
  end
  local used, out = ports_in_use(), {}
  while #out < n do
    local port = math.random(20000, 32000)
    if not used[port] then
      used[port] = true
      out[#out + 1] = port
    end
  end
  return table.unpack(out)
end

-- Servers --------------------------------------------------------------------------

local servers = {}

-- Whether a process of group pgid is still running (zombies do not count).
local function group_running(pgid)
  local stats = H.capture("cat /proc/[0-9]*/stat 2>/dev/null")
  for line in stats:gmatch("[^\n]+") do
    local state, pgrp = line:match(".*%) (%a) %d+ (%d+) ")   -- after the last ")": comm may hold one
    if state and state ~= "Z" and tonumber(pgrp) == pgid then return true end
  end
  return false
end

-- Stops the server's whole process group: TERM, then KILL if it lingers.
local function stop(server)
  if server.stopped then return end
  server.stopped = true
  local function gone() return not group_running(server.pgid) end
  for _, signal in ipairs { "TERM", "KILL" } do
    os.execute(format("kill -%s -%d 2>/dev/null", signal, server.pgid))   -- dash's kill takes no "--"
    if H.wait_until(gone, 10, 0.05) then return end
  end
  error(format("etcd (process group %d) did not stop", server.pgid), 0)
end

local function stop_all()
  for i = #servers, 1, -1 do
    stop(servers[i])
    servers[i] = nil
  end
end

local Server = {}
Server.__index = Server

--- etcdctl against this server; with `json`, its -w json output decoded.
function Server:ctl(args, input)
  return sh(format("ETCDCTL_API=3 exec timeout -s KILL 60 etcdctl --endpoints=http://127.0.0.1:%d "
    .. "--dial-timeout=2s --command-timeout=20s ", self.client) .. H.words(args), input)
end

function Server:json(args, input)
  table.insert(args, "-w")
  table.insert(args, "json")
  return H.json_decode(self:ctl(args, input))
end

-- Starts etcd on data_dir (a member named `name`, on fixed_peer if restore
-- made it so): client and peer URLs on 127.0.0.1, free ports; returns when it
-- serves requests.
local function start(data_dir, name, fixed_peer)
  for _ = 1, 5 do
    local client = free_ports(1)
    local peer = fixed_peer or free_ports(1)
    local log = data_dir .. ".log"
    local client_url, peer_url = "http://127.0.0.1:" .. client, "http://127.0.0.1:" .. peer
    local pid = tonumber(sh(format("setsid timeout -s KILL %d etcd %s >%s 2>&1 & echo $!", LIFETIME, H.words {
      "--name", name, "--data-dir", data_dir,
      "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
      "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
      "--initial-cluster", name .. "=" .. peer_url,
    }, H.q(log))))
    local server = setmetatable({ pgid = pid, client = client, peer = peer, log = log }, Server)
    servers[#servers + 1] = server
    local up = H.wait_until(function()
      return not group_running(pid) or pcall(server.ctl, server, { "endpoint", "health" })
    end, 30, 0.1)
    if up and group_running(pid) then return server end
    stop(server)
    local text = H.read_file(log)
    if not text:find("address already in use", 1, true) then
      error(format("etcd did not start (%s):\n%s", up and "it exited" or "not healthy in 30 s", text:sub(-3000)), 0)
    end
  end
  error("etcd found its ports taken five times", 0)
end

-- Comparisons ----------------------------------------------------------------------

-- KeyValues as `etcdctl -w json` shows them (base64 bytes; lease and an
-- empty value left out).
local function as_etcdctl(kvs)
  local out = {}
  for i, kv in ipairs(kvs) do
    out[i] = { key = (mime.b64(kv.key)), value = kv.value ~= "" and (mime.b64(kv.value)) or nil,
               create_revision = kv.create_revision, mod_revision = kv.mod_revision, version = kv.version,
               lease = kv.lease ~= 0 and kv.lease or nil }
  end
  return out
end

-- The IDs of the keyspace's leases, in order.
local function lease_ids(ks)
  local ids = {}
  for i, l in ipairs(ks.leases) do ids[i] = l.id end
  return ids
end

-- Every live key of server equals ks's, field for field, at the same revision.
local function assert_same_keys(server, ks, what)
  local got = server:json { "get", "--prefix", "" }
  local ours = ks:range("", { prefix = true })
  assert.are.same(as_etcdctl(ours), got.kvs or {})
  assert.are.equal(ks.revision, got.header.revision)
  side_by_side(what .. ": get --prefix \"\"", format("%d keys at revision %d", got.count or 0, got.header.revision),
    format("%d keys at revision %d", #ours, ks.revision))
end

-- `etcdctl endpoint hashkv [--rev]` of server equals ks:hash_kv(rev).
local function assert_same_hash_kv(server, ks, what, rev)
  local args = { "endpoint", "hashkv" }
  if rev then args[3] = "--rev=" .. rev end
  local theirs = server:json(args)[1].HashKV
  local hash, compacted = ks:hash_kv(rev)
  assert.are.same({ theirs.hash, theirs.compact_revision }, { hash, compacted })
  side_by_side(what .. ": endpoint hashkv" .. (rev and " --rev=" .. rev or ""),
    format("%d (compacted %d)", theirs.hash, theirs.compact_revision), format("%d (compacted %d)", hash, compacted))
end

-- `etcdctl snapshot status -w json` of file equals etcd.status(file), and
-- hash, revision and keys equal those of the database be.
local function assert_same_status(file, be, what)
  local theirs = H.json_decode(etcdctl { "snapshot", "status", file, "-w", "json" })
  assert.are.same(theirs, etcd.status(file))
  local ours = etcd.status(be)
  assert.are.same({ theirs.hash, theirs.revision, theirs.totalKey }, { ours.hash, ours.revision, ours.totalKey })
  side_by_side(what .. ": snapshot status", format("hash %d rev %d keys %d size %d", theirs.hash, theirs.revision,
    theirs.totalKey, theirs.totalSize), format("hash %d rev %d keys %d", ours.hash, ours.revision, ours.totalKey))
end

-- Restores file (a snapshot with its SHA-256 trailer) into a new member,
-- starts it, and checks that it serves ks: the same keys, the same HashKV, the
-- same leases, and a put that continues at the next revision.
local function assert_restored_serves(file, ks, what)
  local dir = H.tmpdir()
  local peer = free_ports(1)
  local peer_url = "http://127.0.0.1:" .. peer
  etcdctl { "snapshot", "restore", file, "--name", "restored", "--data-dir", dir .. "/data",
            "--initial-cluster", "restored=" .. peer_url, "--initial-advertise-peer-urls", peer_url }
  local server = start(dir .. "/data", "restored", peer)
  assert_same_keys(server, ks, what .. ", restored")
  assert_same_hash_kv(server, ks, what .. ", restored")
  local ids = {}
  for id in server:ctl({ "lease", "list" }):gmatch("\n(%x+)") do ids[#ids + 1] = math.tointeger(tonumber(id, 16)) end
  table.sort(ids)
  assert.are.same(lease_ids(ks), ids)
  local next_rev = server:json({ "put", "/after/restore", "x" }).header.revision
  assert.are.equal(ks.revision + 1, next_rev)
  side_by_side(what .. ", restored: put", "revision " .. next_rev, "next after " .. ks.revision)
  stop(server)
end

-- Exports be (holding ks) into dir: etcdctl's status of the file is ours,
-- and an etcd restored from it serves ks.
local function assert_export_served(be, ks, dir, what)
  local exported = dir .. "/exported.db"
  local r = backend.export_bolt(be, exported)
  assert.are.equal(be:hash(), r.hash)
  assert_same_status(exported, be, what .. ", exported")
  assert_restored_serves(exported, ks, what)
end

-- The same request to the live etcd (etcdctl args) and to the keyspace (fn):
-- both must answer the same revision.
local function both(server, args, fn, input)
  local theirs = server:json(args, input).header.revision
  local ours = fn()
  assert.are.equal(theirs, ours, table.concat(args, " "))
end

local function lease_of(out)
  return math.tointeger(tonumber(assert(out:match("lease (%x+) granted")), 16))
end

describe("etcd interop (a real etcd 3.4 through etcdctl)", function()
  local ready
  setup(function()
    ready = have("etcd") and have("etcdctl")
    if ready then
      report[#report + 1] = "etcd interop, " .. sh("etcd --version"):match("[^\n]*")
    end
  end)
  -- true when the binaries are here; otherwise the test is pending, or fails
  -- where they are required
  local function etcd_here()
    if ready then return true end
    if os.getenv("BACKEND_REQUIRE_ETCD") == "1" then
      error("etcd and etcdctl are required here (BACKEND_REQUIRE_ETCD=1) but not found: "
        .. "apt-get install etcd-server etcd-client", 0)
    end
    pending("etcd/etcdctl not installed (apt-get install etcd-server etcd-client): the interop journey is skipped")
    return false
  end
  after_each(function()
    stop_all()
    H.cleanup()
  end)
  teardown(function()
    if #report > 0 then print("\n" .. table.concat(report, "\n")) end
  end)

  it("a history etcd wrote imports to etcdctl's status, keys and HashKV; our writes are etcd's bytes; "
    .. "a restored member serves them", function()
    if not etcd_here() then return end
    local dir = H.tmpdir()
    local live = start(dir .. "/live", "live")
    -- the history: puts, overwrites, deletes, a prefix delete, leases, a revoke, a compaction, a txn
    for _, args in ipairs {
      { "put", "/a", "1" }, { "put", "/a", "2" }, { "put", "/b", "two words" }, { "put", "/utf8/ключ", "значение" },
      { "put", "/dir/1", "x" }, { "put", "/dir/2", "y" }, { "put", "/dir/3", "z" }, { "put", "/e", "" },
      { "del", "/a" }, { "del", "--prefix", "/dir/" },
    } do live:ctl(args) end
    local l1 = lease_of(live:ctl { "lease", "grant", "600" })
    live:ctl { "put", "--lease=" .. format("%x", l1), "/lease/1", "a" }
    live:ctl { "put", "--lease=" .. format("%x", l1), "/lease/2", "b" }
    local l2 = lease_of(live:ctl { "lease", "grant", "900" })
    live:ctl { "put", "--lease=" .. format("%x", l2), "/lease/3", "c" }
    local l3 = lease_of(live:ctl { "lease", "grant", "300" })
    live:ctl { "put", "--lease=" .. format("%x", l3), "/gone/1", "d" }
    live:ctl { "lease", "revoke", format("%x", l3) }
    live:ctl { "put", "/b", "three" }
    live:ctl { "compact", "--physical", "12" }
    live:ctl { "put", "/after", "1" }
    live:ctl({ "txn" }, "\nput /t/1 one\nput /t/2 two\ndel /b\n\n\n")
    local snap = dir .. "/snap.db"
    etcdctl { "--endpoints=http://127.0.0.1:" .. live.client, "snapshot", "save", snap }

    -- imported: what etcdctl says of the file, of every key, of HashKV
    local db = dir .. "/db"
    backend.import_bolt(snap, db)
    local be <close> = backend.open(db)
    assert_same_status(snap, be, "etcd's history")
    local ks = etcd.open(be, { writable = true })
    assert_same_keys(live, ks, "etcd's history")
    assert.are.same({ l1, l2 }, lease_ids(ks))
    assert_same_hash_kv(live, ks, "etcd's history")
    assert_same_hash_kv(live, ks, "etcd's history", 13)
    assert_same_hash_kv(live, ks, "etcd's history", 17)

    -- the same requests to the live etcd and to the keyspace writer
    both(live, { "put", "/a", "again" }, function() return ks:put("/a", "again") end)
    both(live, { "put", "--lease=" .. format("%x", l2), "/lease/4", "e" },
      function() return ks:put("/lease/4", "e", { lease = l2 }) end)
    both(live, { "txn" }, function()
      return (ks:txn { { "put", "/t/3", "three" }, { "delete", "/t/1" }, { "delete", "/utf8/", { prefix = true } } })
    end, "\nput /t/3 three\ndel /t/1\ndel --prefix /utf8/\n\n\n")
    both(live, { "del", "/e" }, function() return (ks:delete("/e")) end)
    both(live, { "del", "/nothing" }, function() return (ks:delete("/nothing")) end)
    local l4 = lease_of(live:ctl { "lease", "grant", "120" })
    assert.are.equal(l4, ks:grant(120, l4))
    both(live, { "put", "--lease=" .. format("%x", l4), "/lease/5", "f" },
      function() return ks:put("/lease/5", "f", { lease = l4 }) end)
    live:ctl { "lease", "revoke", format("%x", l1) }
    ks:revoke(l1)
    both(live, { "put", "/c", "after revoke" }, function() return ks:put("/c", "after revoke") end)
    live:ctl { "compact", "--physical", "22" }
    ks:compact(22)
    both(live, { "put", "/final", "z" }, function() return ks:put("/final", "z") end)
    assert_same_keys(live, ks, "continued from Lua")
    assert_same_hash_kv(live, ks, "continued from Lua")
    assert_same_hash_kv(live, ks, "continued from Lua", 23)

    -- byte for byte: etcd's key and lease buckets and compaction keys are ours
    local snap2 = dir .. "/snap2.db"
    etcdctl { "--endpoints=http://127.0.0.1:" .. live.client, "snapshot", "save", snap2 }
    backend.import_bolt(snap2, dir .. "/db2")
    local theirs <close> = backend.open(dir .. "/db2")
    for _, bucket in ipairs { "key", "lease" } do
      local a = theirs:view(function(r) return H.show(H.all(r, bucket)) end)
      local b = be:view(function(r) return H.show(H.all(r, bucket)) end)
      assert.are.equal(a, b, "bucket " .. bucket)
    end
    for _, key in ipairs { "scheduledCompactRev", "finishedCompactRev" } do
      assert.are.equal(theirs:view(function(r) return r:get("meta", key) end),
        be:view(function(r) return r:get("meta", key) end), key)
    end
    side_by_side("continued from Lua: key and lease buckets", "snapshot of the live etcd", "byte for byte the same")
    stop(live)

    -- a member restored from etcd's own snapshot of that state serves our keyspace
    assert_restored_serves(snap2, ks, "etcd's snapshot")

    -- and one restored from our export of it (the next test is pending until export_bolt is built)
    if not backend.export_bolt then return end
    assert_export_served(be, ks, dir, "our export")
  end)

  it("a keyspace written only from Lua, exported, is served by a restored etcd", function()
    if not etcd_here() then return end
    if not backend.export_bolt then
      pending("export_bolt not built yet: the export halves of both journeys are skipped")
      return
    end
    local dir = H.tmpdir()
    local be <close> = backend.open(dir .. "/db")
    local ks = etcd.open(be, { writable = true })
    ks:put("/a", "1")
    ks:put("/a", "2")
    ks:put("/b", "")
    ks:put("/bin/\0\255", string.rep("\1\2\3", 3000))
    for i = 1, 20 do ks:put(format("/many/%02d", i), string.rep("v", i * 50)) end
    ks:delete("/many/1", { prefix = true })
    ks:txn { { "put", "/t/1", "one" }, { "put", "/t/2", "two" }, { "delete", "/b" } }
    local lease = ks:grant(600)
    ks:put("/lease/1", "x", { lease = lease })
    ks:put("/lease/2", "y", { lease = ks:grant(900) })
    ks:revoke(lease)
    ks:compact(ks.revision - 2)
    ks:put("/a", "3")
    assert_export_served(be, ks, dir, "Lua only")
  end)
end)
