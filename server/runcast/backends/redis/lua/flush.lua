-- A commit's effects on the keys shared by all runs (all in the {P} slot), after commit.lua stored the record.
-- KEYS: jobs, timers, timerv, runs, flush, done, open, webhook outbox, audit (ZSET member -> settle ms), audit rows
-- (HASH member -> entry JSON), then the audit facet ZSETs this commit's entries go in (person / tool / agent).
-- ARGV: 1 run id, 2 record version (-1: the record is gone), 3 timer score ('' = none), 4 terminal ('1' | '0'),
-- 5 created score ('' = do not index), 6 the commit's mark in `flush`, 7 now (seconds), 8 open ('1' | '0': paused
-- with an open approval), 9 publish ('PUBLISH' | 'SPUBLISH'), 10 the feed channel, 11 the feed entry (msgpack;
-- '' = nothing to publish), 12 number of jobs, 13 number of hooks, then the jobs, then the hooks (packed events for
-- the webhook outbox: a late or repeated one is harmless, deliveries are keyed by run and seq), then the number of
-- audit entries (the run's settled approvals, audit.py), each as: member, score, entry JSON, number of facets, and
-- those facets' indexes in KEYS. Indexing them again (a later commit, a sweeper's flush) changes nothing.
-- The timer, the open index and the feed entry are written only from a version newer than the one they were last
-- written from, so a late flush of an older commit cannot undo a newer one. Answers: 0.
local run_id = ARGV[1]
local version = tonumber(ARGV[2])
local now = tonumber(ARGV[7])
local jobs = tonumber(ARGV[12])
for i = 1, jobs do
  redis.call('XADD', KEYS[1], '*', 'j', ARGV[13 + i])
end
for i = 1, tonumber(ARGV[13]) do  -- webhook outbox entries: at most about 100,000 kept undelivered
  redis.call('XADD', KEYS[8], 'MAXLEN', '~', '100000', '*', 'e', ARGV[13 + jobs + i])
end
if version >= 0 then
  local seen = tonumber(redis.call('HGET', KEYS[3], run_id) or '-1')
  if version > seen then
    redis.call('HSET', KEYS[3], run_id, version)
    if ARGV[3] == '' then
      redis.call('ZREM', KEYS[2], run_id)
    else
      redis.call('ZADD', KEYS[2], ARGV[3], run_id)
    end
    if ARGV[4] == '1' then
      redis.call('ZADD', KEYS[6], now, run_id)
    end
    if ARGV[8] == '1' then
      redis.call('ZADD', KEYS[7], ARGV[5], run_id)
    else
      redis.call('ZREM', KEYS[7], run_id)
    end
    if ARGV[11] ~= '' then
      redis.call(ARGV[9], ARGV[10], ARGV[11])
    end
    local at = 14 + jobs + tonumber(ARGV[13])
    for _ = 1, tonumber(ARGV[at] or '0') do
      local m, sc, row, nf = ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], tonumber(ARGV[at + 4])
      if redis.call('HSETNX', KEYS[10], m, row) == 1 then
        redis.call('ZADD', KEYS[9], sc, m)
        for f = 1, nf do redis.call('ZADD', KEYS[tonumber(ARGV[at + 4 + f])], sc, m) end
      end
      at = at + 4 + nf
    end
  end
  if ARGV[5] ~= '' then
    redis.call('ZADD', KEYS[4], ARGV[5], run_id)
  end
end
redis.call('ZREM', KEYS[5], ARGV[6])
-- a run that ended an hour ago gets no more flushes: forget the version its timer was written from
local old = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', now - 3600, 'LIMIT', 0, 10)
for i = 1, #old do
  redis.call('HDEL', KEYS[3], old[i])
  redis.call('ZREM', KEYS[6], old[i])
end
return 0
