-- Shared by rotate.lua and revoke.lua (prepended to each).
--
-- A session's consumed-token log is one string of entries, oldest first,
-- capped at a fixed number: for every refresh token consumed before the
-- previous one, the first 16 bytes of its SHA-256 followed by when it was
-- consumed (ms since the epoch, 13 decimal digits).

local HASH = 16
local STAMP = 13
local ENTRY = HASH + STAMP

-- When `hash` was consumed (ms), if it is in the log at `key`; else nil.
local function consumed_at(key, hash)
  local log = redis.call('GET', key)
  if not log then
    return nil
  end
  local probe = string.sub(hash, 1, HASH)
  local from = 1
  while true do
    local at = string.find(log, probe, from, true)
    if not at then
      return nil
    end
    if (at - 1) % ENTRY == 0 then
      return tonumber(string.sub(log, at + HASH, at + ENTRY - 1)) or 0
    end
    from = at + 1
  end
end

-- Appends `hash`, consumed at `at` (ms), to the log at `key`, keeping the
-- newest `cap` entries.
local function remember(key, hash, at, cap)
  local entry = string.sub(hash, 1, HASH) .. string.format('%013d', at)
  local len = redis.call('APPEND', key, entry)
  local limit = cap * ENTRY
  if len > limit then
    redis.call('SET', key, redis.call('GETRANGE', key, len - limit, -1))
  end
end
