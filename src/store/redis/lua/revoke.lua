-- Revoke: ends the session if the presented token is, or was, one of its
-- refresh tokens. Runs atomically like rotate.lua, so a revoke never races
-- a refresh into a surviving token.
--
-- A revoked session's revoking token is remembered for a while: a revoke
-- answered STORE_UNAVAILABLE may have ended the session without anyone
-- announcing it, and its retry must find out, to announce it (the first
-- repeat only: later ones find nothing).
--
-- KEYS[1]  the session hash
-- KEYS[2]  the session's consumed-token log
-- KEYS[3]  the revoked session's marker
-- ARGV[1]  SHA-256 of the presented token
-- ARGV[2]  how long the marker is kept, ms
--
-- Returns {'revoked', sub}, {'again', sub} or {'unknown'}.

local presented = ARGV[1]
local f = redis.call('HMGET', KEYS[1], 'cur', 'prv', 'sub')
local cur, prv, sub = f[1], f[2], f[3]
if not cur then
  local r = redis.call('HMGET', KEYS[3], 'h', 'sub', 'why')
  -- Once: a caller repeating it cannot make the feed grow call by call.
  if r[1] and r[1] == presented and r[3] == 'revoked'
      and redis.call('HINCRBY', KEYS[3], 'n', 1) == 1 then
    return {'again', r[2] or ''}
  end
  return {'unknown'}
end
if cur == presented or prv == presented or consumed_at(KEYS[2], presented) then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('HSET', KEYS[3], 'h', presented, 'sub', sub or '', 'why', 'revoked')
  redis.call('PEXPIRE', KEYS[3], ARGV[2])
  return {'revoked', sub or ''}
end
return {'unknown'}
