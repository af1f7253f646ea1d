-- Compare-and-set of the service client that claimed a certificate
-- identity (the index behind certificate callers; each client's record
-- lists its identities too, and is what counts).
--
-- KEYS[1]  the identity's key
-- ARGV[1]  the owner expected now ('' for none)
-- ARGV[2]  the new owner ('' for none: the key is deleted)
--
-- Returns 1 if the owner was as expected (and is now the new one), else 0.

local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then
  return 0
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2])
end
return 1
