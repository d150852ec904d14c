--- backend.idioms: the Lua idioms of the C types, written against their
-- public methods only. The binding (backend.core) installs each as a method
-- of its type at load, wrapped in C that checks self and the arguments, so
-- these functions get checked values.
local idioms = {}

local function rethrow(ok, ...)
  if not ok then error((...), 0) end
  return ...
end

-- update's guard: rolls the section back unless fn returned, however its
-- scope is left (an error, or coroutine.close on a suspended fn). The
-- BatchTx's own __close, given an error, rolls back only a section that
-- this coroutine holds and that is still open.
local Section = { __close = function(guard)
  if guard.tx then getmetatable(guard.tx).__close(guard.tx, "rolled back") end
end }

--- be:update(fn): lock(), fn(tx), unlock() if fn returns: all or nothing.
-- When fn raises (or its coroutine is closed), the section is rolled back;
-- errors re-raised.
function idioms.update(be, fn)
  local tx = be:batch_tx():lock()
  local guard <close> = setmetatable({ tx = tx }, Section)
  local results = table.pack(fn(tx))
  guard.tx = nil
  getmetatable(tx).__close(tx, nil)   -- unlocks, unless fn ended its section itself
  return table.unpack(results, 1, results.n)
end

--- be:view(fn): fn(rtx) on a concurrent read tx that is closed afterwards,
-- even on error.
function idioms.view(be, fn)
  local rtx = be:concurrent_read_tx()
  local results = table.pack(pcall(fn, rtx))
  rtx:close()
  return rethrow(table.unpack(results, 1, results.n))
end

--- be:metrics(): Prometheus text exposition of the backend's metrics.
function idioms.metrics(be)
  return require("backend.metrics").text(be:stats())
end

--- tx:for_each(bucket, fn): fn(k, v) for every key of the bucket, in order
-- (pairs reads in chunks).
function idioms.for_each(tx, bucket, fn)
  for k, v in tx:pairs(bucket) do fn(k, v) end
end

return idioms
