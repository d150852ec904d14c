-- backendctl (bin/backendctl, lua/backend/ctl.lua) run as a process, the way a
-- user or a script runs it: every command, its exit codes (0 ok, 1 not found,
-- 2 usage, 3 runtime error), its --help, and its JSON parsed back. A few tests
-- call ctl.main and repl.run in this process, with modules replaced.
local H = require "spec.helper"
local backend = require "backend"
local ctl = require "backend.tools.ctl"
local mime = require "mime"
local repl = require "backend.tools.repl"

-- base64 as etcdctl -w json gives bytes
local function base64(s)
  return (mime.b64(s))
end

local COMMANDS = { "stat", "buckets", "get", "dump", "put", "delete", "hash", "snapshot", "defrag", "check",
                   "import", "export", "status", "etcd", "scenario", "repl", "metrics" }

-- `backendctl args...` as a shell command.
local function command_line(args)
  return "lua5.4 " .. H.q(H.root() .. "/bin/backendctl") .. " " .. H.words(args)
end

local TIMEOUT = "exec timeout -s KILL 60 "   -- before a command that must not hang the suite

-- Runs `backendctl args...` with `stdin` (default empty), TMPDIR `tmpdir`
-- (default: as it is) and the shell redirections `redirect` (e.g. ">/dev/full";
-- default: stdout is read): exit code, stdout, stderr.
local function run(args, stdin, tmpdir, redirect)
  local dir = H.tmpdir()
  local infile, errfile = dir .. "/stdin", dir .. "/stderr"
  H.write_file(infile, stdin or "")
  local env = H.lua_env() .. (tmpdir and "export TMPDIR=" .. H.q(tmpdir) .. "; " or "")
  local p = assert(io.popen(env .. TIMEOUT .. command_line(args) .. " <" .. H.q(infile) .. " 2>" .. H.q(errfile)
    .. " " .. (redirect or "")))
  local out = p:read("a")
  local _, _, code = p:close()
  return code, out, H.read_file(errfile)
end

-- run(), asserting the exit code; returns stdout, stderr.
local function expect(code, args, stdin, tmpdir, redirect)
  local got, out, err = run(args, stdin, tmpdir, redirect)
  assert(got == code, string.format("backendctl %s: exit %s, want %d; stdout %q; stderr %q",
    table.concat(args, " "), tostring(got), code, out:sub(1, 300), err))
  return out, err
end

local decode = H.json_decode

