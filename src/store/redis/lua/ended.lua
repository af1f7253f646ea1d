-- Shared by rotate.lua, revoke.lua and end_session.lua (prepended to each).
--
-- An ended session's marker (a hash) remembers how it was ended, for a
-- while: a call answered STORE_UNAVAILABLE may have ended the session
-- without anyone announcing it, and its retry must find out, to announce
-- it. Fields: `h` (SHA-256 of the token that ended it, or ''), `sub`,
-- `why` ('revoked', 'reused' or 'ended'), `t` (when a repeat was last let
-- through to announce it, ms by the clock of the tokend replica that let it
-- through) and `a` (set by ended_announced.lua once a repeat's
-- announcement was confirmed).
--
-- Repeats announce until one's announcement is confirmed, one at a time:
-- a caller repeating the call cannot make the feed grow call by call, and
-- an announcement that failed is tried again by the next repeat (counting
-- repeats instead, the one allowed could fail and leave the rest with
-- nothing to announce).

-- Remembers that the session was ended, for `keep_ms`.
local function remember_end(key, hash, sub, why, keep_ms)
  redis.call('HSET', key, 'h', hash, 'sub', sub, 'why', why)
  redis.call('PEXPIRE', key, keep_ms)
end

-- For a repeat at `now` (ms) of the end the marker at `key` records (the
-- caller checked it is the same end): 'again' if this repeat announces it,
-- 'announcing' if another repeat was let through less than `gate_ms`
-- before, 'done' if a repeat's announcement was confirmed.
local function repeat_turn(key, now, gate_ms)
  local m = redis.call('HMGET', key, 'a', 't')
  if m[1] then
    return 'done'
  end
  now = tonumber(now)
  local last = tonumber(m[2])
  if last and now - last < tonumber(gate_ms) and now >= last then
    return 'announcing'
  end
  redis.call('HSET', key, 't', now)
  return 'again'
end
