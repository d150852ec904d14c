--- The crash states a power cut could leave, from a plrec.c log, in the POSIX
-- persistence model of Pillai et al. (OSDI 2014):
-- * a file's bytes written before its last fsync/fdatasync are on disk, and a
--   write on an O_DSYNC descriptor once it returned; any subset of the later
--   writes (and ftruncates) may be there too, applied in the order made (the
--   newest bytes of a sector win), each write torn at 512-byte sectors;
-- * a directory's names as of its last fsync are on disk, and any subset of
--   its later creates, links, unlinks, renames, mkdirs and rmdirs; a rename
--   within a directory is atomic, one across directories is two independent
--   changes (the entry in each);
-- * the call in flight at the cut may be there in part too.
-- A crash point c is the moment before event c (1-based); its pending units
-- are what may or may not be there. A lock file ("*-lock") is left out: LMDB
-- rebuilds it at open.
local M = { SECTOR = 512 }

local function dirname(p)
  return p:match("^(.*)/[^/]*$") or "."
end

--- Parses a log (its text) into events; blob: the .data file's content.
function M.parse(text, blob)
  local ev = {}
  for line in text:gmatch("[^\n]+") do
    local tag, rest = line:match("^(%S+) ?(.*)$")
    local e = { tag = tag }
    if tag == "W" or tag == "WD" then
      local ino, off, len, pos = rest:match("^(%d+) (%d+) (%d+) (%d+)$")
      e.ino, e.off, e.len, e.pos = ino, tonumber(off), tonumber(len), tonumber(pos)
      e.data = blob:sub(e.pos + 1, e.pos + e.len)
      assert(#e.data == e.len, "the log's data file is short")
    elseif tag == "C" then
      e.ino, e.path = rest:match("^(%d+) (.+)$")
    elseif tag == "T" then
      local ino, size = rest:match("^(%d+) (%d+)$")
      e.ino, e.size = ino, tonumber(size)
    elseif tag == "S" then
      e.ino = rest
    elseif tag == "SD" or tag == "U" or tag == "MK" or tag == "RD" then
      e.path = rest
    elseif tag == "R" or tag == "L" then
      e.from, e.to = rest:match("^(%S+) (%S+)$")
    elseif tag == "M" then
      e.text = rest
    elseif tag == "X" then
      e.text = rest
    else
      error("unknown log event: " .. line)
    end
    ev[#ev + 1] = e
  end
  return ev
end

local function is_lock(path)
  return path:sub(-5) == "-lock"
end

--- Builds the history from events: files (vnodes: an inode number may be
-- reused), data units and name changes, each with `at` (its event) and
-- `durable` (the event after which it is on disk for sure, or nil).
-- Refuses a log with what the model does not cover.
function M.build(ev)
  local h = { ev = ev, units = {}, names = {}, marks = {}, vnodes = {} }
  local cur = {}            -- inode number -> vnode
  local open = {}           -- vnode -> its units not yet synced
  local live = { ["."] = "dir" }   -- name -> vnode or "dir", as the calls left them
  local dirops = {}         -- dir -> its name changes not yet synced
  local function vnode(ino, path)
    local v = { id = #h.vnodes + 1, path = path, lock = is_lock(path) }
    h.vnodes[v.id] = v
    cur[ino] = v
    open[v] = {}
    return v
  end
  local function unit(u)
    h.units[#h.units + 1] = u
    local list = open[u.v]
    list[#list + 1] = u
  end
  local function name(n)
    n.dir = n.dir or dirname(n.name)
    h.names[#h.names + 1] = n
    dirops[n.dir] = dirops[n.dir] or {}
    table.insert(dirops[n.dir], n)
  end
  for i, e in ipairs(ev) do
    local t = e.tag
    if t == "X" then
      local path = e.text:match("^mmap%-shared%-writable %d+ (.+)$")
      if not (path and is_lock(path)) then error("event " .. i .. ": the model does not cover: " .. e.text) end
    elseif t == "C" then
      local v = vnode(e.ino, e.path)
      name { at = i, kind = "add", name = e.path, v = v }
      live[e.path] = v
    elseif t == "W" or t == "WD" then
      local v = assert(cur[e.ino], "a write to a file not created in the log")
      local S = M.SECTOR
      local first = #h.units + 1
      local off, last = e.off, e.off + e.len
      while off < last do
        local stop = math.min((off // S + 1) * S, last)
        unit { at = i, v = v, off = off, data = e.data:sub(off - e.off + 1, stop - e.off) }
        off = stop
      end
      if t == "WD" then   -- durable once the call returned
        for j = first, #h.units do h.units[j].durable = i end
      end
    elseif t == "T" then
      unit { at = i, v = assert(cur[e.ino]), size = e.size }
    elseif t == "S" then
      local v = assert(cur[e.ino], "fsync of a file not created in the log")
      for _, u in ipairs(open[v]) do u.durable = u.durable or i end
      open[v] = {}
    elseif t == "SD" then
      for _, n in ipairs(dirops[e.path] or {}) do n.durable = n.durable or i end
      dirops[e.path] = {}
    elseif t == "U" or t == "RD" then
      name { at = i, kind = "del", name = e.path, v = live[e.path] }
      live[e.path] = nil
    elseif t == "MK" then
      name { at = i, kind = "add", name = e.path, v = "dir" }
      live[e.path] = "dir"
    elseif t == "R" or t == "L" then
      local v = live[e.from]
      if v == "dir" or v == nil then error("event " .. i .. ": rename or link of " .. e.from) end
      if t == "R" and dirname(e.from) == dirname(e.to) then
        name { at = i, kind = "move", name = e.to, from = e.from, v = v }
      else
        if t == "R" then name { at = i, kind = "del", name = e.from, v = v } end
        name { at = i, kind = "add", name = e.to, v = v }
      end
      if t == "R" then live[e.from] = nil end
      live[e.to] = v
    elseif t == "M" then
      h.marks[#h.marks + 1] = { at = i, text = e.text, live = { db = live.db } }
    end
  end
  return h
end

--- The crash points worth a state: before each event that changes the disk,
-- and after the last. Each: { c = event index, pending = {...} } where
-- pending lists the units and name changes that may or may not be there.
function M.points(h)
  local pts = {}
  local n = #h.ev
  local changes = {}
  for _, u in ipairs(h.units) do changes[u.at] = true end
  for _, nm in ipairs(h.names) do changes[nm.at] = true end
  for i, e in ipairs(h.ev) do
    if e.tag == "S" or e.tag == "SD" then changes[i] = true end
  end
  for c = 1, n + 1 do
    if changes[c] or c == n + 1 then pts[#pts + 1] = { c = c } end
  end
  return pts
end

-- Whether x (unit or name change) is on disk for sure at crash point c, or
-- may be (pending), or not yet made.
local function status(x, c)
  if x.at > c then return "future" end
  if x.at == c then return "pending" end   -- in flight
  if x.durable and x.durable < c then return "durable" end
  return "pending"
end
M.status = status

--- The pending units and name changes at crash point c, those that cannot
-- matter left out: changes in a directory whose removal is on disk, the bytes
-- of files no name can reach, and the names and bytes of lock files (a
-- defrag's own lock file, linked and renamed over the database's, included).
function M.pending(h, c)
  local dead = {}
  for _, nm in ipairs(h.names) do
    if nm.v == "dir" then
      local s = status(nm, c)
      if nm.kind == "del" and s == "durable" then dead[nm.name] = true
      elseif nm.kind == "add" and s ~= "future" then dead[nm.name] = nil end
    end
  end
  local out, reach = {}, {}
  for _, nm in ipairs(h.names) do
    local s = status(nm, c)
    local file = type(nm.v) == "table"
    if not dead[nm.dir] and s ~= "future" and not (file and nm.v.lock) then
      if file and nm.kind ~= "del" then reach[nm.v] = true end
      if s == "pending" then out[#out + 1] = nm end
    end
  end
  for _, u in ipairs(h.units) do
    if reach[u.v] and not u.v.lock and status(u, c) == "pending" then out[#out + 1] = u end
  end
  table.sort(out, function(a, b) return a.at < b.at end)
  return out
end

--- The state at crash point c with the pending changes `chosen` (a set):
-- { names = { path = vnode or "dir" }, files = { vnode = content } }.
function M.state(h, c, chosen)
  local function on(x)
    local s = status(x, c)
    return s == "durable" or (s == "pending" and chosen[x])
  end
  local names = { ["."] = "dir" }
  for _, nm in ipairs(h.names) do
    if on(nm) then
      if nm.kind == "add" then
        names[nm.name] = nm.v
      elseif nm.kind == "del" then
        if names[nm.name] == nm.v then names[nm.name] = nil end
      else   -- move: the new entry and the old one's removal, at once
        names[nm.name] = nm.v
        if names[nm.from] == nm.v then names[nm.from] = nil end
      end
    end
  end
  -- a name whose directory is not there is not there
  local visible = {}
  for path, v in pairs(names) do
    local ok, d = true, dirname(path)
    while path ~= "." and d ~= "." do
      if names[d] ~= "dir" then ok = false; break end
      d = dirname(d)
    end
    if ok then visible[path] = v end
  end
  local need = {}
  for _, v in pairs(visible) do if type(v) == "table" then need[v] = true end end
  local files = {}
  local S = M.SECTOR
  for v in pairs(need) do files[v] = { sectors = {}, size = 0 } end
  for _, u in ipairs(h.units) do
    local f = files[u.v]
    if f and on(u) then
      if u.size then   -- ftruncate
        local keep = u.size // S
        for s in pairs(f.sectors) do
          if s > keep then f.sectors[s] = nil end
        end
        if f.sectors[keep] then f.sectors[keep] = f.sectors[keep]:sub(1, u.size - keep * S) end
        f.size = u.size
      else
        local s = u.off // S
        local old = f.sectors[s] or ""
        local a = u.off - s * S
        if #old < a then old = old .. string.rep("\0", a - #old) end
        f.sectors[s] = old:sub(1, a) .. u.data .. old:sub(a + #u.data + 1)
        f.size = math.max(f.size, u.off + #u.data)
      end
    end
  end
  local content = {}
  for v, f in pairs(files) do
    local parts, last = {}, (f.size + S - 1) // S - 1
    for s = 0, last do
      local sec = f.sectors[s] or ""
      local want = math.min(S, f.size - s * S)
      if #sec < want then sec = sec .. string.rep("\0", want - #sec) end
      parts[#parts + 1] = sec:sub(1, want)
    end
    content[v] = table.concat(parts)
  end
  return { names = visible, files = content }
end

--- The marks seen before crash point c, in order.
function M.marks_before(h, c)
  local out = {}
  for _, m in ipairs(h.marks) do
    if m.at < c then out[#out + 1] = m end
  end
  return out
end

return M
