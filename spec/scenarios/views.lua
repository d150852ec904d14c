-- What each reader sees, and the errors of misuse.
return {
  name = "readers and misuse",
  config = { batch_interval = 3600, batch_limit = 1000 },
  steps = {
    { "create_bucket", "b" },
    { "put", "b", "k", "1" },
    { "view", "before" },                     -- frozen: k = 1
    { "rlock" },                              -- the shared ReadTx, as of now
    { "lock" },
    { "put", "b", "k", "2" },
    { "put", "b", "\0bin\255", "x" },
    { "get", "b", "k", expect = "2" },        -- the BatchTx sees its section at once
    { "get", "b", "k", via = "concurrent", expect = "1" },
    { "pending", expect = 4 },
    { "unlock" },
    { "get", "b", "k", via = "read", expect = "1" },   -- rlocked before the unlock
    { "runlock" },
    { "get", "b", "k", via = "read", expect = "2" },
    { "range", "b", "", "\255", view = "before", expect = { { "k", "1" } } },
    { "buckets", view = "before", expect = { "b" } },
    { "pairs", "b", expect = { { "\0bin\255", "x" }, { "k", "2" } } },
    { "pairs", "b", "a", expect = { { "k", "2" } } },
    { "close_view", "before" },
    { "error", { "get", "b", "k", view = "before" }, expect = "is closed" },
    { "delete_bucket", "b" },
    { "buckets", via = "concurrent", expect = {} },
    { "error", { "put", "b", "k", "v" }, expect = "bucket 'b' does not exist" },
    { "error", { "put", "", "k", "v" }, expect = "bucket name must not be empty" },
    { "create_bucket", "b" },
    { "error", { "put", "b", string.rep("k", 600), "v" }, expect = "key is too long" },
    { "lock" },
    { "error", { "lock" }, expect = "already locked" },
    { "error", { "commit" }, expect = "unlock or rollback first" },
    { "put", "b", "gone", "v" },
    { "rollback" },
    { "get", "b", "gone", expect = false },
    { "commit" },
    { "pending", expect = 0 },
    { "commits", expect = 1 },
    { "check" },
  },
}
