-- Records progress while converting.
--
-- KEYS: job
-- ARGV: progress, channel
if redis.call('HGET', KEYS[1], 'status') == 'converting' then
  redis.call('HSET', KEYS[1], 'progress', ARGV[1])
  redis.call('PUBLISH', ARGV[2], cjson.encode({status = 'converting', progress = tonumber(ARGV[1])}))
end
return 0
