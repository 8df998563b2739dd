-- A state change of one run, in the run's slot (the shared {P} keys are written afterwards by flush.lua).
-- KEYS: rec, log, seq, state, outbox (jobs), hooks (events for the webhook outbox), and on one Redis {P}:flush.
-- ARGV: 1 mode ('create' | 'commit'), 2 expected version, 3 new record JSON, 4 publish ('PUBLISH' | 'SPUBLISH'),
-- 5 number of events, 6 maxlen, 7 channel, 8 terminal ('1' | '0'), 9 retention_ms, 10 number of jobs,
-- 11 the events (1-based, comma-separated) that also go to the webhook outbox ('' = none), 12 the feed channel,
-- 13 the run's feed entry (msgpack; '' = publish none here), 14 the commit's flush mark ('' = none here), 15 its
-- deadline, then the events, then the jobs (JSON).
-- On one Redis the feed entry is published here, with the record it describes, so the inboxes and run lists hear of
-- a change when its events go out rather than one script later (flush.lua then publishes nothing). On a cluster the
-- feed channel is in the {P} slot, not the run's: flush.lua publishes it. Likewise the flush mark: on one Redis it is
-- written here, with the commit (a round trip less before the events go out); on a cluster the caller wrote it first.
-- Answers: {0, first_seq, number of jobs in the outbox, the jobs..., the hooks...} (everything not yet flushed,
-- this commit's last) | {2} (conflict: the version moved, or create of an existing run)
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == 'create' then
  if cur then return {2} end
else
  if not cur then return {2} end
  local rec = cjson.decode(cur)
  if tonumber(rec.version) ~= tonumber(ARGV[2]) then return {2} end
end
if ARGV[14] ~= '' then
  redis.call('ZADD', KEYS[7], ARGV[15], ARGV[14])
end
local n = tonumber(ARGV[5])
local head = tonumber(redis.call('GET', KEYS[3]) or '0')
-- the events first: should an XADD fail (a log out of step with its seq key), nothing else has been written
if n > 0 then
  local evs = append_events(KEYS[2], KEYS[3], head, n, 15, tonumber(ARGV[6]), ARGV[7], ARGV[4])
  for i in string.gmatch(ARGV[11], '%d+') do
    redis.call('RPUSH', KEYS[6], evs[tonumber(i)])
  end
end
redis.call('SET', KEYS[1], ARGV[3])
if ARGV[13] ~= '' then
  redis.call(ARGV[4], ARGV[12], ARGV[13])
end
local jobs = tonumber(ARGV[10])
for i = 1, jobs do
  redis.call('RPUSH', KEYS[5], ARGV[15 + n + i])
end
if ARGV[8] == '1' and tonumber(ARGV[9]) > 0 then
  for i = 1, 6 do redis.call('PEXPIRE', KEYS[i], ARGV[9]) end
else
  for i = 2, 6 do redis.call('PERSIST', KEYS[i]) end
end
local outbox = redis.call('LRANGE', KEYS[5], 0, -1)
local out = {0, head + 1, #outbox}
for i = 1, #outbox do out[#out + 1] = outbox[i] end
local hooks = redis.call('LRANGE', KEYS[6], 0, -1)
for i = 1, #hooks do out[#out + 1] = hooks[i] end
return out
