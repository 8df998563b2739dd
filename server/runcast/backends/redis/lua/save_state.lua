-- KEYS: state, rec.  ARGV: segment, state, retention_ms.  The state keeps the record's time to live.
redis.call('HSET', KEYS[1], 'segment', ARGV[1], 'state', ARGV[2])
local ttl = redis.call('PTTL', KEYS[2])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
elseif ttl == -2 and tonumber(ARGV[3]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
