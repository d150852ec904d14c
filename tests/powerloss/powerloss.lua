--- Power-loss test: records the workload's file-system calls (plrec.so), then
-- builds and checks the crash states a power cut could leave (crashmodel.lua).
--
--   powerloss.lua --shim SO --out DIR [--seed N] [--states N] [--jobs N] [--small] run
--   ... mutants        the same checker on logs made to break durability
--   ... state C/J [--mutant NAME]   rebuild one state in DIR/repro and check it
-- Prints the states and violations per operation; the last line reads
-- "powerloss: N states, V violations" (or "mutants: C/M caught"). A state is
-- named C/J: crash point C (the event it precedes), choice J of what was pending
-- there, J drawn from the seed. The log is kept in DIR (record.log): a state is
-- reproduced from the log and the seed.
local here = arg[0]:match("^(.*)/[^/]*$") or "."
package.path = here .. "/?.lua;" .. package.path

local backend = require "backend"
local check = require "backend.tools.check"
local digest = require "digest"
local model = require "crashmodel"
local uv = require "luv"

local fmt = string.format
local LUA = arg[-1] or "lua5.4"

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function sh(cmd)
  local ok, how, code = os.execute(cmd)
  if not ok then error(fmt("command failed (%s %s): %s", how, code, cmd), 0) end
end

local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- Arguments -------------------------------------------------------------------

local opts = { seed = 1, states = 12000, jobs = 2 }
local cmd, cmdarg
do
  local i = 1
  while i <= #arg do
    local a = arg[i]
    local key = a:match("^%-%-(.+)$")
    if key == "small" then
      opts.small = true
    elseif key then
      opts[key] = arg[i + 1]
      i = i + 1
    elseif not cmd then
      cmd = a
    else
      cmdarg = a
    end
    i = i + 1
  end
  opts.seed, opts.states, opts.jobs = tonumber(opts.seed), tonumber(opts.states), tonumber(opts.jobs)
  if not (cmd and opts.out) then
    io.stderr:write("usage: powerloss.lua --out DIR [--shim SO] [--seed N] [--states N] [--jobs N] [--small] "
      .. "run|mutants|state C/J|worker|record\n")
    os.exit(2)
  end
end

-- Recording -------------------------------------------------------------------

--- Runs the workload under the recorder; returns the log's path.
local function record()
  local dir = opts.out .. "/recorded"
  sh("rm -rf " .. q(opts.out) .. " && mkdir -p " .. q(dir))
  local abs = io.popen("realpath " .. q(dir)):read("l")
  local log = opts.out .. "/record.log"
  sh(fmt("PLREC_DIR=%s PLREC_LOG=%s LD_PRELOAD=%s %s %s --out %s --seed %d %s record",
    q(abs), q(log), q(opts.shim), q(LUA), q(arg[0]), q(abs), opts.seed, opts.small and "--small" or ""))
  return log
end

if cmd == "record" then   -- the child, under the recorder
  local r = require("workload").run(opts.out, opts.seed, opts.small)
  if r.map_grows < 1 then error("the workload never grew the map") end
  os.exit(0)
end

-- Mutants: logs changed to break durability -----------------------------------

local mutants = {}

-- The inode each name holds, as the creates and renames of the log left them.
local function names_of(ev, upto)
  local live = {}
  for i = 1, upto do
    local e = ev[i]
    if e.tag == "C" then live[e.path] = e.ino
    elseif e.tag == "R" then live[e.to], live[e.from] = live[e.from], nil
    elseif e.tag == "U" then live[e.path] = nil end
  end
  return live
end

