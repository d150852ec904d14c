-- tx:buckets(): the names of the buckets that exist, in byte order, as each
-- kind of tx sees them.
local H = require "spec.helper"
local backend = require "backend"

describe("tx:buckets()", function()
  after_each(H.cleanup)

  it("lists what each tx sees: the batch tx its own writes, a view its moment", function()
    local path = H.tmppath()
    local be <close> = backend.open { path = path, batch_interval = 3600 }
    local tx = be:batch_tx()
    tx:lock()
    assert.are.same({}, tx:buckets())
    for _, name in ipairs { "zz", "a\0b", "a", "\255", "b" } do tx:create_bucket(name) end
    tx:delete_bucket("b")
    assert.are.same({ "a", "a\0b", "zz", "\255" }, tx:buckets())
    tx:unlock()
    local before <close> = be:concurrent_read_tx()
    be:update(function(t) t:delete_bucket("zz"); t:create_bucket("c") end)
    assert.are.same({ "a", "a\0b", "zz", "\255" }, before:buckets())
    local rtx = be:read_tx()
    rtx:rlock()
    assert.are.same({ "a", "a\0b", "c", "\255" }, rtx:buckets())
    rtx:runlock()
    be:close()
    local again <close> = backend.open(path)
    assert.are.same({ "a", "a\0b", "c", "\255" }, again:view(function(v) return v:buckets() end))
  end)

  it("needs the lock or rlock like every read", function()
    local be <close> = backend.open_tmp()
    H.raises("not locked", function() return be:batch_tx():buckets() end)
    H.raises("not locked", function() return be:read_tx():buckets() end)
  end)
end)
