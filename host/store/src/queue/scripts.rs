//! Lua scripts that make each pipeline transition atomic in Redis.
//!
//! Each runs as one script so that a crash between "mark the job" and "acknowledge the
//! entry" cannot leave the two disagreeing. Every script touches the keys of one tenant
//! (one hash tag, one Cluster slot); the scheduler's are in `sched.rs`.

use std::sync::LazyLock;

use redis::Script;

/// Lua shared by the scripts that change a job's state: `moved(usage, from, to)` keeps
/// the tenant's jobs-by-state totals (`usage_key`) in step with the job hash;
/// `count(key, field, n, ttl)` adds to an hourly or daily counter and gives its key the
/// TTL when the field is new (the first write of the period: one `EXPIRE` per period and
/// field, not one per job); `add(key, {field, n, ...}, ttl, current)` adds to several
/// fields of one hash in two commands (`HMGET`, `HSET`; one when the caller read the
/// current values already) where `HINCRBY` takes one per field, with the TTL when the
/// first field is new (`ttl` nil: none).
macro_rules! usage_lua {
    () => {
        r#"
local function moved(usage, from, to)
  if from == 'queued' or from == 'converting' or from == 'done' or from == 'failed' or from == 'expired' then
    redis.call('HINCRBY', usage, from, -1)
  end
  if to then redis.call('HINCRBY', usage, to, 1) end
end
local function count(key, field, n, ttl)
  if redis.call('HINCRBY', key, field, n) == tonumber(n) then redis.call('EXPIRE', key, ttl) end
end
local function add(key, deltas, ttl, cur)
  local fields = {}
  for i = 1, #deltas, 2 do fields[#fields + 1] = deltas[i] end
  cur = cur or redis.call('HMGET', key, unpack(fields))
  local set = {}
  for i = 1, #deltas, 2 do
    set[#set + 1] = deltas[i]
    set[#set + 1] = string.format('%d', tonumber(cur[(i + 1) / 2] or '0') + tonumber(deltas[i + 1]))
  end
  redis.call('HSET', key, unpack(set))
  if ttl and not cur[1] then redis.call('EXPIRE', key, ttl) end
end
"#
    };
}

/// Lua shared by the scripts that acknowledge a convert entry: `trim_below(stream,
/// group)` drops every entry the group no longer needs. Entries are delivered in id order
/// (`XREADGROUP >`), so every entry older than the oldest pending one was delivered and
/// acknowledged: that is the floor (two commands); with nothing pending, the floor is the
/// group's last delivered entry (one more, `XINFO GROUPS`). The stream has this one
/// group. (`SAFE_TRIM` does the same from outside, for any stream.)
macro_rules! trim_lua {
    () => {
        r#"
local function trim_below(stream, group)
  local p = redis.call('XPENDING', stream, group)
  local floor = p[2]
  if p[1] == 0 then
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
      local name, last
      for i = 1, #g, 2 do
        if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
      end
      if name == group then floor = last end
    end
  end
  if floor then redis.call('XTRIM', stream, 'MINID', floor) end
end
"#
    };
}

/// Stores a new job and queues it, if the tenant's limits allow: jobs per minute, jobs
/// not yet finished, stored bytes (read only when a limit is set). Counts it in the
/// tenant's usage.
/// KEYS: job, user's jobs, tenant's jobs, convert stream, usage, usage hour, usage day,
/// job rate (this minute).
/// ARGV: created ms, job id, input bytes, jobs per minute, max queued, quota bytes (each
/// 0: none), hour TTL, day TTL, then the job hash's field/value pairs.
/// Returns `{'ok'}` or `{limit, value, current}`.
pub static ENQUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        usage_lua!(),
        r#"
local jpm, mq, quota = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local bytes = tonumber(ARGV[3])
if jpm > 0 then
  local n = tonumber(redis.call('GET', KEYS[8]) or '0')
  if n >= jpm then return {'jobs_per_minute', jpm, n} end
end
if mq > 0 or quota > 0 then
  local u = redis.call('HMGET', KEYS[5], 'queued', 'converting', 'stored_bytes')
  local unfinished = tonumber(u[1] or '0') + tonumber(u[2] or '0')
  if mq > 0 and unfinished >= mq then return {'max_queued', mq, unfinished} end
  local stored = tonumber(u[3] or '0')
  if quota > 0 and stored + bytes > quota then return {'quota_bytes', quota, stored} end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 9))
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[1], ARGV[2])
redis.call('XADD', KEYS[4], '*', 'job', ARGV[2])
redis.call('HINCRBY', KEYS[5], 'queued', 1)
redis.call('HINCRBY', KEYS[5], 'stored_bytes', bytes)
for i, key in ipairs({KEYS[6], KEYS[7]}) do
  count(key, 'jobs', 1, ARGV[6 + i])
  redis.call('HINCRBY', key, 'bytes_in', bytes)
