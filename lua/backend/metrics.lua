--- backend.metrics: a backend's statistics (`be:stats()`) as Prometheus text
-- exposition (format 0.0.4), under etcd's metric names where etcd has the
-- metric (its backend's histograms, the db size gauges), `backend_*` otherwise.
local metrics = {}

local fmt = string.format

-- name, help, and the stats field it shows
local HISTOGRAMS = {
  { "etcd_disk_backend_commit_duration_seconds",
    "The latency distributions of commit called by backend.", "commit_histogram" },
  { "etcd_disk_backend_defrag_duration_seconds",
    "The latency distribution of backend defragmentation.", "defrag_histogram" },
  { "etcd_disk_backend_snapshot_duration_seconds",
    "The latency distribution of backend snapshots.", "snapshot_histogram" },
}

-- name, type, help, value from the stats
local SCALARS = {
  { "etcd_disk_defrag_inflight", "gauge", "Whether or not defrag is active on the member. 1 means active, 0 means not.",
    function(st) return st.defrag_inflight and 1 or 0 end },
  { "etcd_mvcc_db_total_size_in_bytes", "gauge",
    "Total size of the underlying database physically allocated in bytes.", "size" },
  { "etcd_mvcc_db_total_size_in_use_in_bytes", "gauge",
    "Total size of the underlying database logically in use in bytes.", "size_in_use" },
  { "etcd_mvcc_db_open_read_transactions", "gauge", "The number of currently open read transactions",
    "open_read_tx_n" },
  { "backend_commits_total", "counter", "Commits that carried writes, since open.", "commits" },
  { "backend_commit_failures_total", "counter", "Commits that failed (and were retried), since open.",
    "commit_failures" },
  { "backend_pending_writes", "gauge", "Writes not yet committed.", "pending" },
  { "backend_buffered_bytes", "gauge", "Bytes held by the write buffer.", "buffered_bytes" },
  { "backend_queued_batches", "gauge", "Batches waiting for the committer.", "queued_batches" },
  { "backend_map_size_bytes", "gauge", "Size of LMDB's memory map.", "map_size" },
  { "backend_map_grows_total", "counter", "Times the map grew, since open.", "map_grows" },
  { "backend_backpressure_waits_total", "counter",
    "Times lock() waited for the committer to free buffer memory (max_buffered_bytes), since open.",
    "backpressure_waits" },
  { "backend_backpressure_seconds_total", "counter",
    "Seconds lock() spent waiting for the committer to free buffer memory, since open.",
    "backpressure_seconds" },
}

-- Go's strconv.FormatFloat(v, 'g', -1, 64) for the values we print: the
-- shortest text that reads back as v.
local function number(v)
  if math.type(v) == "integer" then return tostring(v) end
  for digits = 1, 17 do
    local s = fmt("%." .. digits .. "g", v)
    if tonumber(s) == v then return s end
  end
  return fmt("%.17g", v)
end

--- The text exposition of `st` (a table from be:stats()).
function metrics.text(st)
  local out = {}
  local function line(...) out[#out + 1] = fmt(...) end
  for _, h in ipairs(HISTOGRAMS) do
    local name, hist = h[1], st[h[3]]
    line("# HELP %s %s", name, h[2])
    line("# TYPE %s histogram", name)
    for _, b in ipairs(hist.buckets) do line('%s_bucket{le="%s"} %d', name, number(b.le), b.count) end
    line('%s_bucket{le="+Inf"} %d', name, hist.count)
    line("%s_sum %s", name, number(hist.sum))
    line("%s_count %d", name, hist.count)
  end
  for _, m in ipairs(SCALARS) do
    local value = type(m[4]) == "function" and m[4](st) or st[m[4]]
    line("# HELP %s %s", m[1], m[3])
    line("# TYPE %s %s", m[1], m[2])
    line("%s %s", m[1], number(value))
  end
  return table.concat(out, "\n") .. "\n"
end

return metrics
