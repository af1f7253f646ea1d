-- Ends a session only if it belongs to the given subject (session
-- management by its owner, admin revoke-all).
--
-- KEYS[1]  the session hash
-- KEYS[2]  the session's consumed-token log
-- ARGV[1]  the subject that must own it
--
-- Returns 1 if it ended, 0 if it was not there or not theirs.

if redis.call('HGET', KEYS[1], 'sub') ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
