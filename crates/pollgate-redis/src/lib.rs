//! Redis Streams for pollgate: the scale-out transport.
//!
//! Telegram's `getUpdates` allows one consumer per bot (a second one gets 409), so a bot
//! that outgrows one machine puts a queue between Telegram and its workers. This crate
//! uses an existing, widely deployed one — Redis Streams with consumer groups — rather
//! than a home-made queue:
//!
//! ```text
//!  Telegram ──getUpdates──▶ bridge ──XADD──▶ stream ──XREADGROUP──▶ worker 1 (own budget)
//!            (at-least-once,          (one entry     (consumer   ├──▶ worker 2
//!             offset after XADD)       per update)    group)     └──▶ worker N
//! ```
//!
//! - [`RedisStreamTransport`] is a [`Transport`](pollgate_core::Transport) with
//!   per-entry acknowledgements: each worker runs the ordinary pollgate runtime with its
//!   own admission policy, and takes from the stream only what that policy admits.
//!   Entries are acknowledged (`XACK`) only after their handler finished; entries of a
//!   dead worker are claimed (`XAUTOCLAIM`) by the others; entries that keep failing go
//!   to a dead-letter stream with the reason.
//! - [`StreamProducer`] appends updates (`XADD`), for the bridge.
//! - [`ShardedProducer`] and [`ShardedStreamTransport`] keep per-chat order across
//!   workers: each chat's updates go to one of S shard streams, and each shard has one
//!   owner at a time, by a lease (see the `sharded` module's docs, and `docs/scale-out.md`).
//! - `LocalRedis` (feature `test-util`) starts a private `redis-server` for tests, examples
//!   and benchmarks.
//!
//! Needs Redis 7.0 or newer (or a compatible server such as Valkey): `XAUTOCLAIM` reporting
//! deleted entries, exclusive ranges in `XPENDING`. One server or a primary, not a cluster
//! (the scripts touch the stream and its dead-letter stream together).
//!
//! `docs/scale-out.md` describes the topology, the end-to-end guarantees and the failure
//! modes.

mod commands;
mod connect;
mod durable;
mod error;
#[cfg(feature = "test-util")]
mod local;
mod producer;
mod reply;
mod retry;
mod sharded;
mod transport;

pub use error::{ConfigError, RedisTransportError};
#[cfg(feature = "test-util")]
pub use local::{LocalRedis, Persistence, REDIS_URL_ENV, RedisServer};
pub use producer::{StreamProducer, StreamProducerBuilder};
pub use retry::DEFAULT_MAX_OUTAGE;
pub use sharded::{
    DEFAULT_SHARDS, ShardedProducer, ShardedProducerBuilder, ShardedStats, ShardedStreamTransport,
    ShardedStreamTransportBuilder, shard_of,
};
pub use transport::{DEFAULT_FIELD, RedisStats, RedisStreamTransport, RedisStreamTransportBuilder, StartFrom};
