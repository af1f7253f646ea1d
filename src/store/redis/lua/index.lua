-- Lists a new session under its user's account, if the account is still
-- active at the version the login read (a login racing `user disable`,
-- `delete`, a password change or a revoke-all keeps nothing). Now and then
-- drops entries whose sessions are past their absolute expiry. Nothing is
-- written if the account does not exist.
--
-- KEYS[1]  the user's account hash
-- ARGV[1]  session id
-- ARGV[2]  its absolute expiry, ms since the epoch
-- ARGV[3]  now, ms since the epoch
-- ARGV[4]  the account version the login read
--
-- Returns how many sessions the index lists now, or -1: the account changed
-- or is gone, and the caller must drop the session.

local f = redis.call('HMGET', KEYS[1], 'ph', 'disabled', 'dl', 'ep')
if not f[1] or f[2] == '1' or f[3] == '1' or (tonumber(f[4]) or 0) ~= tonumber(ARGV[4]) then
  return -1
end
redis.call('HSET', KEYS[1], 's:' .. ARGV[1], ARGV[2])
local count = session_count(KEYS[1])
-- Pruning reads every field, so it runs once per 32 sessions listed: a user
-- with thousands of sessions does not make every login scan them all.
if count % 32 == 0 then
  local now = tonumber(ARGV[3])
  local fields = redis.call('HGETALL', KEYS[1])
  for i = 1, #fields, 2 do
    local name = fields[i]
    if string.sub(name, 1, 2) == 's:' and tonumber(fields[i + 1]) <= now then
      redis.call('HDEL', KEYS[1], name)
      count = count - 1
    end
  end
end
return count
