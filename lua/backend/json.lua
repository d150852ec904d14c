--- Minimal JSON encoding for log lines and tool output: strings (any bytes,
-- escaped as \u00XX), numbers, booleans, arrays and string-keyed tables.
local json = {}

local escapes = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

local function encode_string(s)
  return '"' .. s:gsub('[%c"\\\128-\255]', function(c)
    return escapes[c] or string.format("\\u%04x", c:byte())
  end) .. '"'
end

local function encode(v, out)
  local t = type(v)
  if t == "string" then
    out[#out + 1] = encode_string(v)
  elseif t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then
      out[#out + 1] = "null"   -- JSON has no NaN or infinity
    else
      out[#out + 1] = math.type(v) == "integer" and tostring(v) or string.format("%.17g", v)
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

return json
