-- Records progress while converting (published if the job is watched, see watch.lua).
--
-- KEYS: job
-- ARGV: progress, channel
local f = redis.call('HMGET', KEYS[1], 'status', 'watched')
if f[1] == 'converting' then
  redis.call('HSET', KEYS[1], 'progress', ARGV[1])
  if f[2] then
    redis.call('PUBLISH', ARGV[2], cjson.encode({status = 'converting', progress = tonumber(ARGV[1])}))
  end
end
return 0
