//! The bodies the server answers with: Bot API JSON envelopes and the broken replies that
//! fault injection needs (proxy HTML pages, truncated JSON, dropped connections).

use std::sync::Arc;

use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

/// The text a 409 carries, word for word as the real server sends it.
pub(crate) const CONFLICT: &str =
    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running";

/// The text of the 409 that `getUpdates` gets while a webhook is set, as the real server
/// sends it.
pub(crate) const WEBHOOK_CONFLICT: &str =
    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first";

/// A response with a JSON text body.
pub(crate) fn json_text(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `{"ok":true,"result":...}`.
pub(crate) fn ok(result: Value) -> Response {
    json_text(StatusCode::OK, json!({"ok": true, "result": result}).to_string())
}

/// `{"ok":false,"error_code":...,"description":...}` with the matching HTTP status.
pub(crate) fn error(code: u16, description: &str) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_text(
        status,
        json!({"ok": false, "error_code": code, "description": description}).to_string(),
    )
}

/// 400 `Bad Request: {why}`.
pub(crate) fn bad_request(why: &str) -> Response {
    error(400, &format!("Bad Request: {why}"))
}

/// 401 `Unauthorized`.
pub(crate) fn unauthorized() -> Response {
    error(401, "Unauthorized")
}

/// 404 `Not Found`.
pub(crate) fn not_found() -> Response {
    error(404, "Not Found")
}

/// 409 as sent to a terminated long poll.
pub(crate) fn conflict() -> Response {
    error(409, CONFLICT)
}

/// 409 as sent to `getUpdates` while a webhook is set.
pub(crate) fn webhook_conflict() -> Response {
    error(409, WEBHOOK_CONFLICT)
}

/// 429 with `parameters.retry_after`.
pub(crate) fn too_many_requests(retry_after: u32) -> Response {
    json_text(
        StatusCode::TOO_MANY_REQUESTS,
        json!({
            "ok": false,
            "error_code": 429,
            "description": format!("Too Many Requests: retry after {retry_after}"),
            "parameters": {"retry_after": retry_after},
        })
        .to_string(),
    )
}

/// A reverse proxy's HTML error page with status 500 or 502 (others map to 500).
pub(crate) fn server_error(status: u16) -> Response {
    let (status, title) = if status == 502 {
        (StatusCode::BAD_GATEWAY, "502 Bad Gateway")
    } else {
        (StatusCode::INTERNAL_SERVER_ERROR, "500 Internal Server Error")
    };
    let body = format!(
        "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n<hr><center>nginx/1.18.0</center>\r\n</body>\r\n</html>\r\n"
    );
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/html"));
    response
}

/// The `getUpdates` body for `updates`, each already JSON text, concatenated without
/// re-encoding. With `break_middle`, the middle update is replaced by a broken one that
/// keeps its id.
pub(crate) fn updates_body(updates: &[(i64, Arc<str>)], break_middle: bool) -> String {
    let broken_at = (break_middle && !updates.is_empty()).then_some(updates.len() / 2);
    let size: usize = updates.iter().map(|(_, text)| text.len() + 1).sum();
    let mut body = String::with_capacity(size + 32);
    body.push_str(r#"{"ok":true,"result":["#);
    for (i, (id, text)) in updates.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        if Some(i) == broken_at {
            body.push_str(&broken_update(*id));
        } else {
            body.push_str(text);
        }
    }
    body.push_str("]}");
    body
}

/// An update that keeps its id but no longer decodes as an `Update`.
pub(crate) fn broken_update(id: i64) -> String {
    format!(r#"{{"update_id":{id},"message":{{"message_id":"garbage","chat":{{"id":"not-a-number"}}}}}}"#)
}

/// The first half of `body`: 200, claims JSON, never parses.
pub(crate) fn truncated(body: String) -> Response {
    let mut cut = body.len() / 2;
    while !body.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut body = body;
    body.truncate(cut.max(1));
    json_text(StatusCode::OK, body)
}

/// 200 and the first half of `body`, then the body stream fails, so the connection is
/// closed before the response is complete.
pub(crate) fn dropped(body: String) -> Response {
    let body = Bytes::from(body);
    let first = body.slice(..body.len() / 2);
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(first),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "mock-bot-api: injected dropped connection",
        )),
    ];
    let mut response = Response::new(Body::from_stream(futures_util::stream::iter(chunks)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_concatenates_and_breaks_the_middle_one() {
        let ups: Vec<(i64, Arc<str>)> = (1..=3)
            .map(|i| (i, Arc::from(format!(r#"{{"update_id":{i},"message":{{}}}}"#))))
            .collect();
        let v: Value = serde_json::from_str(&updates_body(&ups, false)).unwrap();
        assert_eq!(v["result"].as_array().unwrap().len(), 3);
        let v: Value = serde_json::from_str(&updates_body(&ups, true)).unwrap();
        assert_eq!(v["result"][1]["update_id"], 2);
        assert_eq!(v["result"][1]["message"]["chat"]["id"], "not-a-number");
        assert_eq!(v["result"][0]["message"], json!({}));
        let v: Value = serde_json::from_str(&updates_body(&[], true)).unwrap();
        assert_eq!(v["result"], json!([]));
    }
}
