//! The ordering key of an update: what the webhook sender serialises its requests on.

use serde_json::Value;

/// The ordering key of an update given as JSON text: the chat where it has one, else the
/// acting user, else `None`.
///
/// Read from the update's content object (its field other than `update_id`), first match
/// wins: `chat.id` (messages of every kind, member changes, join requests, reactions,
/// boosts), `message.chat.id` (`callback_query`), `voter_chat.id` (`poll_answer` by a
/// chat), `from.id` (`inline_query`, `callback_query` without message, …), `user.id`
/// (`poll_answer`, `business_connection`). `poll` has none. This is the rule of pollgate's
/// `Update::ordering_key`, so the mock's per-chat order is the one a pollgate consumer keeps.
pub(super) fn ordering_key(update: &str) -> Option<i64> {
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(update) else {
        return None;
    };
    let id = |v: &Value| v.get("id").and_then(Value::as_i64);
    fields
        .iter()
        .filter(|(name, _)| name.as_str() != "update_id")
        .find_map(|(_, content)| {
            content
                .get("chat")
                .and_then(id)
                .or_else(|| content.get("message").and_then(|m| m.get("chat")).and_then(id))
                .or_else(|| content.get("voter_chat").and_then(id))
                .or_else(|| content.get("from").and_then(id))
                .or_else(|| content.get("user").and_then(id))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_follow_the_chat_then_the_user() {
        let key = |v: Value| ordering_key(&v.to_string());
        let chat = json!({"id": -100, "type": "supergroup"});
        let user = json!({"id": 7, "is_bot": false, "first_name": "A"});
        assert_eq!(
            key(json!({"update_id": 1, "message": {"chat": chat, "from": user}})),
            Some(-100)
        );
        assert_eq!(
            key(json!({"update_id": 1, "edited_channel_post": {"chat": chat}})),
            Some(-100)
        );
        assert_eq!(
            key(json!({"update_id": 1, "my_chat_member": {"chat": chat, "from": user}})),
            Some(-100)
        );
        assert_eq!(
            key(json!({"update_id": 1, "callback_query": {"from": user, "message": {"chat": chat}}})),
            Some(-100)
        );
        assert_eq!(key(json!({"update_id": 1, "callback_query": {"from": user}})), Some(7));
        assert_eq!(key(json!({"update_id": 1, "inline_query": {"from": user}})), Some(7));
        assert_eq!(key(json!({"update_id": 1, "poll_answer": {"user": user}})), Some(7));
        assert_eq!(
            key(json!({"update_id": 1, "poll_answer": {"voter_chat": chat, "user": user}})),
            Some(-100)
        );
        assert_eq!(
            key(json!({"update_id": 1, "business_connection": {"user": user}})),
            Some(7)
        );
        assert_eq!(key(json!({"update_id": 1, "poll": {"id": "5", "question": "?"}})), None);
        assert_eq!(key(json!({"update_id": 1})), None);
        assert_eq!(key(json!({"update_id": 1, "payload": 3})), None);
        assert_eq!(ordering_key("not json"), None);
        assert_eq!(ordering_key(r#"{"update_id":1,"message":{"chat":{"id":"x"}}}"#), None);
    }
}
