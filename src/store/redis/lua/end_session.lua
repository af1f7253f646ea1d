-- Ends a session only if it belongs to the given subject and began under an
-- account version below the given one (session management by its owner or
-- an administrator, the sweep after a cut-off, the session cap).
--
-- Ended at its owner's request (ARGV[3] > 0), the end is remembered in the
-- ended session's marker, for a repeated request (see ended.lua).
--
-- KEYS[1]  the session hash
-- KEYS[2]  the session's consumed-token log
-- KEYS[3]  the ended session's marker
-- ARGV[1]  the subject that must own it
-- ARGV[2]  end it only if its account version is below this
-- ARGV[3]  how long to remember the end, ms (0: not at all)
-- ARGV[4]  how long a repeat let through to announce holds off others, ms
-- ARGV[5]  now, ms since the epoch
--
-- Returns 1 if it ended, 2 if its owner's end is repeated (announce it),
-- 3 if it is repeated while another repeat announces it, 0 if it was not
-- there or not theirs, -1 if it began under a newer account version and
-- stays.

local remember = tonumber(ARGV[3])
local f = redis.call('HMGET', KEYS[1], 'sub', 'av')
if not f[1] and remember > 0 then
  local r = redis.call('HMGET', KEYS[3], 'sub', 'why')
  if r[1] == ARGV[1] and r[2] == 'ended' then
    local turn = repeat_turn(KEYS[3], ARGV[5], ARGV[4])
    if turn == 'again' then
      return 2
    elseif turn == 'announcing' then
      return 3
    end
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
  remember_end(KEYS[3], '', ARGV[1], 'ended', remember)
end
return 1
