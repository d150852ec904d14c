-- Fails when the C layers blur: the core's files must call each other without
-- a circle, the core must not use bolt or the binding, bolt may use only what
-- csrc/core/backend.h and csrc/core/util.h declare, and only csrc/core includes
-- <lmdb.h>, only csrc/lua the Lua headers. The calls are read from the objects
-- (nm: defined against undefined global symbols), so they are what links.
-- Usage: lua5.4 scripts/layers-check.lua BUILD   (after `make all`)
local build = assert(arg[1], "usage: layers-check.lua BUILD")
local layers = { "core", "bolt", "lua" }
local failures = 0

local function fail(fmt, ...)
   print("layers-check: " .. string.format(fmt, ...))
   failures = failures + 1
end

local function lines(cmd)
   local out, p = {}, assert(io.popen(cmd))
   for line in p:lines() do out[#out + 1] = line end
   p:close()
   return out
end

-- Each object's file name (core/env), what it defines and what it uses.
local files, owner = {}, {}
for _, layer in ipairs(layers) do
   for _, obj in ipairs(lines("ls -1 " .. build .. "/obj/" .. layer .. "/*.o 2>/dev/null")) do
      local f = { name = layer .. "/" .. obj:match("([^/]+)%.o$"), layer = layer, uses = {} }
      for _, line in ipairs(lines("nm -g " .. obj)) do
         local kind, sym = line:match("%s(%a)%s+(%S+)$")
         if kind == "U" then
            f.uses[#f.uses + 1] = sym
         elseif kind then
            owner[sym] = f.name
         end
      end
      files[#files + 1] = f
   end
end
if #files == 0 then
   fail("no objects under %s/obj: run `make all` first", build)
   os.exit(1)
end

-- The symbols bolt may use: those the two headers name.
local public = {}
for _, h in ipairs({ "csrc/core/backend.h", "csrc/core/util.h" }) do
   local fh = io.open(h)
   if fh then
      for id in fh:read("a"):gmatch("[%a_][%w_]*") do public[id] = true end
      fh:close()
   else
      fail("%s is missing", h)
   end
end

-- The file graph, and the layer rules on each edge.
local deps, byname = {}, {}
for _, f in ipairs(files) do
   byname[f.name] = f
   local set = {}
   for _, sym in ipairs(f.uses) do
      local to = owner[sym]
      if to and to ~= f.name then
         local layer = to:match("^(%a+)/")
         set[to] = true
         if f.layer == "core" and layer ~= "core" then
            fail("%s uses %s of %s: the core uses no other layer", f.name, sym, to)
         elseif f.layer == "bolt" and layer == "core" and not public[sym] then
            fail("%s uses %s of %s, which neither backend.h nor util.h declares", f.name, sym, to)
         elseif f.layer == "bolt" and layer == "lua" then
            fail("%s uses %s of %s: bolt does not use the binding", f.name, sym, to)
         end
      end
   end
   local list = {}
   for to in pairs(set) do list[#list + 1] = to end
   table.sort(list)
   deps[f.name] = list
end

-- A circle among the core's files: depth-first, reporting each one found.
local state, stack = {}, {}
local function visit(name)
   state[name] = "open"
   stack[#stack + 1] = name
   for _, to in ipairs(deps[name]) do
      if byname[to].layer == "core" then
         if state[to] == "open" then
            local i = #stack
            while stack[i] ~= to do i = i - 1 end
            fail("call circle: %s -> %s", table.concat(stack, " -> ", i), to)
         elseif not state[to] then
            visit(to)
         end
      end
   end
   stack[#stack] = nil
   state[name] = "done"
end
for _, f in ipairs(files) do
   if f.layer == "core" and not state[f.name] then visit(f.name) end
end

-- Headers: <lmdb.h> in the core only, Lua's in the binding only.
local function includers(pattern)
   return lines("grep -rlE '#[[:space:]]*include[[:space:]]*<(" .. pattern .. ")>' csrc")
end
for _, path in ipairs(includers("lmdb\\.h")) do
   if not path:match("^csrc/core/") then fail("%s includes <lmdb.h>: only csrc/core may", path) end
end
for _, path in ipairs(includers("lua\\.h|lauxlib\\.h|lualib\\.h")) do
   if not path:match("^csrc/lua/") then fail("%s includes a Lua header: only csrc/lua may", path) end
end
for _, path in ipairs(lines("grep -rlE '#[[:space:]]*include[[:space:]]*\"(core/)?internal\\.h\"' csrc")) do
   if not path:match("^csrc/core/") then fail("%s includes internal.h: only csrc/core may", path) end
end

-- The graph, each file after what it uses (core first).
local order, placed = {}, {}
local function place(name)
   if placed[name] then return end
   placed[name] = true
   for _, to in ipairs(deps[name]) do place(to) end
   order[#order + 1] = name
end
for _, f in ipairs(files) do place(f.name) end
if os.getenv("LAYERS_VERBOSE") or failures > 0 then
   for _, name in ipairs(order) do
      print(string.format("  %-18s -> %s", name, table.concat(deps[name], " ")))
   end
end
if failures > 0 then
   print(string.format("layers-check: %d problem(s)", failures))
   os.exit(1)
end
print(string.format("layers-check: %d objects, the core's file graph is acyclic, layers hold", #files))
