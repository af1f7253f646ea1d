-- Appends a revocation to the feed stream, keeps it bounded, and keeps the
-- stream alive at least as long as its newest entry matters.
--
-- KEYS[1]  the feed stream
-- ARGV[1]  most entries kept (approximate trimming)
-- ARGV[2]  how long the stream must live from now, ms
-- ARGV[3..] field, value, ... of the entry
--
-- Returns the entry's id.

local fields = {}
for i = 3, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(fields))
local wanted = tonumber(ARGV[2])
if redis.call('PTTL', KEYS[1]) < wanted then
  redis.call('PEXPIRE', KEYS[1], wanted)
end
return id
