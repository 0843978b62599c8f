//! The update envelope against a reference: whatever the bytes, `Update::from_json` never
//! panics, and when it accepts an update, its id, kind and ordering key agree with the
//! same rules applied to a `serde_json::Value` of the same text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pollgate_core::Update;
use serde_json::Value;

fn id(v: &Value) -> Option<i64> {
    v.get("id")?.as_i64()
}

/// The ordering-key rules listed on `pollgate_core::UpdateKind` (summarised in
/// `docs/architecture.md`, "Per-key ordering"), written over `Value` (the oracle).
fn reference_key(kind: &str, body: &Value) -> Option<i64> {
    let chat = || body.get("chat").and_then(id);
    match kind {
        "message" | "edited_message" | "channel_post" | "edited_channel_post" | "business_message"
        | "edited_business_message" | "deleted_business_messages" | "message_reaction" | "message_reaction_count"
        | "my_chat_member" | "chat_member" | "chat_join_request" | "chat_boost" | "removed_chat_boost" => chat(),
        "inline_query" | "chosen_inline_result" | "shipping_query" | "pre_checkout_query" | "purchased_paid_media" => {
            body.get("from").and_then(id)
        }
        "business_connection" => body.get("user").and_then(id),
        "callback_query" => body
            .get("message")
            .and_then(|m| m.get("chat"))
            .and_then(id)
            .or_else(|| body.get("from").and_then(id)),
        "poll_answer" => body.get("voter_chat").and_then(id).or_else(|| body.get("user").and_then(id)),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(update) = Update::from_json(text) else {
        return;
    };
    assert_eq!(update.raw(), text);
    assert_eq!(update.size(), text.len());
    // JSON's grammar allows numbers of any size; `Value` refuses those beyond f64 (and
    // the envelope, which never converts a number it does not need, accepts them), so
    // such inputs have no reference to compare with.
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let object = value.as_object().expect("an accepted update is an object");
    assert_eq!(object.get("update_id").and_then(Value::as_i64), Some(update.id()));
    let kind = update.kind().as_str().to_owned();
    if !kind.is_empty() {
        let body = &object[&kind];
        assert_eq!(update.ordering_key(), reference_key(&kind, body), "kind {kind}: {text}");
    }
});
