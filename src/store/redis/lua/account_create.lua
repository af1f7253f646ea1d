-- Creates an account, unless one exists under that key: `user add` and
-- `client add` never overwrite (and never re-enable) an account.
--
-- KEYS[1]  the account hash
-- ARGV     field, value, ... of the new account
--
-- Returns the new account's version, or nil if one exists.

if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
local version = next_version(0)
redis.call('HSET', KEYS[1], 'ep', version, unpack(ARGV))
return version
