//! One webhook request: the `POST` of one update, and what its failure means.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};

/// The header that carries the webhook's secret token.
const SECRET_HEADER: &str = "X-Telegram-Bot-Api-Secret-Token";
/// The longest `Retry-After` honoured, as in the real server.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Why an attempt failed.
#[derive(Debug)]
pub(super) struct Failure {
    /// Whether the update or the connection is to blame.
    pub(super) level: Level,
    /// The answer's status, when there was an answer.
    pub(super) status: Option<u16>,
    /// The answer's `Retry-After`, when it had a usable one.
    pub(super) retry_after: Option<Duration>,
    /// What `getWebhookInfo` reports as `last_error_message`.
    pub(super) message: String,
}

/// What a failed attempt is held against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Level {
    /// No connection could be made (refused, unresolvable host, failed TLS handshake): the
    /// receiver is unreachable, and any update would have failed the same way. The update
    /// keeps its failure count and retry time; the sender treats the receiver as down.
    Connection,
    /// The request reached the receiver, or may have: a non-2xx answer, a broken answer,
    /// no answer in time. The update waits for its own retry.
    Update,
}

/// POSTs one update and reads the answer.
///
/// # Errors
/// A [`Failure`] for a non-2xx status, a connection error, or no complete answer within
/// `timeout`.
pub(super) async fn post(
    client: reqwest::Client,
    url: String,
    secret: Option<String>,
    update: Arc<str>,
    timeout: Duration,
) -> Result<(), Failure> {
    let mut request = client
        .post(url)
        .timeout(timeout)
        .header(CONTENT_TYPE, "application/json")
        .body(update.to_string());
    if let Some(secret) = secret {
        request = request.header(SECRET_HEADER, secret);
    }
    let response = request.send().await.map_err(Failure::from_error)?;
    let status = response.status();
    let retry_after = retry_after(response.headers());
    // Read to the end, so that the connection can carry the next update.
    let body = response.bytes().await;
    if !status.is_success() {
        return Err(Failure {
            level: Level::Update,
            status: Some(status.as_u16()),
            retry_after,
            message: format!(
                "Wrong response from the webhook: {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or_default()
            ),
        });
    }
    body.map(drop).map_err(Failure::from_error)
}

impl Failure {
    /// A request that got no (complete) answer: connection-level when no connection could
    /// be made ([`reqwest::Error::is_connect`]: refused, DNS, TLS handshake), else
    /// update-level. The message names the innermost cause ("Connection refused …"), never
    /// the URL, which often holds the bot's token.
    pub(super) fn from_error(error: reqwest::Error) -> Self {
        let error = error.without_url();
        let level = if error.is_connect() {
            Level::Connection
        } else {
            Level::Update
        };
        let message = if error.is_timeout() {
            "Read timeout expired".to_owned()
        } else {
            let mut cause: &dyn std::error::Error = &error;
            while let Some(next) = cause.source() {
                cause = next;
            }
            format!("Connection failed: {cause}")
        };
        Self {
            level,
            status: None,
            retry_after: None,
            message,
        }
    }

    /// A request task that panicked or was cancelled: update-level.
    pub(super) fn lost() -> Self {
        Self {
            level: Level::Update,
            status: None,
            retry_after: None,
            message: "Webhook request failed".to_owned(),
        }
    }
}

/// `Retry-After` in whole seconds (the HTTP-date form is not supported), when above 0;
/// at most an hour.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers.get(RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    (secs > 0).then(|| Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_whole_seconds_above_zero() {
        let headers = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(RETRY_AFTER, v.parse().unwrap());
            h
        };
        assert_eq!(retry_after(&headers("3")), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(&headers(" 1 ")), Some(Duration::from_secs(1)));
        assert_eq!(retry_after(&headers("0")), None);
        assert_eq!(retry_after(&headers("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(retry_after(&headers("999999")), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[tokio::test]
    async fn a_refused_connection_is_connection_level() {
        // A port nothing listens on: bound, then closed.
        let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let url = format!("http://{addr}/hook");
        let failure = post(client, url, None, Arc::from("{}"), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(failure.level, Level::Connection, "{failure:?}");
        assert!(failure.message.starts_with("Connection failed: "), "{failure:?}");
        assert!(!failure.message.contains("127.0.0.1"), "no URL: {failure:?}");
    }
}
