-- KEYS: rec, log, seq, state, timers, runs, jobs, open (the index of runs paused with an open approval),
-- webhook outbox.
-- ARGV: 1 mode ('create' | 'commit'), 2 expected version, 3 new record JSON, 4 the events (1-based, comma-separated)
-- that also go to the webhook outbox ('' = none), 5 number of
-- events, 6 maxlen, 7 channel, 8 timer score ('' = none), 9 created score, 10 terminal ('1' | '0'),
-- 11 retention_ms, 12 run id, 13 number of jobs, then the events, then the jobs (JSON), then: open ('1' | '0'),
-- the feed channel, the feed entry (msgpack; '' = nothing to publish).
-- Answers: {0, first_seq} | {2} (conflict: the version moved, or create of an existing run)
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == 'create' then
  if cur then return {2} end
else
  if not cur then return {2} end
  local rec = cjson.decode(cur)
  if tonumber(rec.version) ~= tonumber(ARGV[2]) then return {2} end
end
local n = tonumber(ARGV[5])
local head = tonumber(redis.call('GET', KEYS[3]) or '0')
local run_id = ARGV[12]
-- the events first: should an XADD fail (a log out of step with its seq key), nothing else has been written
if n > 0 then
  local evs = append_events(KEYS[2], KEYS[3], head, n, 13, tonumber(ARGV[6]), ARGV[7])
  for i in string.gmatch(ARGV[4], '%d+') do
    redis.call('XADD', KEYS[9], 'MAXLEN', '~', '100000', '*', 'e', evs[tonumber(i)])
  end
end
redis.call('SET', KEYS[1], ARGV[3])
local jobs = tonumber(ARGV[13])
for i = 1, jobs do
  redis.call('XADD', KEYS[7], '*', 'j', ARGV[13 + n + i])
end
if ARGV[8] == '' then
  redis.call('ZREM', KEYS[5], run_id)
else
  redis.call('ZADD', KEYS[5], ARGV[8], run_id)
end
redis.call('ZADD', KEYS[6], ARGV[9], run_id)
local tail = 13 + n + jobs
if ARGV[tail + 1] == '1' then
  redis.call('ZADD', KEYS[8], ARGV[9], run_id)
else
  redis.call('ZREM', KEYS[8], run_id)
end
if ARGV[tail + 3] ~= '' then
  redis.call('PUBLISH', ARGV[tail + 2], ARGV[tail + 3])
end
if ARGV[10] == '1' and tonumber(ARGV[11]) > 0 then
  for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[11]) end
else
  for i = 2, 4 do redis.call('PERSIST', KEYS[i]) end
end
return {0, head + 1}
