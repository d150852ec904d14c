--- An order-free digest of a database's contents (buckets, keys, values), the
-- same whether computed from the workload's model or read back from a file:
-- the sum, modulo 2^64, of a 64-bit hash of each bucket and of each entry,
-- with the number of entries. Two CRC-32Cs make each 64-bit hash.
local backend = require "backend"

local crc = backend.crc32c
local digest = {}

local function h(s)
  return (crc(s) << 32) | crc(s, 0x5bd1e995)
end

local function item(b, k, v)
  return h(string.pack("s4s4s4", b, k, v))
end

local function bucket(b)
  return h(string.pack("s4", b))
end

local function text(sum, n)
  return string.format("%016x.%d", sum, n)
end

--- Of a model: { bucket = { key = value } }.
function digest.of(model)
  local sum, n = 0, 0
  for b, kv in pairs(model) do
    sum = sum + bucket(b)
    for k, v in pairs(kv) do
      sum, n = sum + item(b, k, v), n + 1
    end
  end
  return text(sum, n)
end

--- Of an open backend, read through a view.
function digest.read(be)
  local sum, n = 0, 0
  be:view(function(rtx)
    for _, b in ipairs(rtx:buckets()) do
      sum = sum + bucket(b)
      for k, v in rtx:pairs(b) do sum, n = sum + item(b, k, v), n + 1 end
    end
  end)
  return text(sum, n)
end

--- Of an etcd (bbolt) file opened with backend.open_bolt.
function digest.bolt(f)
  local sum, n = 0, 0
  f:walk(function(path) sum = sum + bucket(path) end,
    function(b, k, v) sum, n = sum + item(b, k, v), n + 1 end)
  return text(sum, n)
end

return digest
