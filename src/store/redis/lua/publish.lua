-- Appends an entry to the revocation feed, trims entries that can no longer
-- matter (by time only: no entry that still matters is ever dropped, however
-- many there are), keeps the stream alive as long as its newest entry
-- matters, and records since when the stream holds everything (its origin:
-- if Redis loses the stream, the origin is lost with it and the next entry
-- starts a new one, so watchers can be told that entries are missing).
--
-- KEYS[1]  the feed stream
-- KEYS[2]  its origin marker (same hash tag)
-- ARGV[1]  how long the stream must live from now, ms
-- ARGV[2]  entries older than this stream id are dropped (approximately)
-- ARGV[3..] field, value, ... of the entry
--
-- Returns the entry's id.

local fields = {}
for i = 3, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
local id = redis.call('XADD', KEYS[1], 'MINID', '~', ARGV[2], '*', unpack(fields))
local wanted = tonumber(ARGV[1])
redis.call('SET', KEYS[2], string.match(id, '^(%d+)'), 'NX')
for _, key in ipairs(KEYS) do
  if redis.call('PTTL', key) < wanted then
    redis.call('PEXPIRE', key, wanted)
  end
end
return id
