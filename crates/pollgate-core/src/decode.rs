//! Decoding a `getUpdates` response without allocating per field.
//!
//! The envelope (`ok`, `result`, `error_code`, ...) is parsed with `result` as a list of
//! borrowed [`RawValue`]s, so the parser only validates and skips the updates; then each
//! update is probed for its id, kind and key ([`crate::Update`]) and copied out of the
//! body, so that no update keeps the others alive. One response costs one `Vec` of
//! updates and one allocation per update, not a tree of maps and strings as
//! `serde_json::Value` would.
//!
//! A response that does not decode as a whole is an error (the transport retries it);
//! an update that does not decode on its own is a [`DecodeFailure`] in the batch (the
//! runtime reports it and acknowledges past it). The transport passes its token so that a
//! failure's excerpt and parser message are redacted (the excerpt before it is cut).
//!
//! The other methods the transport calls (`getWebhookInfo`, `deleteWebhook`) answer small
//! bodies, decoded whole by [`decode_method`].

use std::borrow::Cow;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::token::BotToken;
use crate::transport::{Batch, DecodeFailure};
use crate::update::{EnvelopeError, Update};

/// How many bytes of an undecodable update a [`DecodeFailure`] keeps.
const FAILURE_EXCERPT_BYTES: usize = 256;

/// A decoded Bot API response to `getUpdates`.
///
/// # Examples
///
/// For a transport of one's own (a proxy, a recorded session): one broken update does not
/// spoil the others, it becomes a [`DecodeFailure`] with its id.
///
/// ```
/// use pollgate_core::GetUpdatesResponse;
///
/// let body = r#"{"ok":true,"result":[
///     {"update_id":10,"message":{"chat":{"id":7},"text":"hi"}},
///     {"update_id":11,"message":{"chat":{"id":"not a number"}}}
/// ]}"#;
/// let GetUpdatesResponse::Updates(batch) = GetUpdatesResponse::decode(body, Some(10)).unwrap() else {
///     panic!("ok: true");
/// };
/// assert_eq!(batch.updates[0].ordering_key(), Some(7));
/// assert_eq!((batch.failures[0].update_id, batch.failures[0].id_inferred), (11, false));
/// assert_eq!(batch.last_id(), Some(11), "acknowledged past, with the rest");
///
/// let limited = r#"{"ok":false,"error_code":429,"description":"Too Many Requests","parameters":{"retry_after":5}}"#;
/// assert!(matches!(
///     GetUpdatesResponse::decode(limited, None).unwrap(),
///     GetUpdatesResponse::Error { error_code: 429, retry_after: Some(_), .. }
/// ));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum GetUpdatesResponse {
    /// `ok: true`: the updates.
    Updates(Batch),
    /// `ok: false`: the error object.
    Error {
        /// `error_code`.
        error_code: i64,
        /// `description`.
        description: String,
        /// `parameters.retry_after`, for 429.
        retry_after: Option<Duration>,
    },
}

#[derive(Deserialize)]
struct Envelope<'a> {
    ok: bool,
    #[serde(borrow)]
    result: Option<Vec<&'a RawValue>>,
    error_code: Option<i64>,
    #[serde(borrow)]
    description: Option<Cow<'a, str>>,
    parameters: Option<Parameters>,
}

#[derive(Deserialize)]
struct Parameters {
    retry_after: Option<u64>,
}

impl GetUpdatesResponse {
    /// Decodes a whole `getUpdates` response body.
    ///
    /// `first_id_hint` is the offset the request was made with; it is used only to give an
    /// id to an update whose own `update_id` is unreadable when no neighbour has one.
    ///
    /// # Errors
    /// The parser's error when the body is not a Bot API response (invalid JSON, not an
    /// object, `ok: true` without a `result` array).
    pub fn decode(body: &str, first_id_hint: Option<i64>) -> Result<GetUpdatesResponse, serde_json::Error> {
        GetUpdatesResponse::decode_redacted(body, first_id_hint, None)
    }

