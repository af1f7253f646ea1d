-- Appends a revocation to the feed stream, trims entries that can no
-- longer matter (by time, then by count as a hard bound), and keeps the
-- stream alive at least as long as its newest entry matters.
--
-- KEYS[1]  the feed stream
-- ARGV[1]  most entries kept (approximate trimming)
-- ARGV[2]  how long the stream must live from now, ms
-- ARGV[3]  entries older than this stream id are dropped (approximately)
-- ARGV[4..] field, value, ... of the entry
--
-- Returns the entry's id.

local fields = {}
for i = 4, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
local id = redis.call('XADD', KEYS[1], 'MINID', '~', ARGV[3], '*', unpack(fields))
redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[1])
local wanted = tonumber(ARGV[2])
if redis.call('PTTL', KEYS[1]) < wanted then
  redis.call('PEXPIRE', KEYS[1], wanted)
end
return id
