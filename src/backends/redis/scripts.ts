/** The Redis backend's Lua scripts, one per operation; each runs atomically on the server (see backend.ts for the keys). */

/**
 * Shared by every script. KEYS[1] = holds, KEYS[2] = info, KEYS[3] = queue, KEYS[4] = the queue's expiries (each
 * waiter by when its entry expires, ms, server time; its info JSON carries the same `expires`); ARGV[1] = event
 * channel. Expired holds and waiters are found by score, so a script's cost does not grow with the queue.
 */
const PRELUDE = `
if redis.replicate_commands then redis.replicate_commands() end -- TIME before writes (Redis < 5)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local nowUs = tonumber(t[1]) * 1000000 + tonumber(t[2])
-- Drop holds and waiters whose expiry is not after now; true when a hold went.
local function purge()
  local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
  if #gone > 0 then
    for _, id in ipairs(gone) do redis.call('HDEL', KEYS[2], id) end
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  end
  local expired = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now)
  if #expired > 0 then
    for _, id in ipairs(expired) do
      redis.call('ZREM', KEYS[3], id)
      redis.call('HDEL', KEYS[2], id)
    end
    redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  end
  -- Entries a version without the expiry index queued: checked one by one once, and indexed.
  local queued = redis.call('ZCARD', KEYS[3])
  if queued > 0 and queued > redis.call('ZCARD', KEYS[4]) then
    for _, id in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
      local entry = redis.call('HGET', KEYS[2], id)
      local expires = entry and cjson.decode(entry).expires
      if expires and expires > now then
        redis.call('ZADD', KEYS[4], expires, id)
      else
        redis.call('ZREM', KEYS[3], id)
        redis.call('HDEL', KEYS[2], id)
      end
    end
  end
  return #gone > 0
end
-- Every key lives as long as the longest hold or waiter (an empty ZSET is gone already).
-- (The queue and its expiries exist together: with no expiries there is no queue to extend.)
local function touch()
  local last = now
  local queue = false
  for _, byExpiry in ipairs({KEYS[1], KEYS[4]}) do
    local longest = redis.call('ZRANGE', byExpiry, -1, -1, 'WITHSCORES')
    if #longest > 0 then
      last = math.max(last, tonumber(longest[2]))
      queue = byExpiry == KEYS[4]
    end
  end
  if last <= now then redis.call('DEL', KEYS[2]) return end
  for i = 1, queue and 4 or 2 do redis.call('PEXPIRE', KEYS[i], last - now) end
end
-- A new hold of id (HolderInfo JSON info) expiring at expires (ms): the fencing counter (KEYS[5]) first raised
-- to floor (a decimal string: the caller's high-water mark), a missing one started from the server's clock; its JSON.
local function grant(id, info, expires, floor)
  local counter = tonumber(redis.call('GET', KEYS[5]) or string.format('%d', nowUs))
  if tonumber(floor) > counter then counter = tonumber(floor) end
  local token = string.format('%d', counter + 1)
  redis.call('SET', KEYS[5], token)
  local at = string.format('%d', now)
  local hold = string.sub(info, 1, -2) .. ',"fencingToken":"' .. token .. '","acquireTime":"' .. at .. '","renewTime":"' .. at .. '"}'
  redis.call('ZADD', KEYS[1], expires, id)
  redis.call('HSET', KEYS[2], id, hold)
  return hold
end
-- Extends id's hold to lease ms from now; its JSON with the new renewTime.
local function extend(id, lease)
  redis.call('ZADD', KEYS[1], 'XX', now + lease, id)
  local hold = cjson.decode(redis.call('HGET', KEYS[2], id))
  hold.renewTime = string.format('%d', now)
  local json = cjson.encode(hold)
  redis.call('HSET', KEYS[2], id, json)
  return json
end
-- Hands the free slots to the waiters at the head of the queue, each by what its entry recorded (maxHolders, floor),
-- each hold expiring when its entry would have: so the waiter's operator, which counts the hold's validity from
-- when it last sent the request that queued it, never counts longer than the hold lasts. Returns the holds' JSON
-- and their holders' ids.
local function promote()
  local granted, ids = {}, {}
  while true do
    local head = redis.call('ZRANGE', KEYS[3], 0, 0)
    local raw = #head > 0 and redis.call('HGET', KEYS[2], head[1])
    if not raw then break end
    local entry = cjson.decode(raw)
    if not entry.maxHolders or redis.call('ZCARD', KEYS[1]) >= entry.maxHolders then break end
    redis.call('ZREM', KEYS[3], head[1])
    redis.call('ZREM', KEYS[4], head[1])
    local info = cjson.encode({holderId = entry.holderId, claim = entry.claim, holderIdentity = entry.holderIdentity, cluster = entry.cluster})
    granted[#granted + 1] = grant(head[1], info, entry.expires, entry.floor or '0')
    ids[#ids + 1] = head[1]
  end
  return granted, ids
end
-- "<what> turn: <ids>" names the waiters that may take a slot now (the first maxHolders - holds of the queue;
-- maxHolders as the head entry recorded it) after the ids of the holders the granted holds were handed to; a bare
-- "<what>" (an entry without maxHolders, nobody granted) wakes every waiter. Each granted hold's JSON follows on a
-- line of its own, after a space (older operators split the first line at spaces: the ids stay whole).
local function publish(what, granted, ids)
  granted = granted or {}
  local turn = ids or {}
  local head = redis.call('ZRANGE', KEYS[3], 0, 0)
  local max = #head > 0 and cjson.decode(redis.call('HGET', KEYS[2], head[1])).maxHolders
  if #head > 0 and not max and #granted == 0 then
    redis.call('PUBLISH', ARGV[1], what)
    return
  end
  local free = max and max - redis.call('ZCARD', KEYS[1]) or 0
  if free > 0 then
    for _, id in ipairs(redis.call('ZRANGE', KEYS[3], 0, free - 1)) do turn[#turn + 1] = id end
  end
  local msg = what .. ' turn:' .. (#turn > 0 and ' ' .. table.concat(turn, ' ') or '')
  if #granted > 0 then msg = msg .. ' \\n' .. table.concat(granted, '\\n') end
  redis.call('PUBLISH', ARGV[1], msg)
end
`;

