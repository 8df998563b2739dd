-- KEYS: presence (ZSET connection id -> expiry ms), data (HASH connection id -> entry JSON), version, watched (HASH).
-- ARGV: 1 ttl_ms, 2 retention_ms of the who-watched record (0 = keep), then per entry: connection id, entry JSON, sub, name.
-- Adds or refreshes the entries until now + ttl (the server's clock: every node compares against the same one), bumps
-- the version when an entry is new (a version key made anew starts at the time in microseconds: versions never come back), and records each person in `watched`: `first:<sub>` (set once), `last:<sub>`,
-- `name:<sub>` (ms). The presence keys live a few ttls past the last refresh, so a run nobody watches leaves nothing.
-- Answers: the number of new entries.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local added = 0
for i = 3, #ARGV, 4 do
  local cid, entry, sub, name = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if redis.call('ZADD', KEYS[1], now + ttl, cid) == 1 then
    redis.call('HSET', KEYS[2], cid, entry)
    added = added + 1
  end
  redis.call('HSETNX', KEYS[4], 'first:' .. sub, now)
  redis.call('HSET', KEYS[4], 'last:' .. sub, now, 'name:' .. sub, name)
end
if added > 0 then
  if redis.call('EXISTS', KEYS[3]) == 0 then redis.call('SET', KEYS[3], string.format('%d', now * 1000)) end
  redis.call('INCR', KEYS[3])
end
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ttl * 4) end
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[4], ARGV[2]) end
return added
