-- Lists a new session under its user's account record, and now and then
-- drops entries whose sessions are past their absolute expiry. The account record has no
-- TTL (it is configuration); its session entries are pruned here and by
-- ListSessions. Nothing is written if the account does not exist.
--
-- KEYS[1]  the user's account hash
-- ARGV[1]  session id
-- ARGV[2]  its absolute expiry, ms since the epoch
-- ARGV[3]  now, ms since the epoch
--
-- Returns 1 (listed), 0 (no such account) or -1: the user was disabled
-- after the login checked; the caller must drop the session.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
if redis.call('HGET', KEYS[1], 'disabled') == '1' then
  return -1
end
redis.call('HSET', KEYS[1], 's:' .. ARGV[1], ARGV[2])
-- Pruning reads every field, so it runs once per 32 new entries: a user with
-- thousands of sessions does not make every login scan them all.
if redis.call('HLEN', KEYS[1]) % 32 == 0 then
  local now = tonumber(ARGV[3])
  local fields = redis.call('HGETALL', KEYS[1])
  for i = 1, #fields, 2 do
    local name = fields[i]
    if string.sub(name, 1, 2) == 's:' and tonumber(fields[i + 1]) <= now then
      redis.call('HDEL', KEYS[1], name)
    end
  end
end
return 1