end
if redis.call('INCR', KEYS[8]) == 1 then redis.call('EXPIRE', KEYS[8], 120) end
return {'ok'}
"#
    ))
});

/// Deletes a job: its record and listings, its share of the tenant's totals (state and
/// stored bytes), and tells its followers; a `converting` job's worker is asked to stop
/// its run (on the cancel channel). KEYS: job, user's jobs, tenant's jobs, usage.
/// ARGV: job id, channel, the `deleted` event, cancel channel, cancel message.
/// Returns the job's status before (`missing`).
pub static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        usage_lua!(),
        r#"
local f = redis.call('HMGET', KEYS[1], 'status', 'input_bytes', 'output_bytes')
if not f[1] then return 'missing' end
moved(KEYS[4], f[1], nil)
if f[1] ~= 'expired' then
  redis.call('HINCRBY', KEYS[4], 'stored_bytes', -(tonumber(f[2] or '0') + tonumber(f[3] or '0')))
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
if f[1] == 'converting' then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return f[1]
"#
    ))
});

/// Marks a finished job `expired` (its blobs are gone: the retention sweeper deleted
/// them first) and takes its bytes off the tenant's stored total.
/// KEYS: job, usage. ARGV: now (unix s), channel. Returns 1 if it expired the job.
pub static EXPIRE_JOB: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        usage_lua!(),
        r#"
local f = redis.call('HMGET', KEYS[1], 'status', 'input_bytes', 'output_bytes')
if f[1] ~= 'done' and f[1] ~= 'failed' then return 0 end
moved(KEYS[2], f[1], 'expired')
redis.call('HINCRBY', KEYS[2], 'stored_bytes', -(tonumber(f[2] or '0') + tonumber(f[3] or '0')))
redis.call('HSET', KEYS[1], 'status', 'expired', 'expired_at', ARGV[1])
redis.call('PUBLISH', ARGV[2], cjson.encode({status = 'expired'}))
return 1
"#
    ))
});

/// Starts an attempt, recording the converter that runs it (appended to `converters`
/// unless it is the last one already; empty: not recorded). KEYS: job, usage.
/// ARGV: channel, converter digest, canary digest (empty: none). The canary runs a job's
/// first attempt only, once (`canary_tried`): a retry, or a job requeued by hand, runs
/// the stable converter.
/// Returns `{status, attempts, canary, job}`; status `missing` when the job was deleted;
/// canary 1 when this attempt runs the canary; job: the job hash as it was before (field,
/// value, ...), what the worker needs to run the attempt (one read for both).
pub static START_ATTEMPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        usage_lua!(),
        r#"
local job = redis.call('HGETALL', KEYS[1])
local h = {}
for i = 1, #job, 2 do h[job[i]] = job[i + 1] end
local f = {h['status'], h['attempts'], h['canary_tried'], h['converters']}
local status = f[1]
if not status then return {'missing', 0, 0, job} end
if status == 'queued' then moved(KEYS[2], 'queued', 'converting') end
if status == 'done' or status == 'failed' or status == 'expired' then
  return {status, tonumber(f[2] or '0'), 0, job}
end
local attempts = tonumber(f[2] or '0') + 1
local fields = {'status', 'converting', 'progress', '0', 'attempts', attempts}
local digest, canary = ARGV[2], 0
if ARGV[3] ~= '' and attempts == 1 and f[3] ~= '1' then
  digest, canary = ARGV[3], 1
  table.insert(fields, 'canary_tried')
  table.insert(fields, '1')
end
if digest ~= '' then
  local list = f[4] or ''
  if string.match(list, '([^,]*)$') ~= digest then
    if list == '' then list = digest else list = list .. ',' .. digest end
    table.insert(fields, 'converters')
    table.insert(fields, list)
  end
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('PUBLISH', ARGV[1], cjson.encode({status = 'converting', progress = 0}))
return {'converting', attempts, canary, job}
"#
    ))
});

