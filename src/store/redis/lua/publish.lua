-- Appends an entry to the revocation feed, trims entries that can no longer
-- matter (by time only: no entry that still matters is ever dropped, however
-- many there are), keeps the stream alive as long as its newest entry
-- matters, and records since when the stream holds everything (its origin:
-- if Redis loses the stream, the origin is lost with it and the next entry
-- starts a new one, so watchers can be told that entries are missing).
--
-- A subject's (or actor's, or account notice's) newer entry supersedes its
-- older one: the older is deleted, so the stream holds one live entry per
-- subject and kind, and its size depends on how many accounts were cut
-- off, not on how often. A cut-off carrying a lower account version than
-- the live one (a late retry) adds nothing: the live one covers more.
--
-- KEYS[1]  the feed stream
-- KEYS[2]  its origin marker (same hash tag)
-- KEYS[3]  the hash of live entries: kind:subject -> stream id (same tag)
-- ARGV[1]  how long the stream must live from now, ms
-- ARGV[2]  entries older than this stream id are dropped (approximately)
-- ARGV[3]  the supersession key (kind:subject), or '' for session entries
-- ARGV[4]  the entry's account version, or '' (compared with the live one's)
-- ARGV[5..] field, value, ... of the entry
--
-- Returns the entry's id (the live one's, if this one added nothing).

local wanted = tonumber(ARGV[1])
local supersedes = ARGV[3]
if supersedes ~= '' then
  local live = redis.call('HGET', KEYS[3], supersedes)
  if live then
    local old = redis.call('XRANGE', KEYS[1], live, live)
    if old[1] then
      local fields = old[1][2]
      local old_version = nil
      for i = 1, #fields, 2 do
        if fields[i] == 'av' then
          old_version = tonumber(fields[i + 1])
        end
      end
      local version = tonumber(ARGV[4])
      if old_version and version and version < old_version then
        return live
      end
      redis.call('XDEL', KEYS[1], live)
    end
  end
end
local fields = {}
for i = 5, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
local id = redis.call('XADD', KEYS[1], 'MINID', '~', ARGV[2], '*', unpack(fields))
if supersedes ~= '' then
  redis.call('HSET', KEYS[3], supersedes, id)
end
redis.call('SET', KEYS[2], string.match(id, '^(%d+)'), 'NX')
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 and redis.call('PTTL', key) < wanted then
    redis.call('PEXPIRE', key, wanted)
  end
end
return id
