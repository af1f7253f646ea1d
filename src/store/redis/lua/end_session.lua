-- Ends a session only if it belongs to the given subject and began under an
-- account version below the given one (session management by its owner,
-- the sweep after a cut-off, the session cap).
--
-- KEYS[1]  the session hash
-- KEYS[2]  the session's consumed-token log
-- ARGV[1]  the subject that must own it
-- ARGV[2]  end it only if its account version is below this
--
-- Returns 1 if it ended, 0 if it was not there or not theirs, -1 if it began
-- under a newer account version and stays.

local f = redis.call('HMGET', KEYS[1], 'sub', 'av')
if f[1] ~= ARGV[1] then
  return 0
end
if (tonumber(f[2]) or 0) >= tonumber(ARGV[2]) then
  return -1
end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
