-- KEYS: presence, data, version, watched.  ARGV: 1 ttl_ms, 2 retention_ms of `watched` (0 = keep), then per entry:
-- connection id, entry JSON, sub.
-- A node's periodic refresh of its own watchers: a handful of variadic commands per run, however many watchers there
-- are (presence_join.lua spends several per entry, which is right for joins but would make a crowd's refreshes cost
-- O(watchers) commands every interval). Moves every entry's expiry to now + ttl; an entry a reader already dropped
-- (its node stalled past the ttl) comes back with its data, and the version moves. Each person's `last:<sub>` moves
-- to now. Answers: the number of entries that came back.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local added = 0
local n = (#ARGV - 2) / 3
for first = 0, n - 1, 1000 do
  local last = math.min(first + 999, n - 1)
  local z, d, w = {}, {}, {}
  for i = first, last do
    local cid, entry, sub = ARGV[3 + i * 3], ARGV[4 + i * 3], ARGV[5 + i * 3]
    z[#z + 1] = now + ttl
    z[#z + 1] = cid
    d[#d + 1] = cid
    d[#d + 1] = entry
    w[#w + 1] = 'last:' .. sub
    w[#w + 1] = now
  end
  added = added + redis.call('ZADD', KEYS[1], unpack(z))
  redis.call('HSET', KEYS[2], unpack(d))
  redis.call('HSET', KEYS[4], unpack(w))
end
if added > 0 then
  if redis.call('EXISTS', KEYS[3]) == 0 then redis.call('SET', KEYS[3], string.format('%d', now * 1000)) end
  redis.call('INCR', KEYS[3])
end
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ttl * 4) end
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[4], ARGV[2]) end
return added