/// Records progress while converting. KEYS: job. ARGV: progress, channel.
pub static PROGRESS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HGET', KEYS[1], 'status') == 'converting' then
  redis.call('HSET', KEYS[1], 'progress', ARGV[1])
  redis.call('PUBLISH', ARGV[2], cjson.encode({status = 'converting', progress = tonumber(ARGV[1])}))
end
return 0
"#,
    )
});

/// Marks the job done once (a second delivery changes nothing), acknowledges the entry
/// (and trims the stream below what the group still needs) and adds a notify entry (with
/// what the notifier needs: owner, input name, output). Releases the entry's running
/// lease. The conversion's CPU time goes to the hour and day with the rest.
/// A job whose MP3 would take the tenant's stored bytes past its quota is not marked
/// done (the caller deletes the MP3 and fails the job).
/// KEYS: job, convert stream, notify stream, running leases, usage, usage hour, usage day.
/// ARGV: group, entry id, output key, output bytes, duration ms, finished_at, job id,
/// tenant, channel, bitrate kbps (empty: unknown), hour TTL, day TTL, quota bytes (0:
/// none), CPU ms (0: none measured), trim (`0`: leave the stream's trim to a later ack).
/// Returns 0 when the job no longer exists (the caller drops the MP3), 2 when the quota
/// cannot hold the MP3 (nothing changed), else 1.
pub static COMPLETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        usage_lua!(),
        trim_lua!(),
        r#"
local f = redis.call('HMGET', KEYS[1], 'status', 'user_id', 'owner_email', 'input_name')
local before = f[1]
if not before then
  redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
  redis.call('ZREM', KEYS[4], ARGV[2])
  return 0
end
if before ~= 'done' then
  -- The totals: stored bytes (against the quota), this state and `done`, one read.
  local totals, fields = {'stored_bytes', ARGV[4], 'done', 1}, {'stored_bytes', 'done'}
  if before == 'queued' or before == 'converting' or before == 'failed' or before == 'expired' then
    totals[5], totals[6], fields[3] = before, -1, before
  end
  local cur = redis.call('HMGET', KEYS[5], unpack(fields))
  local quota = tonumber(ARGV[13] or '0')
  if quota > 0 and tonumber(cur[1] or '0') + tonumber(ARGV[4]) > quota then return 2 end
  add(KEYS[5], totals, nil, cur)
  local period = {'done', 1, 'bytes_out', ARGV[4]}
  local cpu = tonumber(ARGV[14] or '0')
  if cpu > 0 then period[5], period[6] = 'cpu_ms', cpu end
  add(KEYS[6], period, ARGV[11])
  add(KEYS[7], period, ARGV[12])
  redis.call('HSET', KEYS[1], 'status', 'done', 'progress', '1', 'error', '',
    'output_key', ARGV[3], 'output_bytes', ARGV[4], 'duration_ms', ARGV[5], 'finished_at', ARGV[6],
    'output_bitrate_kbps', ARGV[10])
  redis.call('XADD', KEYS[3], '*', 'job', ARGV[7], 'tenant', ARGV[8], 'status', 'done',
    'user_id', f[2] or '', 'owner_email', f[3] or '', 'input_name', f[4] or '',
    'output_key', ARGV[3], 'output_bytes', ARGV[4], 'duration_ms', ARGV[5], 'finished_at', ARGV[6])
  redis.call('PUBLISH', ARGV[9], cjson.encode({status = 'done', progress = 1}))
end
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZREM', KEYS[4], ARGV[2])
if ARGV[15] ~= '0' then trim_below(KEYS[2], ARGV[1]) end
return 1
"#
    ))
});

/// Fails the job for good: dead-letter entry with the reason (its id kept in the job as
/// `dead_letter`), notify entry, ack (and trim), running lease released.
/// KEYS: job, convert stream, dead-letter stream, notify stream, running leases, usage,
/// usage hour, usage day.
/// ARGV: group, entry id, reason, finished_at, job id, tenant, attempts, channel, hour
/// TTL, day TTL, trim (`0`: leave the stream's trim to a later ack).
pub static FAIL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        usage_lua!(),
        trim_lua!(),
        r#"
