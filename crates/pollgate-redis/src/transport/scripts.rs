//! The transport's Lua scripts: each check-then-act that must not interleave with another
//! client's command runs on the server as one step.

/// Re-claims (`XCLAIM … JUSTID`) the in-flight entries this consumer still owns, resetting
/// their idle time without counting a delivery; entries another worker claimed meanwhile
/// are left to it.
pub(super) const HEARTBEAT: &str = "local n = 0 \
    for i = 3, #ARGV do \
      local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1) \
      if #p > 0 and p[1][2] == ARGV[2] then \
        redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID') \
        n = n + 1 \
      end \
    end \
    return n";

/// Adds an entry to the dead-letter stream, then acknowledges it, if it is still pending
/// on this consumer. An error (the add refused) aborts before the acknowledgement, so the
/// entry stays pending; a retried call after a lost reply does nothing the second time.
pub(super) const DEAD_LETTER: &str = "local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2]) \
    if #p == 0 then return 0 end \
    redis.call('XADD', KEYS[2], '*', unpack(ARGV, 4)) \
    redis.call('XACK', KEYS[1], ARGV[1], ARGV[3]) \
    return 1";

/// Deletes this consumer from the group if it has no pending entry, in one script so no
/// entry can be delivered to it between the check and the deletion (deleting a consumer
/// drops its pending entries for good).
pub(super) const LEAVE_GROUP: &str = "if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then \
    return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) end return -1";
