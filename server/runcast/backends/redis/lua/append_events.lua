-- Shared by append.lua and commit.lua (prepended to them when loaded): XADD the events with ids head+1..,
-- set the head, trim exactly, publish them as one message (`publish`: PUBLISH on one Redis, SPUBLISH on a cluster,
-- where the channel carries the run's hash tag and so lives in the run's slot); returns the packed events. `base` is
-- the index in ARGV just before the first event. Each event arrives packed with seq 0 in a fixed-width uint32 slot at bytes 7..10; the
-- real seq is written there.
local function append_events(log_key, seq_key, head, n, base, maxlen, channel, publish)
  local evs = {}
  for i = 1, n do
    local tmpl = ARGV[base + i]
    local ev = string.sub(tmpl, 1, 6) .. struct.pack('>I4', head + i) .. string.sub(tmpl, 11)
    redis.call('XADD', log_key, string.format('%d-0', head + i), 'e', ev)
    evs[i] = ev
  end
  redis.call('SET', seq_key, string.format('%d', head + n))
  if maxlen > 0 then
    redis.call('XTRIM', log_key, 'MAXLEN', maxlen)
  end
  redis.call(publish, channel, cmsgpack.pack(evs))
  return evs
end
