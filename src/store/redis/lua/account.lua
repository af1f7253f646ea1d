-- Shared by the account scripts (prepended to each).
--
-- An account hash holds the account's own fields and, for users, one
-- `s:SID` field per listed session (the session index). Its version `ep`
-- grows with every cut-off; sessions and tokens carry the version they
-- began under.

-- The fields of an account that are not session-index entries.
local ACCOUNT_FIELDS = {'ph', 'sd', 'rc', 'ci', 'scope', 'disabled', 'dl', 'ep'}

-- Now, microseconds since the epoch, by this Redis's clock (exact in a
-- Lua number: about 2^51 today).
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- The version after `version`: above every earlier one, and never below now,
-- so an account created again under a deleted one's name starts above
-- every version the old one had (no script runs more than once a
-- microsecond, so versions never run ahead of the clock).
local function next_version(version)
  return math.max(version + 1, now_us())
end

-- How many sessions the account's index lists.
local function session_count(key)
  local n = redis.call('HLEN', key)
  for _, field in ipairs(ACCOUNT_FIELDS) do
    if redis.call('HEXISTS', key, field) == 1 then
      n = n - 1
    end
  end
  return n
end