/**
 * ACQUIRE. KEYS[5] = fencing counter. ARGV: channel, holderId, maxHolders, leaseMs, HolderInfo JSON, fencing floor,
 * wait ("1" or "0"). Returns the hold's JSON: the existing one, extended to leaseMs from now, when holderId holds the
 * key (re-attach: same token; one a release handed over is taken up so); a new one (the counter's next value) when
 * fewer than maxHolders holds and earlier queue entries exist; else nil, and with wait holderId's queue entry is
 * added at the back (score: server time in microseconds) or refreshed; the entry records maxHolders and the floor,
 * for a release that hands it a slot (promote). The counter is first raised to the floor (the caller's high-water
 * mark), and a missing one starts from the server's clock (microseconds), so a counter lost with Redis's data hands
 * out no old token again, in this cluster or another.
 */
export const ACQUIRE = `${PRELUDE}
-- A lock nobody holds or waits for (its keys expired or never made): nothing to purge, nobody ahead. (ZCARD, not
-- EXISTS: the commands scripts call are the ACL users are given, see acl.ts.)
if redis.call('ZCARD', KEYS[1]) == 0 and redis.call('ZCARD', KEYS[3]) == 0 then
  local hold = grant(ARGV[2], ARGV[5], now + tonumber(ARGV[4]), ARGV[6])
  for i = 1, 2 do redis.call('PEXPIRE', KEYS[i], tonumber(ARGV[4])) end
  redis.call('PUBLISH', ARGV[1], 'acquire turn:')
  return hold
end
local changed = purge()
local result = false
local id = ARGV[2]
if redis.call('ZSCORE', KEYS[1], id) then
  result = extend(id, tonumber(ARGV[4]))
  touch()
else
  local rank = redis.call('ZRANK', KEYS[3], id)
  local ahead = rank or redis.call('ZCARD', KEYS[3])
  if redis.call('ZCARD', KEYS[1]) + ahead < tonumber(ARGV[3]) then
    result = grant(id, ARGV[5], now + tonumber(ARGV[4]), ARGV[6])
    if rank then
      redis.call('ZREM', KEYS[3], id)
      redis.call('ZREM', KEYS[4], id)
    end
    changed = true
  elseif ARGV[7] == '1' then
    local entry = cjson.decode(ARGV[5])
    entry.expires = now + tonumber(ARGV[4])
    entry.maxHolders = tonumber(ARGV[3])
    entry.floor = ARGV[6]
    redis.call('ZADD', KEYS[3], 'NX', nowUs, id)
    redis.call('ZADD', KEYS[4], entry.expires, id)
    redis.call('HSET', KEYS[2], id, cjson.encode(entry))
    touch()
  end
end
if changed then touch() publish('acquire') end
return result`;

