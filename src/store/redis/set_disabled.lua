-- Disables or enables a user, touching only an existing account (never
-- creating a TTL-less key for a name that has none).
--
-- KEYS[1]  the user's account hash
-- ARGV[1]  "1" to disable, "0" to enable
--
-- Returns 1 if the account exists, 0 if not.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'disabled', ARGV[1])
return 1
