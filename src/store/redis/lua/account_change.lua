-- Changes an existing account atomically. Every change but new scopes and
-- enabling is a cut-off: it raises the account version, which ends every
-- session and revokes every token from before it.
--
-- KEYS[1]  the account hash
-- ARGV[1]  the change: 'ph' (password hash), 'sd' (secret digest), 'ci'
--          (certificate identities, space-separated) or 'scope' (each set
--          to ARGV[2]), 'disable', 'enable', 'cutoff',
--          'delete' (marks the account as being deleted)
-- ARGV[2]  the new value, for the first four
--
-- Returns the version after the change, or nil: no such account, or it is
-- being deleted and this change is not 'delete'.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
local f = redis.call('HMGET', KEYS[1], 'ep', 'dl')
local change = ARGV[1]
if f[2] == '1' and change ~= 'delete' then
  return false
end
local cut_off = true
if change == 'ph' or change == 'sd' or change == 'ci' then
  redis.call('HSET', KEYS[1], change, ARGV[2])
elseif change == 'scope' then
  redis.call('HSET', KEYS[1], 'scope', ARGV[2])
  cut_off = false
elseif change == 'disable' then
  redis.call('HSET', KEYS[1], 'disabled', '1')
elseif change == 'enable' then
  redis.call('HSET', KEYS[1], 'disabled', '0')
  cut_off = false
elseif change == 'delete' then
  redis.call('HSET', KEYS[1], 'dl', '1')
elseif change ~= 'cutoff' then
  return redis.error_reply('unknown account change')
end
local version = tonumber(f[1]) or 0
if cut_off then
  version = next_version(version)
  redis.call('HSET', KEYS[1], 'ep', version)
end
return version
