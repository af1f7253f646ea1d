-- Records that a repeated end was announced (see ended.lua): later repeats
-- have nothing to announce. A first end (no repeat let through yet) is
-- left as it is: its own repeat may be the retry of a call whose answer was
-- lost, and announces once more.
--
-- KEYS[1]  the ended session's marker
--
-- Returns 1 if recorded, 0 if there was nothing to record.

if redis.call('HEXISTS', KEYS[1], 't') == 1 then
  redis.call('HSET', KEYS[1], 'a', 1)
  return 1
end
return 0