    /// [`GetUpdatesResponse::decode`], removing `token` from what a [`DecodeFailure`]
    /// keeps of the server's text: its excerpt and its parser message.
    pub(crate) fn decode_redacted(
        body: &str,
        first_id_hint: Option<i64>,
        token: Option<&BotToken>,
    ) -> Result<GetUpdatesResponse, serde_json::Error> {
        let envelope: Envelope<'_> = serde_json::from_str(body)?;
        if !envelope.ok {
            return Ok(GetUpdatesResponse::Error {
                error_code: envelope.error_code.unwrap_or(0),
                description: envelope.description.map(Cow::into_owned).unwrap_or_default(),
                retry_after: envelope.parameters.and_then(|p| p.retry_after).map(Duration::from_secs),
            });
        }
        let raws = envelope
            .result
            .ok_or_else(|| <serde_json::Error as serde::de::Error>::missing_field("result"))?;
        let mut batch = Batch {
            updates: Vec::with_capacity(raws.len()),
            failures: Vec::new(),
            truncated: false,
        };
        // Failures without a readable id, by position, resolved once the neighbours are known.
        let mut unresolved: Vec<(usize, usize)> = Vec::new();
        let mut ids: Vec<Option<i64>> = Vec::with_capacity(raws.len());
        for (pos, raw) in raws.iter().enumerate() {
            let text = raw.get();
            match Update::from_json(text) {
                Ok(update) => {
                    ids.push(Some(update.id()));
                    batch.updates.push(update);
                }
                Err(error) => {
                    let read = error.update_id();
                    ids.push(read);
                    if read.is_none() {
                        unresolved.push((pos, batch.failures.len()));
                    }
                    batch.failures.push(DecodeFailure {
                        update_id: read.unwrap_or(0),
                        id_inferred: read.is_none(),
                        error: redact_envelope_error(error, token),
                        raw: excerpt(text, token),
                    });
                }
            }
        }
        for (pos, failure) in unresolved {
            let before = ids[..pos]
                .iter()
                .enumerate()
                .rev()
                .find_map(|(i, id)| id.map(|id| id + (pos - i) as i64));
            let after = || {
                ids[pos + 1..]
                    .iter()
                    .enumerate()
                    .find_map(|(i, id)| id.map(|id| id - (i + 1) as i64))
            };
            let inferred = before
                .or_else(after)
                .or(first_id_hint.map(|o| o + pos as i64))
                .unwrap_or(0);
            ids[pos] = Some(inferred);
            batch.failures[failure].update_id = inferred;
        }
        Ok(GetUpdatesResponse::Updates(batch))
    }
}

/// What the server answered to a method other than `getUpdates`.
#[derive(Debug)]
pub(crate) enum MethodResponse<T> {
    /// `ok: true`: the `result`.
    Ok(T),
    /// `ok: false`: the error object.
    Error {
        /// `error_code`.
        error_code: i64,
        /// `description`.
        description: String,
        /// `parameters.retry_after`, for 429.
        retry_after: Option<Duration>,
    },
}

#[derive(Deserialize)]
struct MethodEnvelope<T> {
    ok: bool,
    result: Option<T>,
    error_code: Option<i64>,
    description: Option<String>,
    parameters: Option<Parameters>,
}

/// Decodes a whole Bot API response whose `result` is a `T`.
///
/// # Errors
/// The parser's error when the body is not a Bot API response or `ok: true` comes without
/// a `result` of type `T`.
pub(crate) fn decode_method<T: DeserializeOwned>(body: &str) -> Result<MethodResponse<T>, serde_json::Error> {
    let envelope: MethodEnvelope<T> = serde_json::from_str(body)?;
    if !envelope.ok {
        return Ok(MethodResponse::Error {
            error_code: envelope.error_code.unwrap_or(0),
            description: envelope.description.unwrap_or_default(),
            retry_after: envelope.parameters.and_then(|p| p.retry_after).map(Duration::from_secs),
        });
    }
    envelope
        .result
        .map(MethodResponse::Ok)
        .ok_or_else(|| <serde_json::Error as serde::de::Error>::missing_field("result"))
}

fn redact_envelope_error(error: EnvelopeError, token: Option<&BotToken>) -> EnvelopeError {
    match (error, token) {
        (EnvelopeError::Invalid { update_id, source }, Some(token)) => EnvelopeError::Invalid {
            update_id,
            source: token.redact_json_error(source),
        },
        (error, _) => error,
    }
}

