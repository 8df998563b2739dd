-- KEYS: log, seq.  ARGV: after, upto ('' = to the end), limit (-1 = none).  -> {0, packed...} | {1, first_kept}
local head = tonumber(redis.call('GET', KEYS[2]) or '0')
local first = head - redis.call('XLEN', KEYS[1]) + 1
local after = tonumber(ARGV[1])
if after + 1 < first then return {1, first} end
local limit = tonumber(ARGV[3])
if limit == 0 then return {0} end
local stop = '+'
if ARGV[2] ~= '' then
  local upto = tonumber(ARGV[2])
  if upto <= after then return {0} end
  stop = string.format('%d-0', upto)
end
local start = string.format('%d-0', after + 1)
local res
if limit > 0 then
  res = redis.call('XRANGE', KEYS[1], start, stop, 'COUNT', limit)
else
  res = redis.call('XRANGE', KEYS[1], start, stop)
end
local out = {0}
for i = 1, #res do
  local fields = res[i][2]
  if fields then out[#out + 1] = fields[2] end
end
return out
