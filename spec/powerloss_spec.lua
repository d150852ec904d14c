-- The crash-state model of the power-loss test (tests/powerloss/crashmodel.lua)
-- on hand-made logs: what must be on disk is, what may be is chosen, writes
-- tear at sectors, names follow their directory's fsync.
package.path = "tests/powerloss/?.lua;" .. package.path
local model = require "crashmodel"

-- A history from log lines; the data of each write is `len` copies of `ch`.
local function history(lines)
  local blob, text = {}, {}
  local pos = 0
  for _, l in ipairs(lines) do
    local tag, ino, off, len, ch = l:match("^(WD?) (%d+) (%d+) (%d+) (.)$")
    if tag then
      blob[#blob + 1] = string.rep(ch, tonumber(len))
      text[#text + 1] = string.format("%s %s %s %s %d", tag, ino, off, len, pos)
      pos = pos + tonumber(len)
    else
      text[#text + 1] = l
    end
  end
  return model.build(model.parse(table.concat(text, "\n"), table.concat(blob)))
end

-- Every state at crash point c: a list of { names, files } with all subsets.
local function states(h, c)
  local pending, out = model.pending(h, c), {}
  for mask = 0, (1 << #pending) - 1 do
    local chosen = {}
    for i, x in ipairs(pending) do
      if (mask >> (i - 1)) & 1 == 1 then chosen[x] = true end
    end
    out[#out + 1] = model.state(h, c, chosen)
  end
  return out, pending
end

local function content(st, name)
  local v = st.names[name]
  return v and st.files[v]
end

describe("power-loss crash model", function()
  it("keeps what an fsync made durable and tears later writes at sectors", function()
    local h = history { "C 7 f", "SD .", "W 7 0 1024 a", "S 7", "W 7 0 1024 b", "M x" }
    local seen = {}
    local all, pending = states(h, 6)   -- after the second write
    assert.equal(2, #pending)           -- its two sectors
    for _, st in ipairs(all) do
      local c = content(st, "f")
      assert.equal(1024, #c)
      seen[c:sub(1, 1) .. c:sub(513, 513)] = true
    end
    assert.same({ aa = true, ab = true, ba = true, bb = true }, seen)
  end)

  it("counts a write on an O_DSYNC descriptor durable once it returned, in flight before", function()
    local h = history { "C 7 f", "SD .", "WD 7 0 100 m", "M x" }
    assert.equal(1, #model.pending(h, 3))   -- in flight: maybe there
    local all = states(h, 4)
    assert.equal(1, #all)
    assert.equal(string.rep("m", 100), content(all[1], "f"))
  end)

  it("leaves a new name to chance until its directory is fsynced", function()
    local h = history { "C 7 f", "W 7 0 10 a", "S 7", "M x", "SD .", "M y" }
    local present = 0
    for _, st in ipairs(states(h, 5)) do
      if st.names.f then present = present + 1; assert.equal(string.rep("a", 10), content(st, "f")) end
    end
    assert.equal(1, present)                -- of two states: with and without the name
    for _, st in ipairs(states(h, 6)) do assert.truthy(st.names.f) end
  end)

  it("makes a rename within a directory atomic, and hides what is in a removed directory", function()
    local h = history { "C 1 db", "W 1 0 10 o", "S 1", "SD .", "MK t", "C 2 t/db", "W 2 0 10 n", "S 2",
      "R t/db db", "RD t", "M x" }
    for _, st in ipairs(states(h, 11)) do
      local c = content(st, "db")
      assert.truthy(c == string.rep("o", 10) or c == string.rep("n", 10))
      if st.names["t/db"] then assert.equal("dir", st.names.t) end
    end
  end)

  it("applies chosen writes in the order they were made: the newest bytes of a sector win", function()
    local h = history { "C 7 f", "SD .", "W 7 0 10 a", "W 7 0 10 b", "M x" }
    local seen = {}
    for _, st in ipairs(states(h, 5)) do seen[content(st, "f") or "none"] = true end
    assert.same({ [""] = true, [string.rep("a", 10)] = true, [string.rep("b", 10)] = true }, seen)
  end)

  it("refuses a log with writes it cannot follow", function()
    assert.has_error(function() history { "C 7 f", "X mmap-shared-writable 7 f" } end)
    assert.has_error(function() history { "X stdio /x/f" } end)
  end)
end)