/** RENEW. ARGV: channel, holderId, leaseMs. Owner-checked: extends only holderId's unexpired hold; JSON or nil. */
export const RENEW = `${PRELUDE}
local changed = purge()
local result = false
if redis.call('ZSCORE', KEYS[1], ARGV[2]) then result = extend(ARGV[2], tonumber(ARGV[3])) end
touch()
if changed then publish('expire') end
return result`;

/**
 * RELEASE. KEYS[5] = fencing counter. ARGV: channel, holderId. Owner-checked: removes only holderId's own unexpired
 * hold (never one that another holder took over after holderId's lease ran out: the naive lock's "mistaken release"),
 * or its queue entry. The freed slot goes straight to the queue's head (promote), whose operator learns it from the
 * event, without asking: a handoff costs the release and the event. Returns 1 when a hold was removed, else 0.
 */
export const RELEASE = `${PRELUDE}
-- Nobody waits: the hold goes without a purge (expired holds of others stay until a script that needs them gone runs),
-- and the keys keep their expiry (the longest hold's, perhaps this one's: they vanish a little later).
if redis.call('ZCARD', KEYS[3]) == 0 then
  local expiry = redis.call('ZSCORE', KEYS[1], ARGV[2])
  if not expiry then return 0 end
  redis.call('ZREM', KEYS[1], ARGV[2])
  redis.call('HDEL', KEYS[2], ARGV[2])
  redis.call('PUBLISH', ARGV[1], 'release turn:')
  return tonumber(expiry) > now and 1 or 0
end
local changed = purge()
local removed = redis.call('ZREM', KEYS[1], ARGV[2])
local withdrawn = redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('ZREM', KEYS[4], ARGV[2])
if removed == 1 or withdrawn == 1 then redis.call('HDEL', KEYS[2], ARGV[2]) end
if changed or removed == 1 or withdrawn == 1 then
  local granted, ids = promote()
  touch()
  publish('release', granted, ids)
end
return removed`;

/** STATE. ARGV: channel. Purges, then returns {holds' JSON (unordered), waiters' JSON in queue order}. */
export const STATE = `${PRELUDE}
if purge() then touch() publish('expire') end
local function infos(ids) if #ids == 0 then return {} end return redis.call('HMGET', KEYS[2], unpack(ids)) end
return {infos(redis.call('ZRANGE', KEYS[1], 0, -1)), infos(redis.call('ZRANGE', KEYS[3], 0, -1))}`;

/**
 * FORGET. KEYS[5] = fencing counter. ARGV: channel. Purges, then deletes all of the key's keys when no hold and no
 * queue entry is left; returns 1 when it deleted any, else 0. A counter ahead of the server's clock (in
 * microseconds: raised by a caller's floor) is kept, since ACQUIRE would restart a missing one from that clock.
 */
export const FORGET = `${PRELUDE}
if purge() then touch() publish('expire') end
if redis.call('ZCARD', KEYS[1]) > 0 or redis.call('ZCARD', KEYS[3]) > 0 then return 0 end
local counter = redis.call('GET', KEYS[5])
if counter and tonumber(counter) > nowUs then return 0 end
return redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]) > 0 and 1 or 0`;