-- A stream collecting what is written to it (for ctl.main in this process).
local function sink()
  local parts = {}
  return { write = function(self, ...)
    for _, s in ipairs { ... } do parts[#parts + 1] = s end
    return self
  end, text = function() return table.concat(parts) end }
end

-- ctl.main in this process: exit code, stdout, stderr.
local function main(args)
  local out, err = sink(), sink()
  local code = ctl.main(args, { input = io.tmpfile(), out = out, err = err })
  return code, out.text(), err.text()
end

-- The LUA_INIT of a child to interrupt: ready() says "ready PID" on stdout,
-- then spins until a SIGINT ends it.
local READY = [[
function ready()
  local stat = assert(io.open("/proc/self/stat"))
  local pid = stat:read("n")
  stat:close()
  io.stdout:write("ready ", pid, "\n")
  io.stdout:flush()
  while true do end
end
]]

-- Runs `backendctl args...` (stdin: `stdin`) after `hook` (Lua source, run by
-- LUA_INIT), which makes it call ready(); sends it SIGINT once it said so.
-- Returns the exit code, stdout after the ready line, stderr.
local function interrupt(hook, args, stdin)
  local dir = H.tmpdir()
  local init, infile, errfile = dir .. "/init.lua", dir .. "/stdin", dir .. "/stderr"
  H.write_file(init, READY .. hook)
  H.write_file(infile, stdin or "")
  local p = assert(io.popen(H.lua_env() .. "export LUA_INIT_5_4=@" .. H.q(init) .. "; " .. TIMEOUT .. command_line(args)
    .. " <" .. H.q(infile) .. " 2>" .. H.q(errfile)))
  local line = p:read("l")
  local pid = math.tointeger(tonumber(line and line:match("^ready (%d+)$")))
  if pid then H.kill(pid, "INT") end
  local out = p:read("a")
  local _, _, code = p:close()
  assert(pid, string.format("never ready: stdout %q; stderr %q", tostring(line) .. out, H.read_file(errfile)))
  return code, out, H.read_file(errfile)
end

-- A database with bucket "b" holding `data` (key -> value), closed.
local function database(data)
  local path = H.tmppath()
  local be <close> = backend.open(path)
  be:update(function(tx)
    tx:create_bucket("b")
    for k, v in pairs(data) do tx:put("b", k, v) end
  end)
  return path
end

local function recorded(name)
  return (H.read_file(H.fixture(name .. ".status.json")):gsub("\n$", ""))
end

describe("backendctl", function()
  after_each(H.cleanup)

  it("--help, --version, help COMMAND and COMMAND --help for every command", function()
    local out = expect(0, { "--help" })
    for _, name in ipairs(COMMANDS) do assert.truthy(out:find("\n%s+" .. name .. " "), name) end
    assert.truthy(expect(0, { "--version" }):find("^backendctl " .. backend.version:gsub("%p", "%%%0")))
    for _, name in ipairs(COMMANDS) do
      local help = expect(0, { name, "--help" })
      assert.truthy(help:find("Usage: backendctl " .. name .. " ", 1, true), name)
      assert.truthy(help:find("-h, --help", 1, true), name)
      local code, again = main { "help", name }
      assert.are.same({ 0, help }, { code, again })
    end
  end)

  it("the tools' old module names are aliases of backend.tools.*", function()
    for _, name in ipairs { "ctl", "repl", "check", "scenario", "model" } do
      assert.are.equal(require("backend.tools." .. name), require("backend." .. name), name)
    end
  end)

  it("usage errors exit 2 with a message and the usage on stderr", function()
    for _, args in ipairs {
      {}, { "frobnicate" }, { "get", "db", "b" }, { "get", "db", "b", "k", "extra" }, { "stat", "--bogus", "db" },
      { "dump", "db", "--limit", "many" }, { "dump", "db", "--format", "xml" }, { "dump", "db", "--limit" },
      { "get", "--hex", "db", "b", "zz" }, { "status", "-w", "yaml", "f" }, { "etcd", "db", "frob" },
      { "etcd", "db", "get" }, { "hash", "db", "--ignore", "nocolon" }, { "help", "frobnicate" },
      { "stat", "--json=yes", "db" },
    } do
      local out, err = expect(2, args)
      assert.are.equal("", out)
      assert.truthy(err:find("^backendctl: .-\nUsage: backendctl "), err)
    end
  end)

  it("runtime errors exit 3 with the library's message after 'backendctl: '", function()
    local dir = H.tmpdir()
    local _, err = expect(3, { "get", dir .. "/none", "b", "k" })
    assert.are.equal("backendctl: " .. dir .. "/none: No such file or directory\n", err)
    H.write_file(dir .. "/text", "not a database at all, just some text to be refused clearly")
    _, err = expect(3, { "status", dir .. "/text" })
    assert.truthy(err:find("^backendctl: "), err)
    assert.falsy(err:find("backend: ", 1, true), err)
    _, err = expect(3, { "buckets", H.fixture("tiny.db") })
    assert.truthy(err:find("bbolt file", 1, true), err)
  end)

  describe("status", function()
    for _, name in ipairs { "tiny", "mixed" } do
      it(name .. ".db: JSON byte for byte as etcdctl printed it, and etcdctl's table", function()
        local file, want = H.fixture(name .. ".db"), recorded(name)
        assert.are.equal(want .. "\n", expect(0, { "status", "--json", file }))
        assert.are.equal(want .. "\n", expect(0, { "status", "-w", "json", file }))
        local st = decode(want)
        local notes = H.read_file(H.fixture(name .. ".notes.txt"))
        local table_text = expect(0, { "status", file })
        assert.truthy(table_text:find(string.format("| %x |", st.hash), 1, true))
        -- the very table etcdctl printed, recorded in the notes
        assert.truthy(notes:find(table_text, 1, true), table_text)
        assert.are.equal(string.format("%x, %d, %d, %s\n", st.hash, st.revision, st.totalKey,
          repl.human_bytes(st.totalSize)), expect(0, { "status", "-w", "simple", file }))
      end)

      it(name .. ".db imported: status has the same hash, revision and keys", function()
        local dest = H.tmppath()
        local summary = decode(expect(0, { "import", "--json", H.fixture(name .. ".db"), dest }))
        local want = decode(recorded(name))
        assert.are.same({ want.hash, want.totalKey }, { summary.hash, summary.keys })
        local got = decode(expect(0, { "status", "--json", dest }))
        assert.are.same({ want.hash, want.revision, want.totalKey }, { got.hash, got.revision, got.totalKey })
        assert.are.equal(H.file_size(dest), got.totalSize)
        assert.truthy(expect(0, { "import", H.fixture(name .. ".db"), H.tmppath() }):find("^imported "))
        local _, err = expect(3, { "import", H.fixture(name .. ".db"), dest })
        assert.truthy(err:find("^backendctl: .*exists"), err)
      end)
    end

    it("humanizes sizes as go-humanize does", function()
      assert.are.same({ "0 B", "9 B", "10 B", "999 B", "1.0 kB", "20 kB", "12 MB", "1.5 GB" },
        { repl.human_bytes(0), repl.human_bytes(9), repl.human_bytes(10), repl.human_bytes(999),
          repl.human_bytes(1000), repl.human_bytes(20480), repl.human_bytes(12414976),
          repl.human_bytes(1500000000) })
    end)
  end)

  it("export: the inverse of import, with a progress bar, and --no-trailer", function()
    local data = {}
    for i = 1, 3000 do data[string.format("key%05d", i)] = string.rep("v", 4000) end
    local db, dir = database(data), H.tmpdir()
    local want = backend.open { path = db, readonly = true }
    local hash = want:hash()
    want:close()
    local out, err = expect(0, { "export", db, dir .. "/a.db" })
    assert.are.equal(string.format("exported 3000 keys (12 MB) in 1 buckets to %s/a.db (%s); hash %08x\n", dir,
      repl.human_bytes(H.file_size(dir .. "/a.db")), hash), out)
    assert.are.equal("", err)   -- stderr is not a terminal: no progress bar
    assert.are.equal(32, H.file_size(dir .. "/a.db") % 4096)   -- etcdctl's SHA-256 trailer
    assert.are.equal(hash, backend.import_bolt(dir .. "/a.db", dir .. "/back").hash)
    local r
    r, err = expect(0, { "export", "--json", "--progress", "--no-trailer", db, dir .. "/b.db" })
    r = decode(r)
    assert.are.same({ buckets = 1, keys = 3000, bytes = 3000 * 4008, hash = hash, size = H.file_size(dir .. "/b.db"),
      path = dir .. "/b.db" }, r)
    assert.are.equal(0, r.size % 4096)
    assert.truthy(err:find("export [", 1, true) and err:find("100%", 1, true), err)
    err = select(2, expect(3, { "export", db, dir .. "/a.db" }))
    assert.are.equal("backendctl: " .. dir .. "/a.db exists: an export makes a new file\n", err)
    err = select(2, expect(3, { "export", H.fixture("tiny.db"), dir .. "/c.db" }))
    assert.are.equal("backendctl: " .. H.fixture("tiny.db") .. " is an etcd data file already (bbolt): "
      .. "there is nothing to export\n", err)
    assert.is_false(H.exists(dir .. "/c.db"))
  end)

  it("import of a backend database says it is one; nothing is made", function()
    local db, dest = database { k = "v" }, H.tmppath()
    local _, err = expect(3, { "import", db, dest })
    assert.are.equal("backendctl: " .. db .. " is a backend database already (LMDB), not an etcd data file: "
      .. "there is nothing to import\n", err)
    assert.is_false(H.exists(dest))
  end)

  for _, name in ipairs { "tiny", "mixed" } do
    it(name .. ".db: hash, stat and dump read the etcd file directly, as its import reads", function()
      local file, imported = H.fixture(name .. ".db"), H.tmppath()
      local tmp = H.tmpdir()
      local hash = decode(recorded(name)).hash   -- etcdctl's
      assert.are.equal(hash, backend.import_bolt(file, imported).hash)
      assert.are.equal(string.format("%d %08x\n", hash, hash), expect(0, { "hash", file }, nil, tmp))
      local ignore = { "--ignore", "meta:consistent_index", "--ignore", "key:nosuch" }
      assert.are.equal(expect(0, { "hash", "--json", imported, table.unpack(ignore) }),
        expect(0, { "hash", "--json", file, table.unpack(ignore) }, nil, tmp))
      for _, args in ipairs {
        {}, { "key" }, { "meta", "--format", "json" }, { "--format", "hex", "--limit", "7" },
        { "key", "--hex", "--from", "00000000000000050000", "--to", "0000000000000008" },
        { "members", "--limit", "1" },
      } do
        assert.are.equal(expect(0, { "dump", imported, table.unpack(args) }),
          expect(0, { "dump", file, table.unpack(args) }, nil, tmp), table.concat(args, " "))
      end
      local _, err = expect(1, { "dump", file, "nosuch" })
      assert.are.equal("backendctl: no bucket nosuch\n", err)
      local st = decode(expect(0, { "stat", "--json", file }, nil, tmp))
      local want = decode(expect(0, { "stat", "--json", imported }))
      assert.are.same({ "bbolt", H.file_size(file), decode(recorded(name)).totalSize },
        { st.format, st.file_size, st.total_size })
      for i, b in ipairs(want.buckets) do
        assert.are.same({ b.name, b.entries }, { st.buckets[i].name, st.buckets[i].entries })
      end
      assert.are.equal(#want.buckets, #st.buckets)
      assert.truthy(expect(0, { "stat", file }):find("\nformat +etcd data file %(bbolt%)"))
      local p = assert(io.popen("ls -A " .. H.q(tmp)))
      assert.are.equal("", p:read("a"), "no temporary import")
      p:close()
    end)
  end

  describe("etcd", function()
    local mixed
    setup(function()
      mixed = os.tmpname()
      os.remove(mixed)
      backend.import_bolt(H.fixture("mixed.db"), mixed)
    end)
    teardown(function()
      os.remove(mixed)
      os.remove(mixed .. "-lock")
    end)

    it("get reads an etcd file directly, as etcdctl get prints, through a temporary import", function()
      local tmp = H.tmpdir()
      assert.are.equal("/tiny/key3\nvalue-3\n",
        expect(0, { "etcd", H.fixture("tiny.db"), "get", "/tiny/key3" }, nil, tmp))
      local damaged = H.tmpdir() .. "/damaged.db"
      local data = H.read_file(H.fixture("tiny.db"))
      H.write_file(damaged, data:sub(1, 5000) .. "\255" .. data:sub(5002))
      local _, err = expect(3, { "etcd", damaged, "get", "/tiny/key3" }, nil, tmp)
      assert.truthy(err:find("^backendctl: .*SHA%-256 trailer mismatch"), err)
      local p = assert(io.popen("ls -A " .. H.q(tmp)))
      assert.are.equal("", p:read("a"), "the temporary import is removed")
      p:close()
      assert.are.equal("/mixed/hot/counter\n250\n",
        expect(0, { "etcd", H.fixture("mixed.db"), "get", "/mixed/hot/counter" }))
      _, err = expect(1, { "etcd", H.fixture("tiny.db"), "get", "/tiny/key3", "--rev", "4" })
      assert.truthy(err:find("no key /tiny/key3", 1, true))
      assert.are.equal("/tiny/key3\nvalue-3\n",
        expect(0, { "etcd", H.fixture("tiny.db"), "get", "/tiny/key3", "--rev", "5" }))
    end)

    it("get on an imported database: --rev before the compaction or in the future is an error", function()
      assert.are.equal("/mixed/hot/counter\n250\n", expect(0, { "etcd", mixed, "get", "/mixed/hot/counter" }))
      local _, err = expect(3, { "etcd", mixed, "get", "/mixed/hot/counter", "--rev", "100" })
      assert.are.equal("backendctl: etcd: required revision has been compacted (compacted at 2679)\n", err)
      _, err = expect(3, { "etcd", mixed, "get", "/mixed/hot/counter", "--rev", "99999" })
      assert.truthy(err:find("future revision", 1, true))
      expect(1, { "etcd", mixed, "get", "/no/such/key" })
    end)

    it("get --json like etcdctl -w json, --prefix, ls, history, leases, meta", function()
      local r = decode(expect(0, { "etcd", H.fixture("tiny.db"), "get", "--prefix", "/tiny/", "--json" }))
      assert.are.same({ 10, 11, 10 }, { r.count, r.header.revision, #r.kvs })
      assert.are.same({ key = base64("/tiny/key3"), value = base64("value-3"), create_revision = 5,
                        mod_revision = 5, version = 1 }, r.kvs[4])
      local ls = expect(0, { "etcd", mixed, "ls", "/mixed/lease/l4/" })
      assert.are.equal("/mixed/lease/l4/00\n/mixed/lease/l4/01\n/mixed/lease/l4/02\n", ls)
      assert.are.equal(1951, decode(expect(0, { "etcd", mixed, "ls", "--json" })).count)
      local history = decode(expect(0, { "etcd", mixed, "history", "/mixed/hot/counter", "--json" }))
      assert.are.equal(base64("250"), history[#history].kv.value)
      local text = expect(0, { "etcd", mixed, "history", "/mixed/hot/counter" })
      assert.truthy(text:find("^REVISION +OP +VERSION"))
      expect(1, { "etcd", mixed, "history", "/no/such/key" })
      local leases = decode(expect(0, { "etcd", mixed, "leases", "--json" }))
      local by_hex = {}
      for _, l in ipairs(leases) do by_hex[l.hex] = l end
      assert.are.same({ 86400, 9 }, { by_hex["2040a20b0dfff8b6"].ttl, #by_hex["2040a20b0dfff8b6"].keys })
      assert.truthy(expect(0, { "etcd", mixed, "leases" }):find("2040a20b0dfffece ttl 43200s, 4 keys", 1, true))
      local meta = decode(expect(0, { "etcd", mixed, "meta", "--json" }))
      assert.are.same({ 5066, 2679, 2679 }, { meta.revision, meta.compacted, meta.meta.finishedCompactRev })
      assert.truthy(expect(0, { "etcd", mixed, "meta" }):find("finishedCompactRev +2679"))
    end)

    it("put, del, compact and hashkv: etcdctl's outputs, written as the keyspace writer writes", function()
      local db = H.tmppath()
      local _, err = expect(3, { "etcd", db, "put", "/a", "1" })
      assert.are.equal("backendctl: " .. db .. ": No such file or directory\n", err)
      assert.are.equal("OK\n", expect(0, { "etcd", db, "put", "--create", "/a", "1" }))
      assert.are.same({ header = { revision = 3 } }, decode(expect(0, { "etcd", db, "put", "/a", "2", "--json" })))
      expect(0, { "etcd", db, "put", "/b", "-" }, "from stdin")
      expect(0, { "etcd", db, "put", "/c", "x" })
      assert.are.equal("/b\nfrom stdin\n", expect(0, { "etcd", db, "get", "/b" }))
      assert.are.equal("1\n", expect(0, { "etcd", db, "del", "/a" }))
      assert.are.equal("0\n", expect(0, { "etcd", db, "del", "/a" }))
      assert.are.same({ header = { revision = 7 }, deleted = 2 },
        decode(expect(0, { "etcd", db, "del", "/b", "--from-key", "--json" })))
      assert.are.equal("compacted revision 4\n", expect(0, { "etcd", db, "compact", "4" }))
      _, err = expect(3, { "etcd", db, "compact", "4" })
      assert.are.equal("backendctl: etcd: required revision has been compacted (compacted at 4)\n", err)
      local be = backend.open(db)
      local ks = require("backend.etcd").open(be)
      assert.are.same({ 7, 4, 2 }, { ks.revision, ks.compacted, #ks:history("/a") })
      local hash, compacted = ks:hash_kv()
      local hash5 = ks:hash_kv(5)
      be:close()
      assert.are.equal(db .. ", " .. hash .. "\n", expect(0, { "etcd", db, "hashkv" }))
      assert.are.same({ header = { revision = 7 }, hash = hash5, compact_revision = compacted },
        decode(expect(0, { "etcd", db, "hashkv", "--rev", "5", "--json" })))
      _, err = expect(3, { "etcd", db, "put", "/l", "v", "--lease", "694d7c3e8a1f2b01" })
      assert.are.equal("backendctl: etcd: requested lease not found: 694d7c3e8a1f2b01\n", err)
      _, err = expect(3, { "etcd", H.fixture("tiny.db"), "put", "/a", "1" })
      assert.truthy(err:find("is an etcd data file (bbolt): import it first", 1, true), err)
      local hash_tiny = decode(expect(0, { "etcd", H.fixture("tiny.db"), "hashkv", "--json" }))
      assert.are.same({ 11, -1 }, { hash_tiny.header.revision, hash_tiny.compact_revision })
    end)

    it("a leased put names the lease in hex, as etcdctl does; options only where they apply", function()
      local db = H.tmppath()
      local be = backend.open(db)
      require("backend.etcd").open(be, { writable = true }):grant(60, 0x694d7c3e8a1f2b01)
      be:close()
      expect(0, { "etcd", db, "put", "/l", "v", "--lease", "694d7c3e8a1f2b01" })
      assert.truthy(expect(0, { "etcd", db, "leases" }):find("694d7c3e8a1f2b01 ttl 60s, 1 keys\n  /l\n", 1, true))
      for _, case in ipairs {
        { { "etcd", db, "put", "/x", "y", "--prefix" }, "unknown option '--prefix'" },
        { { "etcd", db, "get", "/x", "--lease", "1" }, "unknown option '--lease'" },
        { { "etcd", db, "put", "/x", "y", "--lease", "zz" }, "--lease wants a lease ID in hex, got 'zz'" },
        { { "etcd", db, "put", "/x" }, "missing argument 'VALUE'" },
        { { "etcd", db, "compact" }, "missing argument 'REV'" },
        { { "etcd", db, "compact", "x" }, "REV must be a positive integer, got 'x'" },
        { { "etcd", db, "hashkv", "extra" }, "too many arguments" },
        { { "etcd", db, "del", "/a", "--from-key", "--range-end", "/b" },
          "--from-key and --range-end exclude each other" },
        { { "etcd", db, "frob" }, "unknown command 'frob'" },
      } do
        local _, err = expect(2, case[1])
        assert.are.equal("backendctl: " .. case[2], err:match("^[^\n]*"))
      end
    end)
  end)

  it("put, get, dump and delete with binary keys and values (--hex), JSON binary-safe", function()
    local db = H.tmppath()
    local _, err = expect(3, { "put", db, "b", "k", "v" })   -- no database without --create
    assert.truthy(err:find("No such file or directory", 1, true))
    expect(0, { "put", "--create", "--hex", db, "b", "00ff0a5c", "00 ff" })
    expect(0, { "put", db, "b", "tab\tkey", "-" }, "line 1\nline 2")
    expect(0, { "put", db, "b", "naïve", "café" })
    _, err = expect(3, { "put", db, "nob", "k", "v" })
    assert.are.equal("backendctl: bucket 'nob' does not exist\n", err)

    assert.are.equal("00ff\n", expect(0, { "get", "--hex", db, "b", "00ff0a5c" }))
    expect(0, { "put", db, "b", "\255x", "-" }, "raw\0value")   -- argv cannot hold a NUL; stdin can
    assert.are.equal("raw\0value", expect(0, { "get", db, "b", "\255x" }))
    assert.are.equal("line 1\nline 2", expect(0, { "get", db, "b", "tab\tkey" }))
    assert.are.same({ bucket = "b", key = { base64 = base64("\0\255\n\\") }, value = { base64 = "AP8=" } },
      decode(expect(0, { "get", "--json", "--hex", db, "b", "00ff0a5c" })))
    assert.are.same({ bucket = "b", key = "naïve", value = "café" },
      decode(expect(0, { "get", "--json", db, "b", "naïve" })))
    _, err = expect(1, { "get", db, "b", "missing\1" })
    assert.are.equal("backendctl: missing\\x01: not found in bucket b\n", err)

    assert.are.equal("\\x00\\xff\\x0a\\\\\t\\x00\\xff\nnaïve\tcafé\ntab\\x09key\tline 1\\x0aline 2\n"
      .. "\\xffx\traw\\x00value\n",
      expect(0, { "dump", db, "b" }))
    assert.are.equal("b\tnaïve\tcafé\n", expect(0, { "dump", db, "--from", "n", "--to", "o" }))
    assert.are.equal("00ff0a5c\t00ff\n", expect(0, { "dump", db, "b", "--hex", "--limit", "1" }))
    assert.are.equal("6e61c3af7665\t636166c3a9\n",
      expect(0, { "dump", db, "b", "--hex", "--from", "6e", "--to", "7000" }))
    local lines = {}
    for line in expect(0, { "dump", "--format", "json", db }):gmatch("[^\n]+") do lines[#lines + 1] = decode(line) end
    assert.are.same({ bucket = "b", key = "tab\tkey", value = "line 1\nline 2" }, lines[3])
    assert.are.same({ base64 = base64("\0\255\n\\") }, lines[1].key)
    assert.are.same({ bucket = "b", key = { base64 = base64("\255x") }, value = "raw\0value" }, lines[4])
    expect(1, { "dump", db, "nob" })
    expect(0, { "put", db, "b", "--", "-dash", "-" }, "d")   -- `--` ends the options
    assert.are.equal("d", expect(0, { "get", db, "b", "--", "-dash" }))

    expect(0, { "delete", "--hex", db, "b", "00ff0a5c" })
    _, err = expect(1, { "delete", "--hex", db, "b", "00ff0a5c" })
    assert.truthy(err:find("not found in bucket b", 1, true))
    expect(1, { "get", "--hex", db, "b", "00ff0a5c" })
    expect(3, { "delete", H.tmpdir() .. "/none", "b", "k" })
    assert.are.same({ "b" }, decode(expect(0, { "buckets", "--json", db })))
    assert.are.equal("b\n", expect(0, { "buckets", db }))
  end)

  it("read-only commands work while another process has the database open for writing", function()
    local path = H.tmppath()
    local be <close> = backend.open { path = path, batch_interval = 3600 }
    be:update(function(tx) tx:create_bucket("b"); tx:put("b", "k", "committed") end)
    be:force_commit()
    be:update(function(tx) tx:put("b", "k2", "buffered") end)
    assert.are.equal("committed", expect(0, { "get", path, "b", "k" }))
    expect(1, { "get", path, "b", "k2" })   -- not committed yet: not on disk
    assert.are.equal("k\tcommitted\n", expect(0, { "dump", path, "b" }))
    local _, err = expect(3, { "put", path, "b", "k", "v" })
    assert.truthy(err:find("open for writing by another process", 1, true), err)
  end)

  it("hash in decimal and hex, --ignore, --json; snapshot; defrag; stat; metrics", function()
    local data = {}
    for i = 1, 2000 do data[string.format("key%05d", i)] = string.rep("v", 200) end
    local db = database(data)
    local be = backend.open { path = db, readonly = true }
    local want, without = be:hash(), be:hash { b = { key00001 = true } }
    be:close()
    assert.are.equal(string.format("%d %08x\n", want, want), expect(0, { "hash", db }))
    assert.are.same({ hash = without, hex = string.format("%08x", without) },
      decode(expect(0, { "hash", "--json", db, "--ignore", "b:key00001" })))

    local snap = H.tmpdir() .. "/snap"
    local _, out, err
    out, err = expect(0, { "snapshot", db, snap })
    assert.are.equal(string.format("%d bytes written to %s\n", H.file_size(snap), snap), out)
    assert.are.equal("", err)   -- stderr is not a terminal: no progress bar
    assert.are.equal(string.format("%d %08x\n", want, want), expect(0, { "hash", snap }))
    _, err = expect(0, { "snapshot", "--progress", db, snap .. "2" })
    assert.truthy(err:find("100%", 1, true), err)
    _, err = expect(3, { "snapshot", db, snap })
    assert.truthy(err:find("already exists", 1, true), err)

    local st = decode(expect(0, { "stat", "--json", db }))
    assert.are.same({ name = "b", entries = 2000 }, { name = st.buckets[1].name, entries = st.buckets[1].entries })
    assert.are.equal(H.file_size(db), st.size)
    local text = expect(0, { "stat", db })
    assert.truthy(text:find("\nBUCKET +ENTRIES +DEPTH"), text)
    assert.truthy(text:find("\nb +2000 "), text)
    assert.truthy(expect(0, { "metrics", db }):find("# TYPE ", 1, true))

    local w = backend.open(db)
    w:update(function(tx) for i = 1, 1900 do tx:delete("b", string.format("key%05d", i)) end end)
    w:close()
    local before = H.file_size(db)
    local r = decode(expect(0, { "defrag", "--json", db }))
    assert.are.equal(before, r.before)
    assert.is_true(r.after < before, r.after .. " < " .. before)
    out, err = expect(0, { "defrag", db })
    assert.truthy(out:find(" → ", 1, true))
    assert.are.equal("", err)   -- not a terminal: no bar
    out, err = expect(0, { "defrag", "--progress", db })
    assert.truthy(out:find(" → ", 1, true))
    assert.truthy(err:find("defrag [", 1, true) and err:find("100%", 1, true), err)
    expect(3, { "defrag", H.tmpdir() .. "/none" })
  end)

  it("check: every check passes on a sound database; --json, --reopen, --defrag", function()
    local db = database { k1 = "v1", k2 = "v2" }
    assert.truthy(expect(0, { "check", db }):find("ok: %d+ checks passed"))
    local report = decode(expect(0, { "check", "--json", "--reopen", db }))
    assert.is_true(report.ok)
    local names = {}
    for _, c in ipairs(report.checks) do names[#names + 1] = c.name end
    assert.truthy(table.concat(names, " "):find("reopen", 1, true))
    assert.truthy(expect(0, { "check", "--defrag", db }):find("defrag", 1, true))
  end)

  it("check: a file too damaged to open is a failed check (exit 1), a missing one an error (exit 3)", function()
    local db = database { k1 = "v1", k2 = "v2" }
    local truncated, garbage, version, unmarked = H.tmppath(), H.tmppath(), H.tmppath(), H.tmppath()
    local data = H.read_file(db)
    H.write_file(truncated, data:sub(1, 2 * 4096 + 100))
    H.write_file(garbage, string.rep("not a database ", 1000))
    -- the second meta page's data format version (LMDB: MDB_VERSION_MISMATCH)
    local psize = string.unpack("<I4", data, 41)
    H.write_file(version, data:sub(1, psize + 20) .. string.pack("<I4", 2) .. data:sub(psize + 25))
    -- the second meta page's page flags cleared (LMDB: MDB_INVALID)
    H.write_file(unmarked, data:sub(1, psize + 10) .. string.pack("<I2", 0) .. data:sub(psize + 13))
    for _, case in ipairs { { truncated, "is truncated or damaged" }, { garbage, "is not a backend database" },
                            { version, "is truncated or damaged: meta page 1 names data format 2, not LMDB's 1" },
                            { unmarked, "is truncated or damaged: meta page 1 is not marked a meta page" } } do
      local out, err = expect(1, { "check", case[1] })
      assert.truthy(out:find("open: " .. case[1] .. " " .. case[2], 1, true), out)
      assert.truthy(out:find("FAILED: 1 of 1 checks, 1 findings", 1, true), out)
      assert.are.equal("", err)
      local report = decode(expect(1, { "check", "--json", case[1] }))
      assert.is_false(report.ok)
      assert.are.equal("open", report.checks[1].name)
      assert.truthy(report.findings[1].message:find(case[2], 1, true))
    end
    local _, err = expect(3, { "check", H.tmpdir() .. "/none" })
    assert.truthy(err:find("No such file or directory", 1, true), err)
  end)

  it("check and scenario exit 1 when one fails (modules replaced in this process)", function()
    local saved_check, saved_scenario = package.loaded["backend.tools.check"], package.loaded["backend.tools.scenario"]
    package.loaded["backend.tools.check"] = {
      run = function()
        return { ok = false, checks = { { name = "views", ok = false, detail = "", seconds = 0 } },
                 findings = { { check = "views", bucket = "b", key = "\255", message = "differs" } } }
      end,
      format = function() return "FAILED" end,
    }
    package.loaded["backend.tools.scenario"] = {
      random = function(o) return { seed = o.seed } end,
      run = function(s) return { ok = false, name = "random " .. s.seed, steps = 3,
                                 failures = { { step = 2, message = "get differs" } } } end,
      format = function(r) return r.name .. ": FAILED" end,
    }
    local ok, err = pcall(function()
      local db = database { k = "v" }
      assert.are.same({ 1, "FAILED\n", "" }, { main { "check", db } })
      local code, out = main { "check", "--json", db }
      assert.are.equal(1, code)
      assert.are.same({ base64 = "/w==" }, decode(out).findings[1].key)
      code, out = main { "scenario", "--random", "7" }
      assert.are.same({ 1, "random 7: FAILED\n1 scenarios, 1 failed\n" }, { code, out })
    end)
    package.loaded["backend.tools.check"], package.loaded["backend.tools.scenario"] = saved_check, saved_scenario
    assert(ok, err)
  end)

  it("scenario: a random one runs, and runs again from its dumped source", function()
    local out = expect(0, { "scenario", "--random", "42", "--ops", "50" })
    assert.truthy(out:find(": ok, %d+ steps run\n1 scenarios, 0 failed\n$"), out)
    local file = H.tmpdir() .. "/s.lua"
    H.write_file(file, expect(0, { "scenario", "--random", "42", "--ops", "50", "--dump" }))
    local results = decode(expect(0, { "scenario", "--json", file }))
    assert.is_true(results[1].ok)
    expect(2, { "scenario" })
  end)

  it("the benchmark suite (bench/bench.lua, not part of backendctl): a small run prints the table", function()
    local out = H.capture(H.lua_env() .. "lua5.4 bench/bench.lua --n 2000 --runs 1 --only w6 2>/dev/null")
    assert.truthy(out:find("| workload |", 1, true), out)
  end)

  it("the benchmark suite runs its loops against plain LMDB called from Lua too (bench/lmdb_lua.c), "
    .. "and W3b in C on our file", function()
    local build = os.getenv("BACKEND_BUILD") or "build"
    local plain, lmdb = build .. "/bench/lmdb_plain.so", build .. "/bench/lmdb_bench"
    -- the compiler must not run under the sanitizer runtime the ASan run preloads
    local made = H.capture("env -u LD_PRELOAD make --no-print-directory -s BUILD=" .. H.q(build) .. " " .. H.q(plain)
      .. " " .. H.q(lmdb) .. " 2>&1; echo \"exit=$?\"")
    assert.truthy(made:match("exit=0\n$"), made)
    -- the suite checks that LMDB read what ours read (it raises otherwise)
    local out = H.capture(H.lua_env() .. "lua5.4 bench/bench.lua --n 2000 --runs 1 --only w1,w2,w3,w3b,w4 --plain "
      .. H.q(plain) .. " --lmdb " .. H.q(lmdb) .. " 2>&1")
    local _, in_c = out:gsub("\n| W3b in C[^\n]-| [%d.]+ %[[^\n]*| [%d.]+ %[[^\n]*| [%d.]+ %[", "")
    assert.are.equal(4, in_c, out)   -- the engine's C API and the read-only backend, both heaps
    local rows = {}
    for label in out:gmatch("\n| (W[%w ]-), plain LMDB called from Lua[^\n]*ours ÷ it: [%d.]+") do
      rows[#rows + 1] = label
    end
    assert.are.same({ "W2", "W3 via get", "W3 via range", "W3b", "W4 via range" }, { table.unpack(rows, 1, 5) }, out)
    assert.are.equal(10, #rows, out)   -- both heaps
    local _, cpu_rows = out:gsub("\n| W2 CPU seconds[^\n]*plain LMDB from Lua's CPU seconds: [%d.]+", "")
    assert.are.equal(2, cpu_rows, out)
  end)

  it("a failed write to stdout or stderr is an error (exit 3), for every command", function()
    local db, dir = database { k = "v" }, H.tmpdir()
    local scenario = dir .. "/s.lua"
    H.write_file(scenario, 'return { steps = { { "create_bucket", "b" } } }')
    for _, args in ipairs {
      { "--version" }, { "--help" }, { "help", "dump" }, { "stat", "--help" },
      { "stat", db }, { "buckets", db }, { "get", db, "b", "k" }, { "dump", db }, { "hash", db },
      { "snapshot", db, dir .. "/snap" }, { "snapshot", db, "-" }, { "defrag", db }, { "check", db },
      { "import", H.fixture("tiny.db"), dir .. "/imported" }, { "export", db, dir .. "/exported" },
      { "status", H.fixture("tiny.db") },
      { "etcd", H.fixture("tiny.db"), "ls" }, { "scenario", scenario }, { "metrics", db },
      { "repl", db, stdin = "print(1)\n" },
    } do
      local out, err = expect(3, args, args.stdin, nil, ">/dev/full")
      assert.are.same({ "", "backendctl: stdout: No space left on device\n" }, { out, err }, table.concat(args, " "))
    end
    -- stderr: "not found" (exit 1) could not be said
    assert.are.same({ "", "" }, { expect(3, { "get", db, "b", "missing" }, nil, nil, "2>/dev/full") })
  end)

  it("put VALUE - reads stdin, and a failed read is an error that writes nothing", function()
    local db = database { k = "v" }
    local input = { read = function() return nil, "Input/output error", 5 end }
    local err = sink()
    assert.are.equal(3, ctl.main({ "put", db, "b", "new", "-" }, { input = input, out = sink(), err = err }))
    assert.are.equal("backendctl: stdin: Input/output error\n", err.text())
    expect(1, { "get", db, "b", "new" })
  end)

  it("snapshot DB - writes the snapshot to stdout, byte for byte; not to a terminal", function()
    local data = { ["\0\r\n\255"] = "\26\0\r\n" }
    for i = 1, 3000 do data["key" .. i] = string.rep(string.char(i % 256), i % 700) end
    local db, dir = database(data), H.tmpdir()
    local piped = dir .. "/piped"
    assert.are.same({ "", "" }, { expect(0, { "snapshot", db, "-" }, nil, nil, ">" .. H.q(piped)) })
    expect(0, { "snapshot", db, dir .. "/file" })
    assert.are.equal(H.read_file(dir .. "/file"), H.read_file(piped))
    local want, got = backend.open { path = db, readonly = true }, backend.open { path = piped, readonly = true }
    assert.are.same({ want:hash(), 3001, "\26\0\r\n" },
      { got:hash(), #got:view(function(rtx) return select(1, rtx:range("b", "", "\255", 0)) end),
        got:view(function(rtx) return rtx:get("b", "\0\r\n\255") end) })
    want:close()
    got:close()
    local _, err = expect(2, { "snapshot", "--json", db, "-" })
    assert.truthy(err:find("--json", 1, true), err)
    local out = sink()
    err = sink()
    local streams = { input = io.tmpfile(), out = out, err = err, terminal = true }
    assert.are.equal(2, ctl.main({ "snapshot", db, "-" }, streams))
    assert.are.same({ "", true }, { out.text(), err.text():find("terminal", 1, true) ~= nil })
  end)

  describe("Ctrl-C (a real SIGINT) stops the command at once: exit 130, nothing claimed", function()
    it("check: no check reported failed", function()
      local code, out, err = interrupt('require("backend.tools.check").views = function() ready() end',
        { "check", database { k = "v" } })
      assert.are.same({ 130, "", "backendctl: interrupted\n" }, { code, out, err })
    end)

    it("scenario: not a failed step, nor a failure of the model's, nor a bad file", function()
      -- a method of the binding's type, replaced in its metatable (the registry's)
      local function hook(tname, method)
        return string.format('require("backend.core"); debug.getregistry()["backend.%s"].__index.%s = '
          .. 'function() ready() end', tname, method)
      end
      local file = H.tmpdir() .. "/s.lua"
      H.write_file(file, 'return { steps = { { "create_bucket", "b" }, { "put", "b", "k", "v" } } }')
      local code, out, err = interrupt(hook("BatchTx", "put"),
        { "scenario", file })
      assert.are.same({ 130, "", "backendctl: interrupted\n" }, { code, out, err })
      code, out, err = interrupt(
        'getmetatable(require("backend.tools.model").new {}).__index.put = function() ready() end',
        { "scenario", "--random", "1", "--ops", "50" })
      assert.are.same({ 130, "", "backendctl: interrupted\n" }, { code, out, err })
      H.write_file(file, 'return { steps = { { "create_bucket", "b" }, { "error", { "put", "b", "k", "v" } } } }')
      code, out, err = interrupt(hook("BatchTx", "put"),
        { "scenario", file })   -- not the error the step expects
      assert.are.same({ 130, "", "backendctl: interrupted\n" }, { code, out, err })
      H.write_file(file, 'return { steps = { { "view", "v" } } }')   -- closed when the run ends
      code, out, err = interrupt(hook("ConcurrentReadTx", "close"),
        { "scenario", file })
      assert.are.same({ 130, "", "backendctl: interrupted\n" }, { code, out, err })
      H.write_file(file, 'error("interrupted!", 0)')   -- what an interrupt raises, from the file's chunk
      assert.are.same({ "", "backendctl: interrupted\n" }, { expect(130, { "scenario", file }) })
    end)

    it("dump of an etcd file, in the bbolt reader's walk", function()
      local code, out, err = interrupt('require("dkjson").encode = function() ready() end',
        { "dump", "--format", "json", H.fixture("tiny.db") })
      assert.are.same({ 130, "", "backendctl: interrupted\n" }, { code, out, err })
    end)

    it("repl with piped input: not an error of the statement running", function()
      local code, out, err = interrupt("", { "repl", database { k = "v" } }, "ready()\nprint('after')\n")
      assert.are.same({ 130, "", "backendctl: interrupted\n" }, { code, out, err })
    end)
  end)

  describe("repl", function()
    it("reads piped input: expressions, statements, multi-line chunks, the helpers and etcd", function()
      -- an etcd file is imported into a temporary database first
      local out = expect(0, { "repl", H.fixture("tiny.db") }, table.concat({
        "print(#buckets())",
        "etcd:get('/tiny/key3').value",
        "for i = 1, 2 do",
        "  print(i)",
        "end",
        "x = 20",
        "x + 1",
        "hash()",
      }, "\n") .. "\n")
      assert.are.equal('10\n"value-3"\n1\n2\n21\n682480678\t"28add426"\n', out)
      local tiny = H.tmppath()
      backend.import_bolt(H.fixture("tiny.db"), tiny)
      local err
      out, err = expect(3, { "repl", tiny }, "be:update(function(tx) tx:put('key', 'k', 'v') end)\nprint('after')\n")
      assert.are.equal("after\n", out)
      assert.truthy(err:find("read-only", 1, true), err)
      assert.are.equal("0\n1\n", expect(0, { "repl", "--write", tiny },
        "be:update(function(tx) tx:create_bucket('new') end)\nprint(#scan('new'))\n"
        .. "be:update(function(tx) tx:put('new', 'k', 'v') end)\nprint(#scan('new'))\n"))
      assert.are.equal("0\n", expect(0, { "repl" }, "print(#buckets())\n"))   -- a temporary database
    end)

    it("pages through a bucket with scan() and more(), escaping and truncating", function()
      local be <close> = backend.open_tmp()
      be:update(function(tx)
        tx:create_bucket("b")
        for i = 1, 5 do tx:put("b", "k" .. i, "v" .. i) end
        tx:put("b", "z\0", string.rep("x", 100))
      end)
      local errors, out = repl.run(be, "scan('b', 2)\nmore()\nmore()\nmore()\nmore()\nget('b', 'z\\0')\n")
      assert.are.equal(0, errors)
      assert.are.equal(table.concat({
        "k1  v1\nk2  v2\n-- more() for the next 2",
        "k3  v3\nk4  v4\n-- more() for the next 2",
        "k5     v5\nz\\x00  " .. string.rep("x", 60) .. "… (100 bytes)",
        "(no entries)", "(no entries)",
        '"' .. string.rep("x", 60) .. '… (100 bytes)"', "",
      }, "\n"), out)
      local h = repl.helpers(be)
      assert.is_nil(h.etcd)   -- no etcd data here
      assert.are.same({ "k5", "z\0" }, { h.scan("b", "k5")[1].key, h.scan("b", "k5")[2].key })
      assert.truthy(tostring(h.stat()):find("\nb +6 "))
      errors, out = repl.run(be, "local t = {\n1,\n2 }  return #t\nnosuch()\n")
      assert.are.equal(1, errors)
      assert.truthy(out:find("^2\nstdin:1: attempt to call a nil value %(global 'nosuch'%)\n$"), out)
    end)

    -- backendctl repl ARGS on a terminal of its own (script(1)): what is written to the
    -- returned file is typed; wait_for(text) waits for text in what it shows after what
    -- was waited for before; pid() is the REPL's process id.
    local function repl_on_terminal(args)
      local dir = H.tmpdir()
      local pidfile, outfile = dir .. "/pid", dir .. "/out"
      H.write_file(outfile, "")
      -- Under ASan (make asan) script's own leaks are not ours: only the REPL's count.
      local asan = os.getenv("ASAN_OPTIONS")
      local inner = (asan and "export ASAN_OPTIONS=" .. H.q(asan) .. "; " or "") .. "echo $$ >" .. H.q(pidfile)
        .. "; exec " .. command_line(args)
      local term = assert(io.popen(H.lua_env() .. "export ASAN_OPTIONS=detect_leaks=0; " .. TIMEOUT
        .. "script -q -e -c " .. H.q(inner) .. " /dev/null >" .. H.q(outfile), "w"))
      term:setvbuf("no")
      local seen = 0   -- the output is read up to here
      local function wait_for(text)
        local at
        local found = H.wait_until(function()
          at = select(2, H.read_file(outfile):find(text, seen + 1, true))
          return at ~= nil
        end, 30)
        assert(found, string.format("no %q after %q", text, H.read_file(outfile):sub(1, seen)))
        seen = at
      end
      local function pid() return math.tointeger(tonumber(H.read_file(pidfile))) end
      return term, wait_for, pid, outfile
    end

    it("on a terminal (--plain), Ctrl-C cancels the line typed or the statement running, and Ctrl-D ends it", function()
      local term, wait_for, repl_pid, outfile = repl_on_terminal { "repl", "--plain", database { k = "v" } }
      wait_for("> ")
      local pid = repl_pid()
      H.kill(pid, "INT")                      -- at the prompt
      wait_for("\r\n> ")
      term:write("print(6 * 7)\n")
      wait_for("42\r\n> ")
      term:write("error('typed')\3")          -- half a line, then Ctrl-C on the terminal
      wait_for("> ")
      term:write("for i = 1, 2 do\n")         -- a chunk that wants more
      wait_for(">> ")
      term:write("\3")
      wait_for("> ")
      term:write("print('spinning') while true do end\n")
      wait_for("spinning\r\n")
      H.kill(pid, "INT")                      -- a statement running
      wait_for("interrupted\r\n> ")
      H.kill(pid, "INT")                      -- and again: each Ctrl-C is caught
      wait_for("\r\n> ")
      term:write("print('still here')\n")
      wait_for("still here\r\n> ")
      term:write("\4")                        -- Ctrl-D
      local _, _, code = term:close()
      local all = H.read_file(outfile)
      assert.are.equal(0, code, all)
      assert.falsy(all:find("stdin:1: typed", 1, true), all)   -- the cancelled lines never ran
      assert.falsy(all:find("expected", 1, true), all)
    end)

    it("with lua-readline: the up arrow brings the last line back, a line with Ctrl-C is not run", function()
      if not pcall(require, "readline") then
        pending("lua-readline is not installed (Debian: lua-readline): the REPL reads plain lines")
        return
      end
      local term, wait_for, _, outfile = repl_on_terminal { "repl", database { k = "v" } }
      wait_for("> ")
      term:write("print(6 * 7)\n")
      wait_for("42\r\n")
      term:write("\27[A\n")                  -- up arrow, Enter: the same line again
      wait_for("42\r\n")
      term:write("error('typed')\3")         -- Ctrl-C, then Enter: the line is dropped
      wait_for("^C")
      term:write("\n")
      wait_for("the line was not run")
      term:write("print('next')\n")
      wait_for("next\r\n")
      term:write("print('spinning') while true do end\n")   -- Ctrl-C stops a statement, as without readline
      wait_for("spinning\r\n")
      term:write("\3")
      wait_for("interrupted\r\n")
      term:write("print('still here')\n")
      wait_for("still here\r\n")
      term:write("\4")
      local _, _, code = term:close()
      local all = H.read_file(outfile)
      assert.are.equal(0, code, all)
      assert.falsy(all:find("stdin:1: typed", 1, true), all)
    end)
  end)
end)
