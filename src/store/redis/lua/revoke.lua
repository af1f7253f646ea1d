-- Revoke: ends the session if the presented token is, or was, one of its
-- refresh tokens. Runs atomically like rotate.lua, so a revoke never races
-- a refresh into a surviving token.
--
-- A revoked session's revoking token is remembered for a while in its
-- marker, for a repeated revoke (see ended.lua).
--
-- KEYS[1]  the session hash
-- KEYS[2]  the session's consumed-token log
-- KEYS[3]  the revoked session's marker
-- ARGV[1]  SHA-256 of the presented token
-- ARGV[2]  how long the marker is kept, ms
-- ARGV[3]  how long a repeat let through to announce holds off others, ms
-- ARGV[4]  now, ms since the epoch
--
-- Returns {'revoked', sub}, {'again', sub} (a repeat: announce it),
-- {'announcing'} (another repeat is at it) or {'unknown'}.

local presented = ARGV[1]
local f = redis.call('HMGET', KEYS[1], 'cur', 'prv', 'sub')
local cur, prv, sub = f[1], f[2], f[3]
if not cur then
  local r = redis.call('HMGET', KEYS[3], 'h', 'sub', 'why')
  if r[1] and r[1] == presented and r[3] == 'revoked' then
    local turn = repeat_turn(KEYS[3], ARGV[4], ARGV[3])
    if turn == 'again' then
      return {'again', r[2] or ''}
    elseif turn == 'announcing' then
      return {'announcing'}
    end
  end
  return {'unknown'}
end
if cur == presented or prv == presented or consumed_at(KEYS[2], presented) then
  redis.call('DEL', KEYS[1], KEYS[2])
  remember_end(KEYS[3], presented, sub or '', 'revoked', ARGV[2])
  return {'revoked', sub or ''}
end
return {'unknown'}
