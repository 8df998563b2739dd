-- Admit one start against a user's quotas (quotas.py), atomically across hub nodes.
-- KEYS[1] starts  ZSET run_id -> start time (ms): the user's starts in the sliding window
-- KEYS[2] open    ZSET run_id -> start time (ms): the user's runs not yet finished (the caller prunes finished ones)
-- ARGV[1] now_ms, ARGV[2] window_ms, ARGV[3] starts per window (0: no limit), ARGV[4] max open (0: no limit),
-- ARGV[5] run_id, ARGV[6] ttl_ms of the open set
-- Returns {0} admitted (and counted) | {1} too many open runs | {2, wait_ms} too many starts in the window
local now_ms, window_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
local per_window, max_open = tonumber(ARGV[3]), tonumber(ARGV[4])
local run_id, open_ttl_ms = ARGV[5], tonumber(ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - window_ms)
if max_open > 0 and redis.call('ZCARD', KEYS[2]) >= max_open then
  return {1}
end
if per_window > 0 then
  local n = redis.call('ZCARD', KEYS[1])
  if n >= per_window then
    local oldest = redis.call('ZRANGE', KEYS[1], n - per_window, n - per_window, 'WITHSCORES')
    return {2, math.floor(tonumber(oldest[2]) + window_ms - now_ms)}
  end
end
redis.call('ZADD', KEYS[1], now_ms, run_id)
redis.call('PEXPIRE', KEYS[1], window_ms)
redis.call('ZADD', KEYS[2], now_ms, run_id)
redis.call('PEXPIRE', KEYS[2], open_ttl_ms)
return {0}
