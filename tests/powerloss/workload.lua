--- The recorded workload: run under the plrec.so recorder with PLREC_DIR set to
-- `dir`. It drives the public API through every operation that writes files
-- (commits by limit and by interval, map growth, force_commit, a snapshot
-- write_to, defrag, online defrags while writing, export_bolt, import_bolt,
-- close) and leaves marks in the recorder's log (an fopen of "plrec-mark:..." that the recorder answers):
--   phase NAME            the operation the following calls belong to
--   hist K DIGEST         the data after section K (0: before any)
--   begin K               section K starts: no commit can hold a later one
--   ack K                 a call returned that made sections 1..K durable
--   file REL DIGEST HASH  a database file reported complete (snapshot, import)
--   bolt REL DIGEST HASH  an etcd file reported complete (export)
--   name REL              the name REL was just (re)bound: a defrag's swap
--   job start|copied      an online defrag is started, its copy seen complete
--                         (job:progress()); "name db" once it reported complete
-- The digests are digest.lua's, of the model the workload keeps itself.
local backend = require "backend"
local digest = require "digest"

local workload = {}

local function mark(text)
  local f = io.open("plrec-mark:" .. text, "r")   -- answered by the recorder
  if f then
    f:close()
    error("no recorder: a mark opened a file")
  end
end

--- Runs the workload in dir (absolute); small: a shorter run (the smoke test).
function workload.run(dir, seed, small)
  math.randomseed(seed)
  local rounds = small and 12 or 40
  local model, k = {}, 0
  local keys = { "alpha", "beta" }
  mark("hist 0 " .. digest.of(model))

  -- One section of 1..4 random puts and deletes (or creating the buckets).
  local function section(be, first)
    k = k + 1
    mark("begin " .. k)
    be:update(function(tx)
      if first then
        for _, b in ipairs(keys) do tx:create_bucket(b); model[b] = {} end
      end
      for _ = 1, math.random(4) do
        local b = keys[math.random(#keys)]
        local key = string.format("k%03d", math.random(small and 20 or 60))
        if model[b][key] and math.random() < 0.3 then
          tx:delete(b, key)
          model[b][key] = nil
        else
          -- mostly small values; some span several pages (overflow pages)
          local n = math.random() < 0.1 and math.random(4000, 9000) or math.random(1, 300)
          local v = string.rep(string.char(math.random(65, 90)), n) .. k
          tx:put(b, key, v)
          model[b][key] = v
        end
      end
    end)
    mark(string.format("hist %d %s", k, digest.of(model)))
  end

  local function writes(be, n)
    mark("phase writes")
    for i = 1, n do
      section(be)
      if i % 7 == 0 then
        be:force_commit()
        mark("ack " .. k)
      elseif i % 5 == 0 then   -- let the interval commit run
        local t = backend.monotonic() + 0.004
        repeat until backend.monotonic() > t
      end
    end
  end

  local path = dir .. "/db"
  mark("phase create")
  -- a small map that the writes outgrow; commits by limit (8) and interval
  local be = backend.open { path = path, batch_interval = 0.002, batch_limit = 8,
                            mmap_size = 64 << 10 }
  section(be, true)
  be:force_commit()
  mark("ack " .. k)
  writes(be, rounds)

  mark("phase snapshot")
  local snap = be:snapshot()
  snap:write_to(dir .. "/snap.db")
  snap:close()
  mark(string.format("ack %d", k))
  mark(string.format("file snap.db %s %d", digest.of(model), be:hash()))
  writes(be, rounds)

  mark("phase defrag")
  be:defrag()
  mark("ack " .. k)
  mark("name db")
  writes(be, rounds)

  -- online defrags: sections written, some acknowledged, while each job runs
  mark("phase online")
  for _ = 1, small and 1 or 2 do
    mark("job start")   -- before: its thread may make files before the call returns
    local job = be:defrag { background = true }
    local copied, i = false, 0
    repeat
      i = i + 1
      section(be)
      if i % 2 == 0 then
        be:force_commit()
        mark("ack " .. k)
      end
      if not copied then
        local done, total = job:progress()
        copied = total > 0 and done == total
        if copied then mark("job copied") end
      end
    until job:done()
    job:wait()
    job:close()
    mark("name db")
    writes(be, 3)
    mark("phase online")
  end

  mark("phase export")
  local ex = backend.export_bolt(be, dir .. "/export.bolt")
  mark(string.format("ack %d", k))
  mark(string.format("bolt export.bolt %s %d", digest.of(model), ex.hash))
  local exported = digest.of(model)
  writes(be, rounds // 2)

  mark("phase import")
  local im = backend.import_bolt(dir .. "/export.bolt", dir .. "/imported.db")
  mark(string.format("file imported.db %s %d", exported, im.hash))
  writes(be, rounds // 2)

  mark("phase close")
  local grows = be:stats().map_grows
  be:close()
  mark("ack " .. k)
  return { sections = k, map_grows = grows }
end

return workload