local f = redis.call('HMGET', KEYS[1], 'status', 'user_id', 'owner_email', 'input_name')
local before = f[1]
if before and before ~= 'done' and before ~= 'failed' and before ~= 'expired' then
  moved(KEYS[6], before, 'failed')
  for i, key in ipairs({KEYS[7], KEYS[8]}) do
    count(key, 'failed', 1, ARGV[8 + i])
  end
  local dead = redis.call('XADD', KEYS[3], '*', 'job', ARGV[5], 'tenant', ARGV[6], 'reason', ARGV[3], 'attempts', ARGV[7])
  redis.call('HSET', KEYS[1], 'status', 'failed', 'error', ARGV[3], 'finished_at', ARGV[4], 'dead_letter', dead)
  redis.call('XADD', KEYS[4], '*', 'job', ARGV[5], 'tenant', ARGV[6], 'status', 'failed', 'error', ARGV[3],
    'user_id', f[2] or '', 'owner_email', f[3] or '', 'input_name', f[4] or '',
    'finished_at', ARGV[4])
  redis.call('PUBLISH', ARGV[8], cjson.encode({status = 'failed', error = ARGV[3]}))
end
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZREM', KEYS[5], ARGV[2])
if ARGV[11] ~= '0' then trim_below(KEYS[2], ARGV[1]) end
return 1
"#
    ))
});

/// Queues a failed job again (a replay of its dead letter): attempts start over, the
/// error and the dead-letter entry go, a new convert entry is added.
/// KEYS: job, convert stream, dead-letter stream, usage. ARGV: job id, channel.
/// Returns the job's status before: `failed` when it was queued again, else unchanged.
pub static REQUEUE_FAILED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        usage_lua!(),
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'failed' then return status end
moved(KEYS[4], 'failed', 'queued')
local dead = redis.call('HGET', KEYS[1], 'dead_letter')
if dead and dead ~= '' then redis.call('XDEL', KEYS[3], dead) end
redis.call('HDEL', KEYS[1], 'error', 'finished_at', 'dead_letter')
redis.call('HSET', KEYS[1], 'status', 'queued', 'attempts', '0', 'progress', '0')
redis.call('XADD', KEYS[2], '*', 'job', ARGV[1])
redis.call('PUBLISH', ARGV[2], cjson.encode({status = 'queued', progress = 0}))
return 'failed'
"#
    ))
});

/// Schedules another attempt: back to `queued` with `retry_due` set (the worker has
/// already added the job to the scheduler's retry set, so a crash between the two leaves
/// a retry entry the promoter drops, never a job nobody requeues), ack, lease released.
/// KEYS: job, convert stream, running leases, usage. ARGV: group, entry id, reason, due
/// ms, channel, refund (`1`: the attempt does not count — a canary's, retried on stable),
/// trim (`0`: leave the stream's trim to a later ack).
/// Acknowledges (and trims) in any case.
pub static RETRY_LATER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        usage_lua!(),
        trim_lua!(),
        r#"
if redis.call('HGET', KEYS[1], 'status') == 'converting' then
  moved(KEYS[4], 'converting', 'queued')
  redis.call('HSET', KEYS[1], 'status', 'queued', 'error', ARGV[3], 'progress', '0', 'retry_due', ARGV[4])
  if ARGV[6] == '1' then redis.call('HINCRBY', KEYS[1], 'attempts', -1) end
  redis.call('PUBLISH', ARGV[5], cjson.encode({status = 'queued', progress = 0, error = ARGV[3]}))
end
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[2])
if ARGV[7] ~= '0' then trim_below(KEYS[2], ARGV[1]) end
return 1
"#
    ))
});

/// Adds a conversion's CPU time to its tenant's hour and day (an attempt that did not
/// complete; `COMPLETE` counts its own). KEYS: usage hour, usage day. ARGV: CPU ms, hour
/// TTL, day TTL.
pub static RECORD_CPU: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        usage_lua!(),
        r#"
count(KEYS[1], 'cpu_ms', ARGV[1], ARGV[2])
count(KEYS[2], 'cpu_ms', ARGV[1], ARGV[3])
return 0
"#
    ))
});

