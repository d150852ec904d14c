--- Minimal JSON encoding for log lines and tool output: strings, numbers,
-- booleans, arrays and string-keyed tables. A string that is valid UTF-8 is
-- written as text; any other string has its bytes >= 0x80 escaped one by one
-- as \u00XX, so the output is always valid JSON. `json.bytes` marks byte
-- strings that must come back exactly.
local json = {}

local escapes = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

local function encode_string(s)
  local special = utf8.len(s) and '[%c"\\]' or '[%c"\\\128-\255]'
  return '"' .. s:gsub(special, function(c)
    return escapes[c] or string.format("\\u%04x", c:byte())
  end) .. '"'
end

-- The shortest of %.15g, %.16g, %.17g that reads back as v (0.004, not 0.0040000000000000001).
local function shortest(v)
  local s
  for digits = 15, 17 do
    s = string.format("%." .. digits .. "g", v)
    if tonumber(s) == v then break end
  end
  return s
end

local function encode(v, out)
  local t = type(v)
  if t == "string" then
    out[#out + 1] = encode_string(v)
  elseif t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then
      out[#out + 1] = "null"   -- JSON has no NaN or infinity
    else
      out[#out + 1] = math.type(v) == "integer" and tostring(v) or shortest(v)
    end
  elseif t == "boolean" or t == "nil" then
    out[#out + 1] = tostring(v == nil and "null" or v)
  elseif t == "table" then
    if #v > 0 or next(v) == nil then
      out[#out + 1] = "["
      for i, x in ipairs(v) do
        if i > 1 then out[#out + 1] = "," end
        encode(x, out)
      end
      out[#out + 1] = "]"
    else
      local keys = {}
      for k in pairs(v) do
        if type(k) ~= "string" then error("json: object keys must be strings", 0) end
        keys[#keys + 1] = k
      end
      table.sort(keys)   -- stable output
      out[#out + 1] = "{"
      for i, k in ipairs(keys) do
        if i > 1 then out[#out + 1] = "," end
        out[#out + 1] = encode_string(k) .. ":"
        encode(v[k], out)
      end
      out[#out + 1] = "}"
    end
  else
    error("json: cannot encode a " .. t, 0)
  end
end

--- Encode a value as one line of JSON.
function json.encode(v)
  local out = {}
  encode(v, out)
  return table.concat(out)
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

--- Standard base64 (RFC 4648, padded), as Go's encoding/json writes []byte.
function json.base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = (a << 16) | ((b or 0) << 8) | (c or 0)
    local quad = {}
    for j = 1, 4 do
      local sextet = (n >> (6 * (4 - j))) & 63
      quad[j] = B64:sub(sextet + 1, sextet + 1)
    end
    if not c then quad[4] = "=" end
    if not b then quad[3] = "=" end
    out[#out + 1] = table.concat(quad)
  end
  return table.concat(out)
end

--- A byte string as tool output gives it: the string itself when it is valid
-- UTF-8, otherwise { base64 = "..." }, so that any key or value round-trips.
function json.bytes(s)
  if utf8.len(s) then return s end
  return { base64 = json.base64(s) }
end

return json
