//! The Lua scripts of leases and fencing: each check of a lease and the command it guards
//! run on the server as one step, so no other worker's command falls between them.

/// Records the number of shards if none is, and returns the recorded one.
pub(super) const SHARDS: &str = "redis.call('SET', KEYS[1], ARGV[1], 'NX') return redis.call('GET', KEYS[1])";

/// Registers this worker, drops workers silent for a TTL, returns how many are alive.
pub(super) const WORKERS: &str = "local t = redis.call('TIME') \
    local now = t[1] * 1000 + math.floor(t[2] / 1000) \
    redis.call('ZADD', KEYS[1], now, ARGV[1]) \
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2])) \
    return redis.call('ZCARD', KEYS[1])";

/// Renews each lease (KEYS[i]) still holding its token (ARGV[i + 1]): 1, else 0.
pub(super) const RENEW: &str = "local r = {} \
    for i, k in ipairs(KEYS) do \
      if redis.call('GET', k) == ARGV[i + 1] then redis.call('PEXPIRE', k, ARGV[1]) r[i] = 1 else r[i] = 0 end \
    end \
    return r";

/// Takes up to ARGV[2] of the free leases KEYS (in order), each with its token ARGV[i + 2]:
/// 1 for each taken (or already holding that token: a retry after a lost reply), else 0.
pub(super) const ACQUIRE: &str = "local want = tonumber(ARGV[2]) local r = {} \
    for i, k in ipairs(KEYS) do \
      if want > 0 and (redis.call('SET', k, ARGV[i + 2], 'NX', 'PX', ARGV[1]) or redis.call('GET', k) == ARGV[i + 2]) then r[i] = 1 want = want - 1 else r[i] = 0 end \
    end \
    return r";

/// Deletes each lease KEYS[i] that still holds its token ARGV[i].
pub(super) const RELEASE: &str = "for i, k in ipairs(KEYS) do \
      if redis.call('GET', k) == ARGV[i] then redis.call('DEL', k) end \
    end \
    return 0";

/// `XACK`s ARGV[3..] while the lease KEYS[2] holds the token ARGV[2]; -1 when it does not.
pub(super) const FENCED_ACK: &str = "if redis.call('GET', KEYS[2]) ~= ARGV[2] then return -1 end \
    return redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 3))";

/// Claims ARGV[4..] for the owner (counting a delivery) while the lease holds the token;
/// nil when it does not.
pub(super) const FENCED_CLAIM: &str = "if redis.call('GET', KEYS[2]) ~= ARGV[3] then return false end \
    return redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, unpack(ARGV, 4))";

/// Adds an entry to the dead-letter stream and acknowledges it, while the lease holds the
/// token and the entry is still pending (a retry after a lost reply adds nothing); -1
/// when the lease does not hold the token, 0 when the entry is not pending.
pub(super) const FENCED_DEAD: &str = "if redis.call('GET', KEYS[2]) ~= ARGV[2] then return -1 end \
    if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1) == 0 then return 0 end \
    redis.call('XADD', KEYS[3], '*', unpack(ARGV, 4)) \
    redis.call('XACK', KEYS[1], ARGV[1], ARGV[3]) \
    return 1";

/// Trims a shard stream (KEYS[1]) below what its group (ARGV[1]) has delivered and
/// acknowledged, while the lease (KEYS[2]) holds the token (ARGV[2]): below the oldest
/// pending entry, or the last delivered one. Returns how many entries went.
pub(super) const TRIM: &str = "if redis.call('GET', KEYS[2]) ~= ARGV[2] then return -1 end \
    local last = nil \
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do \
      local name, ld = nil, nil \
      for i = 1, #g, 2 do \
        if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then ld = g[i + 1] end \
      end \
      if name == ARGV[1] then last = ld end \
    end \
    if not last then return 0 end \
    local p = redis.call('XPENDING', KEYS[1], ARGV[1]) \
    local below = last \
    if p[1] > 0 then below = p[2] end \
    return redis.call('XTRIM', KEYS[1], 'MINID', below)";
