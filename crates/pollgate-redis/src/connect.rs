//! Clients and connections, and the URL as it may appear in a message (password masked).

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::error::{ConfigError, RedisTransportError};

/// Opens a client for `url`, with an error that does not repeat the URL (it may hold a
/// password).
pub(crate) fn open_client(url: &str) -> Result<redis::Client, RedisTransportError> {
    redis::Client::open(url).map_err(|e| {
        RedisTransportError::Config(ConfigError::Url {
            url: redact_url(url),
            kind: format!("{:?}", e.kind()),
        })
    })
}

/// A lazily connected, self-reconnecting connection. The transport retries with its own
/// backoff, so the manager gives up on a reconnection quickly and reports the error.
pub(crate) fn connection(
    client: &redis::Client,
    response_timeout: Option<Duration>,
) -> Result<ConnectionManager, RedisTransportError> {
    let config = ConnectionManagerConfig::new()
        .set_number_of_retries(1)
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(response_timeout);
    ConnectionManager::new_lazy_with_config(client.clone(), config)
        .map_err(|e| RedisTransportError::Config(ConfigError::Connection(e)))
}

/// `redis://user:secret@host:6379/0` → `redis://user:***@host:6379/0`; a `pass` or
/// `password` query parameter (`redis+unix:///s.sock?pass=secret`) is masked too.
pub(crate) fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
                let masked = if userinfo.contains(':') { ":***" } else { "" };
                format!("{scheme}://{user}{masked}@{host}")
            }
            None => base.to_string(),
        },
        None => base.to_string(),
    };
    if let Some(q) = query {
        let params: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("pass") || k.eq_ignore_ascii_case("password") => {
                    format!("{k}=***")
                }
                _ => kv.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

/// `{hostname}-{pid}`.
pub(crate) fn default_consumer() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "pollgate".into());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RedisStreamTransport;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(redact_url("redis://:hunter2@host:6379/0"), "redis://:***@host:6379/0");
        assert_eq!(redact_url("redis://u:hunter2@host"), "redis://u:***@host");
        assert_eq!(redact_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact_url("redis://alice@host"), "redis://alice@host");
        assert_eq!(
            redact_url("redis+unix:///run/r.sock?db=1&pass=hunter2"),
            "redis+unix:///run/r.sock?db=1&pass=***"
        );
    }

    #[tokio::test]
    async fn a_bad_url_is_a_config_error_without_the_password() {
        let e = RedisStreamTransport::builder("nonsense://:hunter2@x", "s", "g")
            .build()
            .unwrap_err();
        assert!(matches!(e, RedisTransportError::Config(_)), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = RedisStreamTransport::builder("redis://x", "", "g").build().unwrap_err();
        assert!(matches!(e, RedisTransportError::Config(_)));
    }
}
