-- Refresh: consumes the presented token and installs its successor, in one
-- atomic step, so concurrent refreshes of one token can never fork a session.
--
-- KEYS[1]  the session hash
-- KEYS[2]  the session's consumed-token log
-- KEYS[3]  the ended session's marker (see ended.lua): a reuse is
--          remembered, so a retry of the same token (whose first answer
--          was lost before the end was announced) is told 'reused' again,
--          until a repeat's announcement is confirmed
-- ARGV[1]  SHA-256 of the presented token
-- ARGV[2]  SHA-256 of the successor
-- ARGV[3]  the successor's secret sealed under the presented token
-- ARGV[4]  now, ms since the epoch
-- ARGV[5]  idle lifetime, ms
-- ARGV[6]  reuse grace window, ms (0: strict)
-- ARGV[7]  how many consumed tokens the log remembers
-- ARGV[8]  how long the marker is kept, ms
-- ARGV[9]  how long a repeat let through to announce holds off others, ms
--
-- Returns one of
--   {'rotated', sub, scope, aud, created, absolute_expiry, account_version}
--   {'replayed', sub, scope, aud, created, absolute_expiry, account_version, sealed, current}
--   {'reused', sub}   (the session is now revoked)
--   {'announcing'}    (a repeated reuse while another repeat announces it)
--   {'superseded', sub}   (consumed within the grace window, before the
--                          previous token: a late duplicate; nothing changes)
--   {'invalid'}

local f = redis.call('HMGET', KEYS[1], 'cur', 'prv', 'gu', 'ax', 'suc', 'sub', 'scp', 'aud', 'ct', 'av', 'rt')
local cur, prv, grace_until, ax, sealed = f[1], f[2], f[3], tonumber(f[4]), f[5]
local sub, scope, aud, created, version = f[6], f[7], f[8], f[9], f[10] or '0'
local refreshed = tonumber(f[11])
local presented = ARGV[1]
if not cur or not ax or not sub then
  local r = redis.call('HMGET', KEYS[3], 'h', 'sub', 'why')
  if r[1] and r[1] == presented and r[3] == 'reused' then
    local turn = repeat_turn(KEYS[3], ARGV[4], ARGV[9])
    if turn == 'again' then
      return {'reused', r[2] or ''}
    elseif turn == 'announcing' then
      return {'announcing'}
    end
  end
  return {'invalid'}
end

local function reused()
  redis.call('DEL', KEYS[1], KEYS[2])
  remember_end(KEYS[3], presented, sub, 'reused', ARGV[8])
  return {'reused', sub}
end

local now = tonumber(ARGV[4])
local idle = tonumber(ARGV[5])
local grace = tonumber(ARGV[6])

if now >= ax then
  redis.call('DEL', KEYS[1], KEYS[2])
  return {'invalid'}
end

local ttl = math.min(idle, ax - now)
local function renew()
  redis.call('PEXPIRE', KEYS[1], ttl)
  if redis.call('EXISTS', KEYS[2]) == 1 then
    redis.call('PEXPIRE', KEYS[2], ttl)
  end
end

if cur == presented then
  if prv then
    -- The previous token was consumed by the last rotation.
    remember(KEYS[2], prv, refreshed or now, tonumber(ARGV[7]))
  end
  redis.call('HSET', KEYS[1], 'cur', ARGV[2], 'prv', presented, 'rt', now)
  if grace > 0 then
    redis.call('HSET', KEYS[1], 'gu', now + grace, 'suc', ARGV[3])
  elseif grace_until then
    redis.call('HDEL', KEYS[1], 'gu', 'suc')
  end
  renew()
  return {'rotated', sub, scope, aud, created, tostring(ax), version}
end

if prv == presented then
  if grace_until and sealed and now < tonumber(grace_until) then
    renew()
    return {'replayed', sub, scope, aud, created, tostring(ax), version, sealed, cur}
  end
  return reused()
end

local spent = consumed_at(KEYS[2], presented)
if spent then
  -- Consumed within the grace window and rotated past since: a call its
  -- caller gave up on (a pipeline held up in a partition, delivered late)
  -- whose retry got the successor. Ending the session would punish the
  -- holder's safe retry; the token still yields nothing.
  if grace > 0 and now < spent + grace then
    return {'superseded', sub}
  end
  return reused()
end

return {'invalid'}
