//! Which shard a chat's updates go to, and the keys of a sharded layout.

use super::scripts::SHARDS;
use super::*;

/// The shard of `update` among `shards`: a stable hash of its ordering key (its chat), or
/// of its id when it has none (spread evenly).
///
/// # Panics
/// If `shards` is 0.
///
/// # Examples
///
/// ```
/// use pollgate_core::Update;
/// use pollgate_redis::shard_of;
///
/// let a = Update::from_json(r#"{"update_id":1,"message":{"chat":{"id":42}}}"#).unwrap();
/// let b = Update::from_json(r#"{"update_id":2,"message":{"chat":{"id":42}}}"#).unwrap();
/// assert_eq!(shard_of(&a, 16), shard_of(&b, 16), "one chat, one shard");
/// assert!(shard_of(&a, 16) < 16);
/// ```
pub fn shard_of(update: &Update, shards: u32) -> u32 {
    assert!(shards > 0, "shard_of: at least one shard");
    let x = match update.ordering_key() {
        Some(key) => key as u64,
        None => (update.id() as u64) ^ 0x5bd1_e995_5bd1_e995,
    };
    (splitmix64(x) % u64::from(shards)) as u32
}

/// SplitMix64's finalizer: a fixed, well-mixed hash of a 64-bit value (stable across
/// versions and platforms, unlike `std`'s hasher).
pub(super) fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The keys of a sharded layout under one prefix.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    pub(super) prefix: String,
    pub(super) shards: u32,
}

impl Layout {
    pub(super) fn stream(&self, shard: u32) -> String {
        format!("{}:shard:{shard}", self.prefix)
    }
    pub(super) fn lease(&self, shard: u32) -> String {
        format!("{}:lease:{shard}", self.prefix)
    }
    pub(super) fn shards_key(&self) -> String {
        format!("{}:shards", self.prefix)
    }
    pub(super) fn workers(&self) -> String {
        format!("{}:workers", self.prefix)
    }
    pub(super) fn dead(&self) -> String {
        format!("{}:dead", self.prefix)
    }
}

/// Checks that Redis records `layout.shards` shards under the prefix (recording it if it
/// is the first).
pub(super) async fn check_shards(
    conn: &ConnectionManager,
    layout: &Layout,
    backoff: &Backoff,
    retries: &AtomicU64,
) -> Result<(), RedisTransportError> {
    let key = layout.shards_key();
    let mut cmd = eval(SHARDS, &[&key]);
    cmd.arg(layout.shards);
    let recorded: String = commands::query(backoff, retries, "EVAL (shards)", &cmd, conn).await?;
    match recorded.parse::<u32>() {
        Ok(n) if n == layout.shards => Ok(()),
        _ => Err(RedisTransportError::ShardCount {
            key,
            recorded,
            configured: layout.shards,
        }),
    }
}
