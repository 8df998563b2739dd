-- KEYS: presence, data, version.  ARGV: 1 the version the caller holds ('' = none).
-- Drops the entries whose expiry has passed (their node stopped refreshing them: it died) and bumps the version if
-- there were any (an empty set keeps no version: '0'). Answers {version} when the caller's version is current, else {version, entry JSON...}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  for i = 1, #expired, 1000 do
    redis.call('HDEL', KEYS[2], unpack(expired, i, math.min(i + 999, #expired)))
  end
  if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('DEL', KEYS[3]) else redis.call('INCR', KEYS[3]) end
end
local v = redis.call('GET', KEYS[3]) or '0'
if v == ARGV[1] then return {v} end
local out = {v}
local live = redis.call('ZRANGE', KEYS[1], 0, -1)
for i = 1, #live, 1000 do
  local vals = redis.call('HMGET', KEYS[2], unpack(live, i, math.min(i + 999, #live)))
  for j = 1, #vals do
    if vals[j] then out[#out + 1] = vals[j] end
  end
end
return out
