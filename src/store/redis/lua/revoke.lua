-- Revoke: ends the session if the presented token is, or was, one of its
-- refresh tokens. Runs atomically like rotate.lua, so a revoke never races
-- a refresh into a surviving token.
--
-- KEYS[1]  the session hash
-- KEYS[2]  the session's consumed-token log
-- ARGV[1]  SHA-256 of the presented token
--
-- Returns {'revoked', sub} or {'unknown'}.

local f = redis.call('HMGET', KEYS[1], 'cur', 'prv', 'sub')
local cur, prv, sub = f[1], f[2], f[3]
if not cur then
  return {'unknown'}
end
local presented = ARGV[1]
if cur == presented or prv == presented or consumed(KEYS[2], presented) then
  redis.call('DEL', KEYS[1], KEYS[2])
  return {'revoked', sub or ''}
end
return {'unknown'}