/// At most [`FAILURE_EXCERPT_BYTES`] of `text`, redacted before the cut when a token is given.
fn excerpt(text: &str, token: Option<&BotToken>) -> String {
    let (kept, truncated) = match token {
        Some(token) => token.redacted_prefix(text.as_bytes(), FAILURE_EXCERPT_BYTES),
        None => {
            let mut cut = text.len().min(FAILURE_EXCERPT_BYTES);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            (text[..cut].to_owned(), cut < text.len())
        }
    };
    if truncated { format!("{kept}…") } else { kept }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(body: &str) -> Batch {
        match GetUpdatesResponse::decode(body, Some(100)).unwrap() {
            GetUpdatesResponse::Updates(b) => b,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn updates_share_the_body_and_keep_their_exact_text() {
        let b =
            decode(r#"{"ok":true,"result":[{"update_id":1,"message":{"chat":{"id":5}}}, {"update_id":2,"poll":{}}]}"#);
        assert_eq!(b.updates.len(), 2);
        assert_eq!(b.updates[0].raw(), r#"{"update_id":1,"message":{"chat":{"id":5}}}"#);
        assert_eq!(b.updates[1].raw(), r#"{"update_id":2,"poll":{}}"#);
        assert_eq!(b.last_id(), Some(2));
    }

    #[test]
    fn a_broken_update_is_a_failure_with_its_id_and_the_rest_decode() {
        let b = decode(
            r#"{"ok":true,"result":[{"update_id":1,"poll":{}},{"update_id":2,"message":"garbage"},{"update_id":3,"poll":{}}]}"#,
        );
        assert_eq!(b.updates.iter().map(Update::id).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(b.failures.len(), 1);
        assert_eq!((b.failures[0].update_id, b.failures[0].id_inferred), (2, false));
    }

    #[test]
    fn ids_of_updates_without_a_readable_id_are_inferred_from_neighbours() {
        let b = decode(r#"{"ok":true,"result":[{"poll":{}},{"update_id":8,"poll":{}},{"x":1},{"y":2}]}"#);
        let ids: Vec<_> = b.failures.iter().map(|f| (f.update_id, f.id_inferred)).collect();
        assert_eq!(ids, [(7, true), (9, true), (10, true)]);
        let b = decode(r#"{"ok":true,"result":[7,8]}"#);
        assert_eq!(b.failures.iter().map(|f| f.update_id).collect::<Vec<_>>(), [100, 101]);
        assert_eq!(b.last_id(), Some(101));
    }

    #[test]
    fn api_errors_and_invalid_bodies() {
        let r = GetUpdatesResponse::decode(
            r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 3","parameters":{"retry_after":3}}"#,
            None,
        )
        .unwrap();
        assert!(
            matches!(r, GetUpdatesResponse::Error { error_code: 429, retry_after: Some(d), .. } if d == Duration::from_secs(3))
        );
        for bad in [
            "",
            "<html>502</html>",
            r#"{"ok":true,"result":[{"update_id":1}"#,
            r#"{"ok":true}"#,
            "[]",
            r#"{"ok":true,"result":{}}"#,
        ] {
            assert!(GetUpdatesResponse::decode(bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn failures_are_redacted_before_their_excerpt_is_cut() {
        let token = BotToken::new("7:AAEsecretsecretsecretsecret");
        // The token starts 10 bytes before the 256-byte cut of the failure's excerpt, in a
        // field whose wrong type makes the parser quote it.
        let head = r#"{"update_id":4,"message":{"text":""#;
        let pad = "p".repeat(FAILURE_EXCERPT_BYTES - 10 - head.len() - r#"","chat":{"id":""#.len());
        let update = format!(r#"{head}{pad}","chat":{{"id":"{}"}}}}}}"#, token.expose());
        assert_eq!(update.find(token.expose()), Some(FAILURE_EXCERPT_BYTES - 10));
        let body = format!(r#"{{"ok":true,"result":[{update}]}}"#);
        let decoded = GetUpdatesResponse::decode_redacted(body.as_str(), None, Some(&token)).unwrap();
        let GetUpdatesResponse::Updates(batch) = decoded else {
            panic!("{decoded:?}");
        };
        let failure = &batch.failures[0];
        let shown = format!(
            "{} {:?} {}",
            crate::ErrorChain(&failure.error),
            failure.error,
            failure.raw
        );
        assert!(!shown.contains("7:AAE") && !shown.contains("secret"), "{shown}");
        assert!(shown.contains(r#"invalid type: string "<redacted>""#), "{shown}");
        assert!(
            failure.raw.ends_with('…') && failure.raw.starts_with(head),
            "{}",
            failure.raw
        );
        // Without a token (the public decoder), the text is kept as the server sent it.
        let GetUpdatesResponse::Updates(plain) = GetUpdatesResponse::decode(body.as_str(), None).unwrap() else {
            unreachable!("decoded above");
        };
        assert!(
            crate::ErrorChain(&plain.failures[0].error)
                .to_string()
                .contains(token.expose())
        );
    }

    #[test]
    fn method_responses_decode_their_result_or_their_error() {
        #[derive(Debug, Deserialize)]
        struct Info {
            url: String,
        }
        let ok = decode_method::<Info>(r#"{"ok":true,"result":{"url":"https://x/","pending_update_count":3}}"#);
        assert!(matches!(ok, Ok(MethodResponse::Ok(Info { url })) if url == "https://x/"));
        let err = decode_method::<bool>(
            r#"{"ok":false,"error_code":429,"description":"slow down","parameters":{"retry_after":2}}"#,
        );
        assert!(matches!(
            err,
            Ok(MethodResponse::Error { error_code: 429, retry_after: Some(d), .. }) if d == Duration::from_secs(2)
        ));
        assert!(decode_method::<bool>(r#"{"ok":true}"#).is_err());
        assert!(decode_method::<Info>(r#"{"ok":true,"result":"x"}"#).is_err());
        assert!(decode_method::<bool>("<html>").is_err());
    }
}
