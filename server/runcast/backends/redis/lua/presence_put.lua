-- KEYS: presence (ZSET connection id -> expiry ms), data (HASH connection id -> entry JSON), version, watched (HASH).
-- ARGV: 1 ttl_ms, 2 retention_ms of `watched` (0 = keep), 3 mode ("join" or "refresh"), then per entry: connection id,
-- entry JSON, sub, name.
-- Adds or refreshes a node's own entries until now + ttl (the server's clock: every node compares against the same
-- one) in a handful of variadic commands per 1,000 entries, so a crowd's periodic refresh costs what one watcher's
-- does. The version moves when an entry is new (a join, or an entry a reader already dropped because its node stalled
-- past the ttl) or changed (its `typing` flag: the data held differs); a version key made anew starts at the time in
-- microseconds, so versions never come back. Each person's `last:<sub>` in `watched` moves to now; a join also sets
-- `first:<sub>` (once) and `name:<sub>`. The presence keys live a few ttls past the last write, so a run nobody
-- watches leaves nothing.
-- Answers: the number of new or changed entries.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local join = ARGV[3] == 'join'
local added, changed = 0, 0
local n = (#ARGV - 3) / 4
for first = 0, n - 1, 1000 do
  local last = math.min(first + 999, n - 1)
  local z, d, w, ids = {}, {}, {}, {}
  for i = first, last do ids[#ids + 1] = ARGV[4 + i * 4] end
  local held = redis.call('HMGET', KEYS[2], unpack(ids))
  for i = first, last do
    if held[i - first + 1] ~= ARGV[5 + i * 4] then changed = changed + 1 end
    local cid, entry, sub, name = ARGV[4 + i * 4], ARGV[5 + i * 4], ARGV[6 + i * 4], ARGV[7 + i * 4]
    z[#z + 1] = now + ttl
    z[#z + 1] = cid
    d[#d + 1] = cid
    d[#d + 1] = entry
    w[#w + 1] = 'last:' .. sub
    w[#w + 1] = now
    if join then
      w[#w + 1] = 'name:' .. sub
      w[#w + 1] = name
      redis.call('HSETNX', KEYS[4], 'first:' .. sub, now)
    end
  end
  added = added + redis.call('ZADD', KEYS[1], unpack(z))
  redis.call('HSET', KEYS[2], unpack(d))
  redis.call('HSET', KEYS[4], unpack(w))
end
added = math.max(added, changed)
if added > 0 then
  if redis.call('EXISTS', KEYS[3]) == 0 then redis.call('SET', KEYS[3], string.format('%d', now * 1000)) end
  redis.call('INCR', KEYS[3])
end
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ttl * 4) end
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[4], ARGV[2]) end
return added
