-- etcd 3.4's read-buffer bugs, as a scenario (spec/etcd_buffer_bugs_spec.lua has
-- them at length): every read is made through the BatchTx, the shared ReadTx and
-- a new ConcurrentReadTx, before and after the commit.
local steps = {}

local function add(step) steps[#steps + 1] = step end

-- step through each reader, then the same after a force_commit
local function everywhere(step)
  for _, phase in ipairs { "buffered", "committed" } do
    if phase == "committed" then add { "force_commit" } end
    for _, via in ipairs { "batch", "read", "concurrent" } do
      local s = {}
      for k, v in pairs(step) do s[k] = v end
      s.via = via
      add(s)
    end
  end
end

-- #17158: a delete is seen by every reader before the commit
add { "create_bucket", "auth" }
add { "put", "auth", "k", "v" }
add { "put", "auth", "l", "w" }
add { "force_commit" }
add { "delete", "auth", "k" }
add { "get", "auth", "k", via = "committed", expect = "v" }   -- still in LMDB
everywhere { "get", "auth", "k", expect = false }
everywhere { "pairs", "auth", expect = { { "l", "w" } } }
add { "get", "auth", "k", via = "committed", expect = false }

-- a limit across committed and buffered keys returns the first N (etcd: [06, 07])
add { "create_bucket", "key" }
for i = 1, 5 do add { "put", "key", string.format("%02d", i), "c" .. i } end
add { "force_commit" }
for i = 6, 8 do add { "put", "key", string.format("%02d", i), "b" .. i } end
everywhere { "range", "key", "00", "99", 2, expect = { { "01", "c1" }, { "02", "c2" } } }
everywhere { "range", "key", "04", "99", 3, expect = { { "04", "c4" }, { "05", "c5" }, { "06", "b6" } } }

-- a limit on a bucket other than 'key' (etcd panics)
add { "create_bucket", "test" }
for i = 1, 5 do add { "put", "test", "k" .. i, "v" .. i } end
everywhere { "range", "test", "k1", "k9", 3, expect = { { "k1", "v1" }, { "k2", "v2" }, { "k3", "v3" } } }
everywhere { "range", "test", "k1", "", 0, expect = {} }

-- unsorted puts into a bucket new to the buffer stay findable (bug a)
add { "lock" }
add { "create_bucket", "new" }
for _, k in ipairs { "foo5", "foo2", "foo1", "foo3", "foo", "foo4" } do add { "put", "new", k, "v" .. k } end
add { "unlock" }
for _, k in ipairs { "foo", "foo1", "foo2", "foo3", "foo4", "foo5" } do
  everywhere { "get", "new", k, expect = "v" .. k }
end

-- #21986: a key written twice in one section reads the newest value (bug b)
add { "lock" }
add { "create_bucket", "twice" }
add { "put", "twice", "k", "old" }
add { "put", "twice", "j", "x" }
add { "put", "twice", "k", "new" }
add { "get", "twice", "k", expect = "new" }   -- the section's own writes, before unlock
add { "get", "twice", "k", via = "read", expect = false }
add { "unlock" }
everywhere { "for_each", "twice", expect = { { "j", "x" }, { "k", "new" } } }

-- #12587: no stale slot past the end of the buffer (case c)
add { "create_bucket", "stale" }
add { "put", "stale", "a", "a0" }
add { "put", "stale", "k", "k0" }
add { "force_commit" }
add { "put", "stale", "k", "k1" }
add { "force_commit" }
add { "put", "stale", "a", "a2" }
everywhere { "get", "stale", "k", expect = "k1" }   -- etcd 3.4's ReadTx gave k0

return {
  name = "etcd 3.4 read-buffer bugs",
  config = { batch_interval = 3600 },
  steps = steps,
}
