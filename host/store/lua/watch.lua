-- Marks a job as watched (an event stream is open on it, or was): from then on the
-- scripts that change it publish each change on its channel; a job nobody watched is
-- changed without a `PUBLISH`. Marking before reading the job closes the gap: a change
-- made before the mark is in what the watcher reads next, one made after is published.
-- A job that does not exist is left alone. Returns 1 if it exists.
--
-- KEYS: job
-- ARGV:
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'watched', '1')
return 1
