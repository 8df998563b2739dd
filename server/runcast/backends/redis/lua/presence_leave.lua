-- KEYS: presence, data, version, watched.  ARGV: 1 retention_ms of `watched`, then per entry: connection id, sub.
-- Removes the entries now; bumps the version if one was there (and drops the version with the last entry: a set made
-- anew starts its version at the time in microseconds); moves each person's `last:<sub>` to now.
-- Answers: the number of entries removed.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local removed = 0
for i = 2, #ARGV, 2 do
  local cid, sub = ARGV[i], ARGV[i + 1]
  removed = removed + redis.call('ZREM', KEYS[1], cid)
  redis.call('HDEL', KEYS[2], cid)
  if redis.call('HEXISTS', KEYS[4], 'first:' .. sub) == 1 then
    redis.call('HSET', KEYS[4], 'last:' .. sub, now)
  end
end
if removed > 0 then
  if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('DEL', KEYS[3]) else redis.call('INCR', KEYS[3]) end
end
if tonumber(ARGV[1]) > 0 and redis.call('EXISTS', KEYS[4]) == 1 then redis.call('PEXPIRE', KEYS[4], ARGV[1]) end
return removed
