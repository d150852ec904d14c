-- Fails when the rockspec drifts from the tree: backend.core's sources must be
-- exactly csrc/*/*.c, and the Lua modules exactly lua/backend/**/*.lua.
-- Usage: lua5.4 scripts/rockspec-check.lua rockspec/backend-scm-1.rockspec
local path = assert(arg[1], "usage: rockspec-check.lua ROCKSPEC")
local spec = {}
assert(loadfile(path, "t", spec))()

local function set_of(list)
   local s = {}
   for _, v in ipairs(list) do s[v] = true end
   return s
end

-- The lines a shell command prints.
local function lines(command)
   local out = {}
   local p = assert(io.popen(command .. " 2>/dev/null"))
   for line in p:lines() do out[#out + 1] = line end
   p:close()
   return out
end

local function compare(what, declared, actual)
   local ok, d, a = true, set_of(declared), set_of(actual)
   for _, f in ipairs(actual) do
      if not d[f] then print(path .. ": " .. what .. ": missing " .. f); ok = false end
   end
   for _, f in ipairs(declared) do
      if not a[f] then print(path .. ": " .. what .. ": no such file " .. f); ok = false end
   end
   return ok
end

local modules = spec.build.modules
local lua_files, names_ok = {}, true
for name, m in pairs(modules) do
   if type(m) == "string" then
      lua_files[#lua_files + 1] = m
      local want = name == "backend" and "lua/backend/init.lua" or "lua/" .. name:gsub("%.", "/") .. ".lua"
      if m ~= want then print(path .. ": module " .. name .. " should be " .. want); names_ok = false end
   elseif name ~= "backend.core" then lua_files[#lua_files + 1] = "<C module " .. name .. ">" end
end
local ok1 = compare("backend.core sources", modules["backend.core"].sources, lines("ls -1 csrc/*/*.c"))
local ok2 = compare("Lua modules", lua_files, lines("find lua/backend -name '*.lua'"))
if not (ok1 and ok2 and names_ok) then os.exit(1) end
print(path .. ": in step with csrc/*/*.c and lua/backend/**/*.lua")
