-- Adds a session to its subject's index, drops entries past their absolute
-- expiry, and keeps the index alive as long as its longest-lived session.
--
-- KEYS[1]  the subject's session index (sorted set: session id by absolute expiry)
-- ARGV[1]  session id
-- ARGV[2]  its absolute expiry, ms since the epoch
-- ARGV[3]  now, ms since the epoch

local expiry = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], expiry, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local wanted = expiry - now
if redis.call('PTTL', KEYS[1]) < wanted then
  redis.call('PEXPIRE', KEYS[1], wanted)
end
return 1
