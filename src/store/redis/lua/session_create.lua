-- Starts a refresh session: its hash and its TTL in one step.
--
-- KEYS[1]  the session hash
-- ARGV[1]  its TTL, ms (the idle lifetime, capped by the absolute expiry)
-- ARGV[2..] field, value, ... of the session
--
-- Returns 1.

local fields = {}
for i = 2, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
