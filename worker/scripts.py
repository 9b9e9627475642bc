"""Lua scripts for the task transitions that depend on the current state.

Each runs atomically in Redis. Every script checks the status (and where it
matters the attempt number and the owner) before it writes, which is what keeps
one owner per task: a late write from an attempt that was given up finds the
record changed and does nothing. Final transitions also expire the record, drop
it from the unfinished index and publish its id so long-polls wake; the others
publish the id on the change channel, which event streams follow.

Every transition also moves the id between the per-status listing indexes (sorted
sets scored by creation time), in the same script, so a listing never disagrees
with the records for longer than one script run.

KEYS[1] is always the task's hash, KEYS[2] (where used) the unfinished index.
"""

# Create a queued record and index it; with an idempotency key, only if the key
# is new. Returns {'created'} or {'exists', <stored key value>}. Afterwards the
# oldest few entries of the listing indexes are checked and those whose record
# expired are dropped, so the indexes stay as bounded as the records.
# KEYS: task, unfinished, all-index, name-index, queued-index, succeeded-index,
#       failed-index, cancelled-index, idempotency key.
# ARGV: id, name, now, max attempts, time limit, args, key value ('' for no key),
#       key ttl, task key prefix, trim count.
CREATE = """
if ARGV[7] ~= '' then
  if not redis.call('SET', KEYS[9], ARGV[7], 'NX', 'EX', ARGV[8]) then
    return {'exists', redis.call('GET', KEYS[9])}
  end
end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'name', ARGV[2], 'status', 'queued',
           'created_at', ARGV[3], 'attempts', 0, 'max_attempts', ARGV[4],
           'time_limit_s', ARGV[5], 'args', ARGV[6])
for i = 2, 5 do
  redis.call('ZADD', KEYS[i], ARGV[3], ARGV[1])
end
for _, index in ipairs({KEYS[3], KEYS[4]}) do
  for _, old in ipairs(redis.call('ZRANGE', index, 0, tonumber(ARGV[10]) - 1)) do
    if redis.call('EXISTS', ARGV[9] .. old) == 0 then
      redis.call('ZREM', index, old)
      for i = 6, 8 do
        redis.call('ZREM', KEYS[i], old)
      end
    end
  end
end
return {'created'}
"""

# Undo CREATE for a task the client never heard of (the broker refused it).
# KEYS: task, unfinished, all-index, name-index, queued-index, idempotency key.
# ARGV: id.
DISCARD = """
redis.call('DEL', KEYS[1], KEYS[6])
for i = 2, 5 do
  redis.call('ZREM', KEYS[i], ARGV[1])
end
return 1
"""

# KEYS: task, queued-index, running-index.
# ARGV: attempt, now, owner, task id, change channel.
START = """
local current = redis.call('HMGET', KEYS[1], 'status', 'attempts', 'created_at')
if current[1] ~= 'queued' or tonumber(current[2]) ~= tonumber(ARGV[1]) - 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'status', 'running', 'attempts', ARGV[1],
           'started_at', ARGV[2], 'owner', ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[4])
redis.call('ZADD', KEYS[3], current[3], ARGV[4])
redis.call('PUBLISH', ARGV[5], ARGV[4])
return 1
"""

# ARGV: attempt, progress JSON, task id, change channel.
PROGRESS = """
local current = redis.call('HMGET', KEYS[1], 'status', 'attempts')
if current[1] ~= 'running' or current[2] ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'progress', ARGV[2])
redis.call('PUBLISH', ARGV[4], ARGV[3])
return 1
"""

# KEYS: task, unfinished, running-index, index of the final status.
# ARGV: attempt, status, now, field, value, ttl, traceback, task id, channel.
FINISH = """
local current = redis.call('HMGET', KEYS[1], 'status', 'attempts', 'created_at')
if current[1] ~= 'running' or current[2] ~= ARGV[1] then
  return false
end
redis.call('ZREM', KEYS[3], ARGV[8])
redis.call('ZADD', KEYS[4], current[3], ARGV[8])
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'finished_at', ARGV[3], ARGV[4], ARGV[5])
if ARGV[7] ~= '' then
  redis.call('HSET', KEYS[1], 'traceback', ARGV[7])
end
redis.call('HDEL', KEYS[1], 'owner')
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('ZREM', KEYS[2], ARGV[8])
redis.call('PUBLISH', ARGV[9], ARGV[8])
return redis.call('HGETALL', KEYS[1])
"""

# Give a running attempt up because its owner is lost. Returns {outcome, attempts}:
# 'queued' (waits for another attempt; also when it never started), 'failed'
# (no attempts left; the error is written) or 'gone' (finished, cancelled, owned
# by someone else, or missing).
# KEYS: task, unfinished, running-index, queued-index, failed-index.
# ARGV: owner, now, ttl, error JSON, task id, channel, change channel.
RELEASE = """
local current = redis.call('HMGET', KEYS[1], 'status', 'attempts', 'owner',
                           'max_attempts', 'created_at')
local attempts = current[2] or '0'
if current[1] == 'queued' then
  return {'queued', attempts}
end
if current[1] ~= 'running' or current[3] ~= ARGV[1] then
  return {'gone', attempts}
end
redis.call('HDEL', KEYS[1], 'owner')
redis.call('ZREM', KEYS[3], ARGV[5])
if tonumber(attempts) < tonumber(current[4] or '1') then
  redis.call('HSET', KEYS[1], 'status', 'queued')
  redis.call('ZADD', KEYS[4], current[5], ARGV[5])
  redis.call('PUBLISH', ARGV[7], ARGV[5])
  return {'queued', attempts}
end
redis.call('ZADD', KEYS[5], current[5], ARGV[5])
redis.call('HSET', KEYS[1], 'status', 'failed', 'finished_at', ARGV[2], 'error', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[5])
redis.call('PUBLISH', ARGV[6], ARGV[5])
return {'failed', attempts}
"""

# Cancel a queued or running task. Returns {previous status, owner, attempts};
# {'missing'} when there is no such task.
# KEYS: task, unfinished, queued-index, running-index, cancelled-index.
# ARGV: now, ttl, task id, channel.
CANCEL = """
local current = redis.call('HMGET', KEYS[1], 'status', 'owner', 'attempts', 'created_at')
if not current[1] then
  return {'missing'}
end
if current[1] ~= 'queued' and current[1] ~= 'running' then
  return {current[1]}
end
redis.call('ZREM', KEYS[3], ARGV[3])
redis.call('ZREM', KEYS[4], ARGV[3])
redis.call('ZADD', KEYS[5], current[4], ARGV[3])
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', ARGV[1])
redis.call('HDEL', KEYS[1], 'owner')
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[3])
return {current[1], current[2] or '', current[3] or '0'}
"""
