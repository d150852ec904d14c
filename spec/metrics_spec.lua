-- be:stats()'s histograms, be:metrics() (Prometheus text under etcd's names)
-- and be:bucket_stats() (LMDB's numbers per bucket).
local H = require "spec.helper"
local backend = require "backend"

-- Prometheus text: { [name{labels}] = value }, checking every line's shape.
local function parse(text)
  local samples, types = {}, {}
  for line in text:gmatch("[^\n]+") do
    local name, kind = line:match("^# TYPE (%S+) (%S+)$")
    if name then
      types[name] = kind
    elseif not line:match("^# HELP %S+ .+$") then
      local series, value = line:match("^([%w_]+%b{}) (%S+)$")
      if not series then series, value = line:match("^([%w_]+) (%S+)$") end
      assert(series and tonumber(value), "not a sample line: " .. line)
      samples[series] = tonumber(value)
    end
  end
  return samples, types
end

describe("metrics", function()
  after_each(H.cleanup)

  it("counts every commit, defrag and snapshot in etcd's histograms", function()
    local be <close> = backend.open { path = H.tmppath(), batch_interval = 3600 }
    for i = 1, 5 do
      be:update(function(tx) tx:create_bucket("b"); tx:put("b", "k" .. i, "v") end)
      be:force_commit()
    end
    be:snapshot():close()
    be:defrag()
    local st = be:stats()
    assert.are.equal(be:commits(), st.commit_histogram.count)
    assert.are.equal(1, st.defrag_histogram.count)
    assert.are.equal(1, st.snapshot_histogram.count)
    assert.is_false(st.defrag_inflight)
    for _, h in ipairs { st.commit_histogram, st.defrag_histogram, st.snapshot_histogram } do
      local last = 0
      for _, b in ipairs(h.buckets) do
        assert.is_true(b.count >= last, "cumulative")
        last = b.count
      end
      assert.is_true(h.count >= last and h.sum >= 0)
    end
    assert.are.equal(14, #st.commit_histogram.buckets)
    assert.are.equal(0.001, st.commit_histogram.buckets[1].le)
    assert.are.equal(13, #st.defrag_histogram.buckets)
    assert.are.equal(17, #st.snapshot_histogram.buckets)

    local samples, types = parse(be:metrics())
    assert.are.equal("histogram", types.etcd_disk_backend_commit_duration_seconds)
    assert.are.equal(be:commits(), samples.etcd_disk_backend_commit_duration_seconds_count)
    assert.are.equal(be:commits(), samples['etcd_disk_backend_commit_duration_seconds_bucket{le="+Inf"}'])
    assert.is_number(samples['etcd_disk_backend_commit_duration_seconds_bucket{le="8.192"}'])
    assert.are.equal(1, samples['etcd_disk_backend_defrag_duration_seconds_bucket{le="409.6"}'])
    assert.are.equal(1, samples.etcd_disk_backend_snapshot_duration_seconds_count)
    assert.are.equal(0, samples.etcd_disk_defrag_inflight)
    assert.are.equal(be:size(), samples.etcd_mvcc_db_total_size_in_bytes)
    assert.are.equal(be:size_in_use(), samples.etcd_mvcc_db_total_size_in_use_in_bytes)
    assert.are.equal(0, samples.etcd_mvcc_db_open_read_transactions)
    assert.are.equal(be:commits(), samples.backend_commits_total)
    assert.are.equal("counter", types.backend_backpressure_waits_total)
    assert.are.equal(st.backpressure_waits, samples.backend_backpressure_waits_total)
    assert.are.equal("counter", types.backend_backpressure_seconds_total)
    assert.are.equal(st.backpressure_seconds, samples.backend_backpressure_seconds_total)
  end)

  it("bucket_stats: LMDB's numbers, after committing what is buffered", function()
    local be <close> = backend.open { path = H.tmppath(), batch_interval = 3600 }
    be:update(function(tx)
      tx:create_bucket("big"); tx:create_bucket("empty"); tx:create_bucket("a")
      for i = 1, 3000 do tx:put("big", string.format("k%05d", i), string.rep("v", 100)) end
      tx:put("a", "huge", string.rep("x", 20000))
    end)
    local stats = be:bucket_stats()
    assert.are.equal(0, be:stats().pending)
    assert.are.same({ "a", "big", "empty" }, { stats[1].name, stats[2].name, stats[3].name })
    assert.are.equal(1, stats[1].entries)
    assert.is_true(stats[1].overflow_pages >= 5, "a 20 kB value spans overflow pages")
    assert.are.equal(3000, stats[2].entries)
    assert.is_true(stats[2].depth >= 2 and stats[2].branch_pages >= 1 and stats[2].leaf_pages > 50)
    assert.are.same({ name = "empty", entries = 0, depth = 0, branch_pages = 0, leaf_pages = 0,
                      overflow_pages = 0 }, stats[3])
    local pages = 0
    for _, b in ipairs(stats) do pages = pages + b.branch_pages + b.leaf_pages + b.overflow_pages end
    assert.is_true(pages * be:stats().page_size <= be:size_in_use())
  end)
end)
