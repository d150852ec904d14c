package = "backend"
version = "scm-1"
source = {
   url = "git+file://.",
}
description = {
   summary = "etcd's MVCC storage backend, rebuilt in C on LMDB, for Lua 5.4",
   detailed = [[
      The batch-transaction storage backend of etcd (buckets, batched writes with a
      commit timer, buffered reads, snapshots, defragmentation, CRC-32C hash),
      implemented in C on LMDB and exported to Lua 5.4 as require "backend".
      Build it for Lua 5.4 (Debian 12's luarocks defaults to 5.1):
        luarocks --lua-version 5.4 make rockspec/backend-scm-1.rockspec
   ]],
   -- Licence not decided yet; etcd's own is Apache-2.0. `luarocks lint` requires the field.
   license = "Apache-2.0",
}
-- Only what luarocks satisfies without its registry: Lua itself. LMDB and
-- nettle are system libraries (Debian: liblmdb-dev, nettle-dev), and the Lua
-- libraries the tools use come from Debian packages (README, "Quick start";
-- scripts/install-deps installs them all).
dependencies = {
   "lua >= 5.4, < 5.5",
}
external_dependencies = {
   LMDB = {
      header = "lmdb.h",
      library = "lmdb",
   },
   NETTLE = {
      header = "nettle/sha2.h",
      library = "nettle",
   },
}
build = {
   type = "builtin",
   modules = {
      ["backend.core"] = {
         sources = {
            "csrc/bolt/bolt_import.c",
            "csrc/bolt/bolt_read.c",
            "csrc/bolt/bolt_write.c",
            "csrc/core/backend.c",
            "csrc/core/batch.c",
            "csrc/core/bucket.c",
            "csrc/core/children.c",
            "csrc/core/committer.c",
            "csrc/core/crc32c.c",
            "csrc/core/defrag.c",
            "csrc/core/env.c",
            "csrc/core/files.c",
            "csrc/core/handle.c",
            "csrc/core/hash.c",
            "csrc/core/memtable.c",
            "csrc/core/mdbenv.c",
            "csrc/core/meta.c",
            "csrc/core/read.c",
            "csrc/core/reaper.c",
            "csrc/core/snapshot.c",
            "csrc/core/stats.c",
            "csrc/core/util.c",
            "csrc/core/version.c",
            "csrc/lua/backend_ud.c",
            "csrc/lua/boltfile.c",
            "csrc/lua/common.c",
            "csrc/lua/crt.c",
            "csrc/lua/defrag.c",
            "csrc/lua/interrupt.c",
            "csrc/lua/logs.c",
            "csrc/lua/module.c",
            "csrc/lua/rows.c",
            "csrc/lua/snapshot.c",
            "csrc/lua/tx.c",
         },
         defines = { "_GNU_SOURCE" },
         libraries = { "lmdb", "nettle", "pthread" },
         incdirs = { "csrc", "$(LMDB_INCDIR)", "$(NETTLE_INCDIR)" },
         libdirs = { "$(LMDB_LIBDIR)", "$(NETTLE_LIBDIR)" },
      },
      backend = "lua/backend/init.lua",
      ["backend.idioms"] = "lua/backend/idioms.lua",
      ["backend.etcd"] = "lua/backend/etcd.lua",
      ["backend.metrics"] = "lua/backend/metrics.lua",
      -- the tools' old names, kept for one release
      ["backend.check"] = "lua/backend/check.lua",
      ["backend.ctl"] = "lua/backend/ctl.lua",
      ["backend.model"] = "lua/backend/model.lua",
      ["backend.repl"] = "lua/backend/repl.lua",
      ["backend.scenario"] = "lua/backend/scenario.lua",
      ["backend.tools.check"] = "lua/backend/tools/check.lua",
      ["backend.tools.ctl"] = "lua/backend/tools/ctl.lua",
      ["backend.tools.model"] = "lua/backend/tools/model.lua",
      ["backend.tools.repl"] = "lua/backend/tools/repl.lua",
      ["backend.tools.scenario"] = "lua/backend/tools/scenario.lua",
   },
   install = {
      bin = { backendctl = "bin/backendctl" },
   },
}