/// Puts one due retry back on its tenant's convert stream, if the job still waits for
/// it (`queued` with `retry_due` set); a stale retry entry changes nothing.
/// KEYS: job, convert stream. ARGV: job id. Returns 1 if queued.
pub static PROMOTE_RETRY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local f = redis.call('HMGET', KEYS[1], 'status', 'retry_due')
if f[1] ~= 'queued' or not f[2] or f[2] == '' then return 0 end
redis.call('HDEL', KEYS[1], 'retry_due')
redis.call('XADD', KEYS[2], '*', 'job', ARGV[1])
return 1
"#,
    )
});

/// Takes the next entry of a tenant's convert stream for a consumer, under the tenant's
/// running-jobs cap (expired leases, of workers that died, are dropped first when there
/// is a cap to count against): an entry idle past the visibility timeout
/// (`XAUTOCLAIM`), or a new one; the entry gets a lease until ARGV[3] + ARGV[4].
/// ARGV[8] says what to look for: `claim` (idle entries, then new ones) or `new` (new
/// ones only: the caller looks for idle entries of a tenant now and then, not before
/// every entry). A stream without the group (a tenant's first job since it was created or
/// deleted) gets it here, reading from its start.
/// A tenant over its CPU seconds this hour (`cpu_seconds_per_hour`, the smaller of the
/// tenant's and the server's) gets nothing until the hour is over.
/// KEYS: convert stream, running leases, tenant hash, usage hour.
/// ARGV: group, consumer, now ms, lease ms, visibility ms, server cap (0: none), server
/// CPU seconds per hour (0: none), order.
/// Returns `{'entry', id, job, taken_over}`, `{'capped', limit, value}` or `{'empty'}`.
pub static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local limits = redis.call('HMGET', KEYS[3], 'max_running', 'cpu_seconds_per_hour')
local cap = tonumber(limits[1] or '0') or 0
local server = tonumber(ARGV[6])
if server > 0 and (cap <= 0 or server < cap) then cap = server end
if cap > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
  local running = redis.call('ZCARD', KEYS[2])
  if running >= cap then return {'capped', 'max_running', cap} end
end
local cpu = tonumber(limits[2] or '0') or 0
local server_cpu = tonumber(ARGV[7])
if server_cpu > 0 and (cpu <= 0 or server_cpu < cpu) then cpu = server_cpu end
if cpu > 0 and tonumber(redis.call('HGET', KEYS[4], 'cpu_ms') or '0') >= cpu * 1000 then
  return {'capped', 'cpu_seconds_per_hour', cpu}
end
local function claim()
  local ok, r = pcall(redis.call, 'XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[5], '0-0', 'COUNT', 1)
  if not ok then
    if not string.find(r.err or tostring(r), 'NOGROUP') then error(r) end
    redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
    return nil
  end
  return r[2][1]
end
local function new()
  local ok, n = pcall(redis.call, 'XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1, 'STREAMS', KEYS[1], '>')
  if not ok then
    if not string.find(n.err or tostring(n), 'NOGROUP') then error(n) end
    redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
    n = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1, 'STREAMS', KEYS[1], '>')
  end
  if n then return n[1][2][1] end
  return nil
end
local e, taken = nil, 0
if ARGV[8] == 'claim' then
  e = claim()
  if e then taken = 1 end
end
if not e then e = new() end
if not e then return {'empty'} end
local job = ''
for i = 1, #e[2], 2 do
  if e[2][i] == 'job' then job = e[2][i + 1] end
end
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]) + tonumber(ARGV[4]), e[1])
return {'entry', e[1], job, taken}
"#,
    )
});

/// Whether an entry is still pending in a group (a lease's holder may have died).
/// KEYS: stream. ARGV: group, entry id. Returns 1 if pending.
pub static PENDING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local ok, p = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if not ok then return 0 end
return #p
"#,
    )
});

/// Trims a stream below the oldest entry any consumer group still needs: the smallest
/// pending id, or the last delivered id when nothing is pending. Never drops an
/// unacknowledged or undelivered entry. A stream without groups is capped at ARGV[1].
/// KEYS: stream. Returns entries removed.
pub static SAFE_TRIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  if am ~= bm then return am < bm end
  return as < bs
end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then
  return redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[1])
end
local floor = nil
for _, g in ipairs(groups) do
  local name, last
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
  end
  local keep = last
  local p = redis.call('XPENDING', KEYS[1], name)
  if p[1] > 0 then keep = p[2] end
  if floor == nil or less(keep, floor) then floor = keep end
end
return redis.call('XTRIM', KEYS[1], 'MINID', floor)
"#,
    )
});
