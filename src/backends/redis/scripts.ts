/** The Redis backend's Lua scripts, one per operation; each runs atomically on the server (see backend.ts for the keys). */

/** Shared by every script. KEYS[1] = holds, KEYS[2] = info; ARGV[1] = event channel. */
const PRELUDE = `
if redis.replicate_commands then redis.replicate_commands() end -- TIME before writes (Redis < 5)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Drop holds whose expiry is not after now; true when any went.
local function purge()
  local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
  for _, id in ipairs(gone) do redis.call('HDEL', KEYS[2], id) end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  return #gone > 0
end
-- Both keys live as long as the longest hold (an empty ZSET is gone already).
local function touch()
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  if #last == 0 then redis.call('DEL', KEYS[2]) return end
  local ttl = math.max(1, tonumber(last[2]) - now)
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
local function publish(what) redis.call('PUBLISH', ARGV[1], what) end
`;

/**
 * ACQUIRE. KEYS[3] = fencing counter. ARGV: channel, holderId, maxHolders, leaseMs, HolderInfo JSON, fencing floor.
 * Returns the hold's JSON: the existing one unchanged when holderId holds the key (re-attach, same token),
 * a new one (the counter's next value) when fewer than maxHolders holds exist; else nil. The counter is first raised
 * to the floor (the caller's high-water mark), and a missing one starts from the server's clock (microseconds), so a
 * counter lost with Redis's data hands out no old token again, in this cluster or another sharing the key.
 */
export const ACQUIRE = `${PRELUDE}
local changed = purge()
local result = false
if redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  result = redis.call('HGET', KEYS[2], ARGV[2])
elseif redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  local hold = cjson.decode(ARGV[5])
  -- A missing counter (a new key, or one lost with Redis's data) starts from this server's clock in microseconds:
  -- above every token drawn before a loss, whichever cluster drew it, unless the clock went back.
  local counter = tonumber(redis.call('GET', KEYS[3]) or string.format('%d', now * 1000))
  local floor = tonumber(ARGV[6])
  if floor > counter then counter = floor end
  hold.fencingToken = string.format('%d', counter + 1)
  redis.call('SET', KEYS[3], hold.fencingToken)
  hold.acquireTime = string.format('%d', now)
  hold.renewTime = hold.acquireTime
  result = cjson.encode(hold)
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[2])
  redis.call('HSET', KEYS[2], ARGV[2], result)
  changed = true
end
if changed then touch() publish('acquire') end
return result`;

/** RENEW. ARGV: channel, holderId, leaseMs. Owner-checked: extends only holderId's unexpired hold; JSON or nil. */
export const RENEW = `${PRELUDE}
local changed = purge()
local result = false
if redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[3]), ARGV[2])
  local hold = cjson.decode(redis.call('HGET', KEYS[2], ARGV[2]))
  hold.renewTime = string.format('%d', now)
  result = cjson.encode(hold)
  redis.call('HSET', KEYS[2], ARGV[2], result)
end
touch()
if changed then publish('expire') end
return result`;

/**
 * RELEASE. ARGV: channel, holderId. Owner-checked: removes only holderId's own unexpired hold, never one
 * that another holder took over after holderId's lease ran out (the naive lock's "mistaken release").
 * Returns 1 when a hold was removed, else 0.
 */
export const RELEASE = `${PRELUDE}
local changed = purge()
local removed = redis.call('ZREM', KEYS[1], ARGV[2])
if removed == 1 then redis.call('HDEL', KEYS[2], ARGV[2]) changed = true end
if changed then touch() publish('release') end
return removed`;

/** HOLDERS. ARGV: channel. Purges, then returns every current hold's JSON (unordered). */
export const HOLDERS = `${PRELUDE}
if purge() then touch() publish('expire') end
return redis.call('HVALS', KEYS[2])`;
