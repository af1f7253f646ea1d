-- Ends a session only if it belongs to the given subject and began under an
-- account version below the given one (session management by its owner or
-- an administrator, the sweep after a cut-off, the session cap).
--
-- Ended at its owner's request (ARGV[3] > 0), the end is remembered in the
-- ended session's marker (see revoke.lua): a request answered
-- STORE_UNAVAILABLE may have ended the session without anyone announcing
-- it, and its retry must find out, to announce it (the first repeat only:
-- later ones find nothing).
--
-- KEYS[1]  the session hash
-- KEYS[2]  the session's consumed-token log
-- KEYS[3]  the ended session's marker
-- ARGV[1]  the subject that must own it
-- ARGV[2]  end it only if its account version is below this
-- ARGV[3]  how long to remember the end, ms (0: not at all)
--
-- Returns 1 if it ended, 2 if its owner's end is repeated for the first
-- time, 0 if it was not there or not theirs, -1 if it began under a newer
-- account version and stays.

local remember = tonumber(ARGV[3])
local f = redis.call('HMGET', KEYS[1], 'sub', 'av')
if not f[1] and remember > 0 then
  local r = redis.call('HMGET', KEYS[3], 'sub', 'why')
  if r[1] == ARGV[1] and r[2] == 'ended'
      and redis.call('HINCRBY', KEYS[3], 'n', 1) == 1 then
    return 2
  end
  return 0
end
if f[1] ~= ARGV[1] then
  return 0
end
if (tonumber(f[2]) or 0) >= tonumber(ARGV[2]) then
  return -1
end
redis.call('DEL', KEYS[1], KEYS[2])
if remember > 0 then
  redis.call('HSET', KEYS[3], 'h', '', 'sub', ARGV[1], 'why', 'ended')
  redis.call('PEXPIRE', KEYS[3], remember)
end
return 1
