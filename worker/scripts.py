"""Lua scripts for the task transitions that depend on the current state.

Each runs atomically in Redis. Every script checks the status (and where it
matters the attempt number and the owner) before it writes, which is what keeps
one owner per task: a late write from an attempt that was given up finds the
record changed and does nothing. Final transitions also expire the record, drop
it from the unfinished index and publish its id so long-polls wake.

KEYS[1] is always the task's hash, KEYS[2] (where used) the unfinished index.
"""

# ARGV: attempt, now, owner.
START = """
local current = redis.call('HMGET', KEYS[1], 'status', 'attempts')
if current[1] ~= 'queued' or tonumber(current[2]) ~= tonumber(ARGV[1]) - 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'status', 'running', 'attempts', ARGV[1],
           'started_at', ARGV[2], 'owner', ARGV[3])
return 1
"""

# ARGV: attempt, progress JSON.
PROGRESS = """
local current = redis.call('HMGET', KEYS[1], 'status', 'attempts')
if current[1] ~= 'running' or current[2] ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'progress', ARGV[2])
return 1
"""

# ARGV: attempt, status, now, field, value, ttl, traceback, task id, channel.
FINISH = """
local current = redis.call('HMGET', KEYS[1], 'status', 'attempts')
if current[1] ~= 'running' or current[2] ~= ARGV[1] then
  return false
end
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
# ARGV: owner, now, ttl, error JSON, task id, channel.
RELEASE = """
local current = redis.call('HMGET', KEYS[1], 'status', 'attempts', 'owner', 'max_attempts')
local attempts = current[2] or '0'
if current[1] == 'queued' then
  return {'queued', attempts}
end
if current[1] ~= 'running' or current[3] ~= ARGV[1] then
  return {'gone', attempts}
end
redis.call('HDEL', KEYS[1], 'owner')
if tonumber(attempts) < tonumber(current[4] or '1') then
  redis.call('HSET', KEYS[1], 'status', 'queued')
  return {'queued', attempts}
end
redis.call('HSET', KEYS[1], 'status', 'failed', 'finished_at', ARGV[2], 'error', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[5])
redis.call('PUBLISH', ARGV[6], ARGV[5])
return {'failed', attempts}
"""

# Cancel a queued or running task. Returns {previous status, owner, attempts};
# {'missing'} when there is no such task.
# ARGV: now, ttl, task id, channel.
CANCEL = """
local current = redis.call('HMGET', KEYS[1], 'status', 'owner', 'attempts')
if not current[1] then
  return {'missing'}
end
if current[1] ~= 'queued' and current[1] ~= 'running' then
  return {current[1]}
end
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', ARGV[1])
redis.call('HDEL', KEYS[1], 'owner')
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[3])
return {current[1], current[2] or '', current[3] or '0'}
"""
