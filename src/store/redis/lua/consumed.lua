-- Shared by rotate.lua and revoke.lua (prepended to each).
--
-- A session's consumed-token log is one string of 16-byte prefixes of the
-- SHA-256 of every refresh token consumed before the previous one, oldest
-- first, capped at a fixed number of entries.

local ENTRY = 16

-- Whether `hash` is in the log at `key`.
local function consumed(key, hash)
  local log = redis.call('GET', key)
  if not log then
    return false
  end
  local probe = string.sub(hash, 1, ENTRY)
  local from = 1
  while true do
    local at = string.find(log, probe, from, true)
    if not at then
      return false
    end
    if (at - 1) % ENTRY == 0 then
      return true
    end
    from = at + 1
  end
end

-- Appends `hash` to the log at `key`, keeping the newest `cap` entries.
local function remember(key, hash, cap)
  local len = redis.call('APPEND', key, string.sub(hash, 1, ENTRY))
  local limit = cap * ENTRY
  if len > limit then
    redis.call('SET', key, redis.call('GETRANGE', key, len - limit, -1))
  end
end
