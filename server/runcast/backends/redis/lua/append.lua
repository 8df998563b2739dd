-- KEYS: rec, log, seq, state.  ARGV: owner ('' = any), publish ('PUBLISH' | 'SPUBLISH'), maxlen (0 = keep all), channel,
-- retention_ms (for a log with no record), tx ('' = none), event templates...
-- With a tx (a worker's append, which it retries after a lost answer), the state hash keeps `tx` = "<tx> <first>" of
-- the owner's last append: a retry whose first try landed is answered {4, first} instead of logging the events twice.
-- Answers: {0, first_seq} | {3} (not the owner) | {4, first_seq} (this tx already landed)
local owner = ARGV[1]
local tx = ARGV[6]
if owner ~= '' then
  local raw = redis.call('GET', KEYS[1])
  if not raw then return {3} end
  local rec = cjson.decode(raw)
  if rec.status ~= 'running' or rec.owner ~= owner then return {3} end
end
if tx ~= '' then
  local last = redis.call('HGET', KEYS[4], 'tx')
  if last then
    local last_tx, last_first = string.match(last, '^(%S+) (%d+)$')
    if last_tx == tx then return {4, tonumber(last_first)} end
  end
end
local head = tonumber(redis.call('GET', KEYS[3]) or '0')
local n = #ARGV - 6
if n == 0 then return {0, head + 1} end
append_events(KEYS[2], KEYS[3], head, n, 6, tonumber(ARGV[3]), ARGV[4], ARGV[2])
if tx ~= '' then
  redis.call('HSET', KEYS[4], 'tx', tx .. ' ' .. string.format('%d', head + 1))
end
-- a finished run's log keeps the record's time to live; a log with no record at all gets one of its own
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then
  for i = 2, 4 do redis.call('PEXPIRE', KEYS[i], ttl) end
elseif ttl == -2 and tonumber(ARGV[5]) > 0 then
  for i = 2, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[5]) end
end
return {0, head + 1}