--- The fdatasync before each meta page write (a WD) dropped.
function mutants.nodatasync(ev)
  local out = {}
  for i, e in ipairs(ev) do
    local nextw
    for j = i + 1, #ev do
      if ev[j].ino == e.ino and ev[j].tag ~= "S" then nextw = ev[j]; break end
    end
    if not (e.tag == "S" and nextw and nextw.tag == "WD") then out[#out + 1] = e end
  end
  return out
end

--- The directory fsync after each rename dropped.
function mutants.nodirsync(ev)
  local out, after = {}, false
  for _, e in ipairs(ev) do
    if e.tag == "R" then after = true end
    if e.tag == "SD" and after then after = false else out[#out + 1] = e end
  end
  return out
end

--- Each rename moved before the last fsync of the file it renames.
function mutants.earlyrename(ev)
  local out = {}
  for i, e in ipairs(ev) do out[i] = e end
  for i = #out, 1, -1 do
    local e = out[i]
    if e.tag == "R" then
      local ino = names_of(out, i - 1)[e.from]
      for j = i - 1, 1, -1 do
        -- not past the file's creation: an older file may have had its inode
        if out[j].tag == "C" and out[j].ino == ino then break end
        if out[j].tag == "S" and out[j].ino == ino then
          table.remove(out, i)
          table.insert(out, j, e)
          break
        end
      end
    end
  end
  return out
end

--- The writes to a defrag's new file after its first fsync and before its
-- rename over db dropped: a swap without the catch-up (the commits made to
-- the old file meanwhile never applied to the new one).
function mutants.nocatchup(ev)
  local out, new, synced = {}, {}, {}
  for _, e in ipairs(ev) do
    local keep = true
    if e.tag == "C" and e.path:match("^db%.backend%-tmp%.[^/]+/db$") then
      new[e.ino], synced[e.ino] = e.path, false
    elseif e.tag == "S" and new[e.ino] then
      synced[e.ino] = true
    elseif e.tag == "R" and e.to == "db" then
      for ino, path in pairs(new) do
        if path == e.from then new[ino] = nil end
      end
    elseif (e.tag == "W" or e.tag == "WD") and new[e.ino] and synced[e.ino] then
      keep = false
    end
    if keep then out[#out + 1] = e end
  end
  return out
end

local function history(mutant)
  local log = opts.out .. "/record.log"
  local ev = model.parse(slurp(log), slurp(log .. ".data"))
  if mutant then ev = assert(mutants[mutant], "no such mutant")(ev) end
  return model.build(ev)
end

-- The plan: which states --------------------------------------------------------

local MAX_EXHAUSTIVE = 12   -- pending changes enumerated in full up to 2^12 states

--- Per crash point: its pending list and how many states (all subsets when
-- they fit the budget, else a sample), the budget of opts.states shared out.
local function plan(h)
  local pts = model.points(h)
  local full = {}
  for i, p in ipairs(pts) do
    p.pending = model.pending(h, p.c)
    full[i] = #p.pending <= MAX_EXHAUSTIVE and 1 << #p.pending or math.huge
  end
  local function total(cap)
    local n = 0
    for _, f in ipairs(full) do n = n + math.min(f, cap) end
    return n
  end
  local lo, hi = 1, 1 << MAX_EXHAUSTIVE   -- the smallest cap reaching the budget
  while lo < hi do
    local mid = (lo + hi) // 2
    if total(mid) >= opts.states then hi = mid else lo = mid + 1 end
  end
  for i, p in ipairs(pts) do
    p.n = math.min(full[i], lo)
    p.exhaustive = full[i] <= lo
  end
  return pts
end

--- The pending changes chosen in state j of point p: bit i of j when all
-- subsets are enumerated; else none (j = 0), all (1), or a seeded draw,
-- each change kept with a probability of 1/2, 1/10 or 9/10 by turns.
local function choose(p, j)
  local chosen = {}
  if p.exhaustive then
    for i, x in ipairs(p.pending) do
      if (j >> (i - 1)) & 1 == 1 then chosen[x] = true end
    end
  elseif j == 1 then
    for _, x in ipairs(p.pending) do chosen[x] = true end
  elseif j > 1 then
    math.randomseed(opts.seed, p.c * 100003 + j)
    local keep = ({ 0.5, 0.1, 0.9 })[j % 3 + 1]
    for _, x in ipairs(p.pending) do
      if math.random() < keep then chosen[x] = true end
    end
  end
  return chosen
end

-- Checking one state -----------------------------------------------------------

--- The online defrags of the log, each with the events that end its steps
-- and its files: `start` (its "job start" mark); the copy until the new file's
-- first fsync (`synced`: the copy, and the catch-up rounds before it); the
-- catch-up until the old lock file gets its second name (`linked`: made just
-- before the writer's pause); the swap until the directory fsync after the new
-- file's rename over db (`dirsync`); the release (the temporary directory
-- removed, the old file let go) until the job reported complete (`done`, its
-- "name db" mark). `old` and `new`: the files db may be meanwhile.
local function online_jobs(h)
  local jobs = {}
  for _, m in ipairs(h.marks) do
    if m.text == "job start" then jobs[#jobs + 1] = { start = m.at, old = m.live.db } end
  end
  for _, job in ipairs(jobs) do
    local tmp, renamed
    for i = job.start + 1, #h.ev do
      local e = h.ev[i]
      if not tmp and e.tag == "MK" and e.path:match("^db%.backend%-tmp%.[^/]+$") then
        tmp = e.path
      elseif tmp and not job.new and e.tag == "C" and e.path == tmp .. "/db" then
        for _, nm in ipairs(h.names) do
          if nm.at == i then job.new = nm.v end
        end
        job.ino = e.ino
      elseif job.ino and not job.synced and e.tag == "S" and e.ino == job.ino then
        job.synced = i
      elseif tmp and not job.linked and e.tag == "L" and e.to == tmp .. "/db-lock.old" then
        job.linked = i
      elseif tmp and e.tag == "R" and e.from == tmp .. "/db" and e.to == "db" then
        renamed = i
      elseif renamed and not job.dirsync and e.tag == "SD" and e.path == "." then
        job.dirsync = i
      elseif e.tag == "M" and e.text == "name db" then
        job.done = i
        break
      end
    end
    -- a mutant's log may lack some: the steps whose end is missing are empty
    job.whole = job.new and job.synced and job.linked and job.dirsync and job.done
      and job.synced < job.linked and true
    job.done = job.done or #h.ev + 1
    job.synced = job.synced or job.done
    job.linked = math.max(job.linked or job.done, job.synced)
    job.dirsync = math.max(job.dirsync or job.done, job.linked)
  end
  return jobs
end

--- The online defrag at crash point c and its step there, if any.
local function online_step(jobs, c)
  for _, job in ipairs(jobs) do
    if c > job.start and c <= job.done then
      local step = c <= job.synced and "copy" or c < job.linked and "catch-up"
        or c <= job.dirsync and "swap" or "release"
      return job, step
    end
  end
end

local function expectations(h)
  local e = { hist = {}, files = {}, bolts = {}, jobs = online_jobs(h) }
  for _, m in ipairs(h.marks) do
    local w = {}
    for x in m.text:gmatch("%S+") do w[#w + 1] = x end
    if w[1] == "hist" then e.hist[tonumber(w[2])] = w[3]
    elseif w[1] == "file" then e.files[w[2]] = { digest = w[3], hash = tonumber(w[4]), at = m.at }
    elseif w[1] == "bolt" then e.bolts[w[2]] = { digest = w[3], hash = tonumber(w[4]), at = m.at } end
  end
  return e
end

-- What the marks before c promise: sections acked, begun, the phase, and the
-- files the name "db" may hold (after a defrag reported complete: its new
-- file, or one bound later).
local function promises(h, c)
  local p = { acked = 0, begun = 0, phase = "create" }
  local named
  for _, m in ipairs(model.marks_before(h, c)) do
    local w, n = m.text:match("^(%S+) ?(%S*)")
    if w == "ack" then p.acked = tonumber(n)
    elseif w == "begin" then p.begun = tonumber(n)
    elseif w == "phase" then p.phase = n
    elseif w == "name" then named = m end
  end
  if named then
    p.db_files = { [named.live.db] = true }
    for _, nm in ipairs(h.names) do
      if nm.at > named.at and nm.at <= c and nm.name == "db" and nm.kind ~= "del" then p.db_files[nm.v] = true end
    end
  end
  return p
end

local function write_file(path, s)
  local f = assert(io.open(path, "wb"))
  assert(f:write(s))
  assert(f:close())
end

--- Writes the state into dir; returns the paths it made, files then directories.
local function materialize(st, dir)
  local dirs, files = {}, {}
  for path, v in pairs(st.names) do
    if v == "dir" and path ~= "." then dirs[#dirs + 1] = path end
  end
  table.sort(dirs)
  for _, d in ipairs(dirs) do sh("mkdir -p " .. q(dir .. "/" .. d)) end
  for path, v in pairs(st.names) do
    if type(v) == "table" and not v.lock then
      write_file(dir .. "/" .. path, st.files[v])
      files[#files + 1] = path
    end
  end
  return files, dirs
end

local function cleanup(dir, files, dirs)
  for _, f in ipairs(files) do
    os.remove(dir .. "/" .. f)
    os.remove(dir .. "/" .. f .. "-lock")
  end
  for i = #dirs, 1, -1 do sh("rm -rf " .. q(dir .. "/" .. dirs[i])) end
end

local cache = {}   -- a reported-complete file's verdict, by its content

-- The temporary directories beside path.
local function temps(path)
  local dir, base = path:match("^(.*)/([^/]+)$")
  local out = {}
  for name in uv.fs_scandir_next, assert(uv.fs_scandir(dir)) do
    if name:sub(1, #base + 13) == base .. ".backend-tmp." then out[#out + 1] = name end
  end
  return out
end

local function check_db(path, readonly, want)
  local ok, be = pcall(backend.open, { path = path, readonly = readonly, batch_interval = 3600 })
  if not ok then return "does not open: " .. tostring(be) end
  local problems = {}
  if not readonly then
    local left = temps(path)
    if #left > 0 then problems[#problems + 1] = "opening it for writing left " .. table.concat(left, " ") end
    local report = check.run(be, { snapshot = false })
    if not report.ok then problems[#problems + 1] = "check: " .. check.describe(report.findings[1]) end
  end
  local d = digest.read(be)
  if want.digest and d ~= want.digest then
    problems[#problems + 1] = fmt("holds %s, reported %s", d, want.digest)
  end
  if want.hash and be:hash() ~= want.hash then
    problems[#problems + 1] = fmt("hash %d, reported %d", be:hash(), want.hash)
  end
  if want.hist then
    local match
    for k = want.acked, want.begun do
      if want.hist[k] == d then match = k; break end
    end
    if not match then
      local any = {}
      for k, hd in pairs(want.hist) do if hd == d then any[#any + 1] = k end end
      problems[#problems + 1] = fmt("holds no state of sections %d..%d (acknowledged %d; its data is that of %s)",
        want.acked, want.begun, want.acked, #any > 0 and "section " .. table.concat(any, ",") or "no section")
    end
  end
  be:close()
  return #problems > 0 and table.concat(problems, "; ") or nil
end

local function check_bolt(path, want)
  local ok, f = pcall(backend.open_bolt, path)
  if not ok then return "does not open: " .. tostring(f) end
  local info, d = f:info(), digest.bolt(f)
  f:close()
  if not info.sha256_trailer then return "has no valid SHA-256 trailer" end
  if d ~= want.digest then return fmt("holds %s, reported %s", d, want.digest) end
end

--- The phase at crash point c: the workload's, with the step of an online defrag.
local function phase_at(h, exp, c)
  local _, step = online_step(exp.jobs, c)
  local phase = promises(h, c).phase
  return step and phase .. "/" .. step or phase
end

--- The violations of the state (a list of messages).
local function check_state(h, exp, c, st, dir)
  local out = {}
  local p = promises(h, c)
  local job = online_step(exp.jobs, c)
  if job then
    if st.names.db ~= nil and st.names.db ~= job.old and st.names.db ~= job.new then
      out[#out + 1] = "db is neither the file the online defrag started from nor its new one"
    end
  end
  local files, dirs = materialize(st, dir)
  local db = st.names.db
  if db == nil then
    if p.acked > 0 then out[#out + 1] = fmt("db is gone, though sections 1..%d were acknowledged", p.acked) end
  elseif db == "dir" then
    out[#out + 1] = "db is a directory"
  else
    if p.db_files and not p.db_files[db] then
      out[#out + 1] = "db is not the file the defrag reported complete put there"
    end
    local bad = check_db(dir .. "/db", false, { hist = exp.hist, acked = p.acked, begun = p.begun })
    if bad then out[#out + 1] = "db " .. bad end
  end
  local function reported(kind, name, want)
    local v = st.names[name]
    if v == nil then
      if want.at < c then out[#out + 1] = fmt("%s is gone, though reported complete", name) end
      return
    end
    local key = kind .. name .. (type(v) == "table" and backend.crc32c(st.files[v]) .. "." .. #st.files[v] or "dir")
    if cache[key] == nil then
      local path = dir .. "/" .. name
      local bad = type(v) ~= "table" and "is a directory"
        or kind == "file" and check_db(path, true, want) or kind == "bolt" and check_bolt(path, want)
      cache[key] = bad or false
    end
    if cache[key] then
      out[#out + 1] = fmt("%s %s%s", name, cache[key], want.at < c and "" or " (present before reported complete)")
    end
  end
  for name, want in pairs(exp.files) do reported("file", name, want) end
  for name, want in pairs(exp.bolts) do reported("bolt", name, want) end
  cleanup(dir, files, dirs)
  return out
end

-- Running ------------------------------------------------------------------------

--- The states of shard `shard` of `jobs`, from state number `from` on:
-- "D n phase C/J" before each (flushed: a state that crashes the process is
-- known by it), then "O n" or "V n message".
local function worker(mutant, shard, jobs, from)
  local h = history(mutant)
  local exp = expectations(h)
  local pts = plan(h)
  local dir = fmt("%s/state%s.%d", opts.out, mutant or "", shard)
  sh("rm -rf " .. q(dir) .. " && mkdir -p " .. q(dir))
  local idx = 0
  for _, p in ipairs(pts) do
    for j = 0, p.n - 1 do
      idx = idx + 1
      if idx % jobs == shard and idx >= from then
        io.stdout:write(fmt("D %d %s %d/%d\n", idx, phase_at(h, exp, p.c), p.c, j))
        io.stdout:flush()
        local st = model.state(h, p.c, choose(p, j))
        local bad = check_state(h, exp, p.c, st, dir)
        print(#bad > 0 and fmt("V %d %s", idx, table.concat(bad, "; ")) or fmt("O %d", idx))
      end
    end
  end
end

if cmd == "worker" then
  worker(opts.mutant, tonumber(opts.shard), opts.jobs, tonumber(opts.from))
  os.exit(0)
end

--- Runs the workers in parallel, each into a file of its own (one that a
-- state kills goes on after it); returns the states, the violations, the
-- per-phase counts and the violations' lines.
local function replay(mutant)
  local n, v, per, lines = 0, 0, {}, {}
  local function count(phase, bad)
    local r = per[phase] or { 0, 0 }
    per[phase] = { r[1] + 1, r[2] + (bad and 1 or 0) }
    n, v = n + 1, v + (bad and 1 or 0)
  end
  local from = {}
  for shard = 0, opts.jobs - 1 do from[shard] = 0 end
  while next(from) do
    local cmds = {}
    for shard, start in pairs(from) do
      local out = fmt("%s/worker%s.%d", opts.out, mutant or "", shard)
      cmds[#cmds + 1] = fmt("(%s %s --out %s --seed %d --states %d %s %s--shard %d --jobs %d --from %d worker "
        .. ">%s 2>&1; echo $? >%s.rc) &", q(LUA), q(arg[0]), q(opts.out), opts.seed, opts.states,
        opts.small and "--small" or "", mutant and "--mutant " .. mutant .. " " or "", shard, opts.jobs, start,
        q(out), q(out))
    end
    sh(table.concat(cmds, " ") .. " wait")
    local again = {}
    for shard in pairs(from) do
      local out = fmt("%s/worker%s.%d", opts.out, mutant or "", shard)
      local doing, output = nil, {}
      for line in io.lines(out) do
        local idx, phase, id = line:match("^D (%d+) (%S+) (%S+)$")
        if idx then
          doing, output = { idx = tonumber(idx), phase = phase, id = id }, {}
        elseif line:match("^[OV] ") then
          local bad = line:match("^V %d+ (.*)$")
          count(doing.phase, bad)
          if bad then lines[#lines + 1] = fmt("%s %s: %s", doing.phase, doing.id, bad) end
          doing = nil
        else
          output[#output + 1] = line
        end
      end
      if doing then   -- the state killed the checking process
        count(doing.phase, true)
        lines[#lines + 1] = fmt("%s %s: checking it killed the process: %s", doing.phase, doing.id,
          table.concat(output, " | "):sub(1, 300))
        again[shard] = doing.idx + 1
      elseif slurp(out .. ".rc") ~= "0\n" then
        error("a worker failed: " .. table.concat(output, "\n"), 0)
      end
    end
    from = again
  end
  table.sort(lines)
  return n, v, per, lines
end

local function show(per, lines, max)
  local phases = {}
  for phase in pairs(per) do phases[#phases + 1] = phase end
  table.sort(phases)
  for _, phase in ipairs(phases) do
    print(fmt("  %-16s %6d states, %d violations", phase, per[phase][1], per[phase][2]))
  end
  for i = 1, math.min(#lines, max) do print("  " .. lines[i]) end
  if #lines > max then print(fmt("  ... and %d more", #lines - max)) end
end

local t0 = backend.monotonic()
if cmd == "run" then
  record()
  local h = history()
  print(fmt("recorded %d events (%d data units, %d name changes, %d marks); seed %d",
    #h.ev, #h.units, #h.names, #h.marks, opts.seed))
  local jobs = online_jobs(h)
  for _, job in ipairs(jobs) do
    if not job.whole then
      error(fmt("the online defrag started at event %d does not copy, sync, link, rename, "
        .. "fsync the directory and report complete in that order", job.start), 0)
    end
  end
  local n, v, per, lines = replay()
  show(per, lines, 20)
  for _, step in ipairs { "copy", "catch-up", "swap", "release" } do
    if #jobs == 0 or not per["online/" .. step] then
      print("no state in the online defrags' " .. step)
      v = v + 1
    end
  end
  if v > 0 then
    print(fmt("reproduce a state: %s %s --out %s --seed %d --states %d%s state C/J",
      LUA, arg[0], opts.out, opts.seed, opts.states, opts.small and " --small" or ""))
  end
  print(fmt("%.1f s", backend.monotonic() - t0))
  print(fmt("powerloss: %d states, %d violations", n, v))
  os.exit(v == 0 and n > 0 and 0 or 1)
elseif cmd == "mutants" then
  record()
  local names = { "nodatasync", "nodirsync", "earlyrename", "nocatchup" }
  local caught = 0
  local log = opts.out .. "/record.log"
  local ev = model.parse(slurp(log), slurp(log .. ".data"))
  local applied = 0
  for _, name in ipairs(names) do
    local changed, m = false, mutants[name](ev)
    for i = 1, math.max(#ev, #m) do changed = changed or ev[i] ~= m[i] end
    -- nocatchup needs commits during an online defrag's copy: thread timing,
    -- which a short recording may not have; the others always apply.
    if not changed and name ~= "nocatchup" then
      error(fmt("mutant %s changes nothing in this recording", name), 0)
    end
    if changed then
      applied = applied + 1
      local n, v, per, lines = replay(name)
      print(fmt("mutant %s: %d violations in %d states: %s", name, v, n, v > 0 and "caught" or "MISSED"))
      show(per, lines, 3)
      if v > 0 then caught = caught + 1 end
    else
      print(fmt("mutant %s: changes nothing in this recording (no commit came during its copy)", name))
    end
  end
  print(fmt("%.1f s", backend.monotonic() - t0))
  print(fmt("mutants: %d/%d caught (%d of %d apply to this recording)", caught, applied, applied, #names))
  os.exit(caught == applied and 0 or 1)
elseif cmd == "state" then
  local c, j = (cmdarg or ""):match("^(%d+)/(%d+)$")
  if not c then error("state C/J expected", 0) end
  local h = history(opts.mutant)
  for _, p in ipairs(plan(h)) do
    if p.c == tonumber(c) then
      local st = model.state(h, p.c, choose(p, tonumber(j)))
      local dir = opts.out .. "/repro"
      sh("rm -rf " .. q(dir) .. " && mkdir -p " .. q(dir))
      local bad = check_state(h, expectations(h), p.c, st, dir)
      materialize(st, dir)   -- left there to look at
      print(fmt("state %s/%s before event %d (%s), %d pending changes: %s", c, j, p.c, h.ev[p.c] and h.ev[p.c].tag
        or "end", #p.pending, #bad > 0 and table.concat(bad, "; ") or "ok"))
      print("its files are in " .. dir)
      os.exit(#bad > 0 and 1 or 0)
    end
  end
  error("no crash point " .. c, 0)
else
  error("unknown command " .. cmd, 0)
end
