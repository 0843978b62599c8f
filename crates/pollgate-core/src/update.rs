//! The update envelope: one update's raw JSON plus the three facts the runtime needs.
//!
//! pollgate does not model the Bot API's types (that is teloxide's or frankenstein's job).
//! Scheduling an update needs only its `update_id` (acknowledgement), its size (the
//! default memory cost) and its ordering key (per-chat ordering). [`Update`] extracts
//! those in one pass over the update's bytes, without allocating per field, and keeps the
//! raw JSON so the handler can parse it into whatever types it likes, on demand.
//!
//! Each `Update` owns its JSON (one `Arc<str>`, shared by its clones): it is copied out of
//! the response as the response is decoded, so what a handler holds is its own update and
//! nothing more. Sharing the response body instead saved that copy but let one slow
//! handler keep its whole batch alive (100 updates, up to the 8 MiB body cap) long after
//! the other 99 finished; `docs/benchmarks.md` ("Update bodies") has the measurement.

use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

/// One update as delivered by the transport: raw JSON plus `update_id`, kind and
/// ordering key, extracted without a second parse.
///
/// Cloning is cheap (a reference count); the JSON text is the update's own, not the
/// response body's.
///
/// # Examples
///
/// What the runtime reads of an update, and how a handler gets at the rest:
///
/// ```
/// use pollgate_core::{Update, UpdateKind};
///
/// let json = r#"{"update_id":9001,"message":{"message_id":5,"chat":{"id":-100123,"type":"group"},"text":"hi"}}"#;
/// let update = Update::from_json(json).unwrap();
/// assert_eq!(update.id(), 9001); // acknowledgement
/// assert_eq!(update.kind(), &UpdateKind::Message);
/// assert_eq!(update.ordering_key(), Some(-100123)); // per-chat order: its chat
/// assert_eq!(update.size(), json.len()); // the default memory cost
///
/// let value = update.value().unwrap(); // or `parse` into your own types
/// assert_eq!(value["message"]["text"], "hi");
/// ```
#[derive(Clone)]
pub struct Update {
    json: Arc<str>,
    id: i64,
    kind: UpdateKind,
    key: Option<i64>,
    receipt: Option<Arc<str>>,
}

impl Update {
    /// Decodes one `Update` object from its JSON text (a copy is kept).
    ///
    /// Use this for updates that do not come from a `getUpdates` response, such as entries
    /// of a queue or test fixtures.
    ///
    /// # Errors
    /// [`EnvelopeError`] when the text is not a JSON object with an integer `update_id`, or
    /// when the field the ordering key is read from has the wrong type.
    ///
    /// # Examples
    ///
    /// ```
    /// use pollgate_core::Update;
    ///
    /// let update = Update::from_json(r#"{"update_id":1,"callback_query":{"id":"q","from":{"id":42}}}"#)?;
    /// assert_eq!(update.ordering_key(), Some(42), "a button of an inline message: its user");
    ///
    /// // A chat id that is not a number: the envelope is broken, its id still known.
    /// let broken = Update::from_json(r#"{"update_id":2,"message":{"chat":{"id":"x"}}}"#).unwrap_err();
    /// assert_eq!(broken.update_id(), Some(2));
    /// assert!(Update::from_json(r#"{"message":{}}"#).is_err(), "no update_id");
    /// # Ok::<(), pollgate_core::EnvelopeError>(())
    /// ```
    pub fn from_json(json: &str) -> Result<Update, EnvelopeError> {
        let probe = Probe::decode(json)?;
        Ok(Update {
            json: Arc::from(json),
            id: probe.id,
            kind: probe.kind,
            key: probe.key,
            receipt: None,
        })
    }

    /// The update's `update_id`.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// Which field of the `Update` object is set (`message`, `callback_query`, ...).
    pub fn kind(&self) -> &UpdateKind {
        &self.kind
    }

    /// The ordering key: the chat of the update where it has one, else the acting user,
    /// else `None`. See [`UpdateKind`] for the rule per kind. A key of 0 is a key.
    pub fn ordering_key(&self) -> Option<i64> {
        self.key
    }

    /// Size of the update's JSON text in bytes: the basis of the default memory cost.
    pub fn size(&self) -> usize {
        self.json.len()
    }

    /// The update's JSON text, exactly as the server sent it.
    pub fn raw(&self) -> &str {
        &self.json
    }

    /// Parses the update into a typed value (borrowing from the raw text where `T` does).
    ///
    /// # Errors
    /// The `serde_json` error when the JSON does not fit `T`.
    ///
    /// # Examples
    ///
    /// Only the fields the handler needs, borrowed from the update's text:
    ///
    /// ```
    /// use pollgate_core::Update;
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Text<'a> {
    ///     #[serde(borrow)]
    ///     message: Message<'a>,
    /// }
    /// #[derive(serde::Deserialize)]
    /// struct Message<'a> {
    ///     text: &'a str,
    /// }
    ///
    /// let update = Update::from_json(r#"{"update_id":1,"message":{"chat":{"id":7},"text":"/start"}}"#).unwrap();
    /// let parsed: Text<'_> = update.parse().unwrap();
    /// assert_eq!(parsed.message.text, "/start");
    /// ```
    pub fn parse<'a, T: Deserialize<'a>>(&'a self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.raw())
    }

    /// Parses the update into a dynamically typed [`serde_json::Value`].
    ///
    /// # Errors
    /// When the update holds a number beyond the range of `f64`: valid JSON, which the
    /// envelope accepts (it never converts numbers it does not need), but which `Value`
    /// cannot represent. Found by fuzzing; see `tests/fuzz_regressions.rs`.
    pub fn value(&self) -> Result<serde_json::Value, serde_json::Error> {
        self.parse()
    }

    /// A transport-specific delivery receipt (for example a stream entry id), used by
    /// transports that acknowledge each update on its own. `None` for Telegram.
    pub fn receipt(&self) -> Option<&Arc<str>> {
        self.receipt.as_ref()
    }

    /// Attaches a delivery receipt (see [`Update::receipt`]).
    ///
    /// # Examples
    ///
    /// A transport with per-update acknowledgements tags each update it delivers; the
    /// runtime hands the receipt back in [`Ack::receipts`](crate::Ack::receipts):
    ///
    /// ```
    /// use pollgate_core::Update;
    ///
    /// let update = Update::from_json(r#"{"update_id":1}"#).unwrap();
    /// assert_eq!(update.receipt(), None);
    /// let update = update.with_receipt("1700000000000-0");
    /// assert_eq!(update.receipt().map(|r| &**r), Some("1700000000000-0"));
    /// ```
    #[must_use]
    pub fn with_receipt(mut self, receipt: impl Into<Arc<str>>) -> Update {
        self.receipt = Some(receipt.into());
        self
    }
}

impl fmt::Debug for Update {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Update")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("key", &self.key)
            .field("size", &self.size())
            .finish_non_exhaustive()
    }
}

/// The field of an `Update` object that carries its content.
///
/// The ordering key ([`Update::ordering_key`]) is taken, per kind:
/// - the chat (`.chat.id`) for messages of every kind (`message`, `edited_message`,
///   `channel_post`, `edited_channel_post`, `business_message`, `edited_business_message`),
///   member changes, join requests, reactions, boosts and `deleted_business_messages`;
/// - `callback_query`: the chat of its message when it has one, else `.from.id`
///   (buttons of inline-mode messages);
/// - `poll_answer`: `.voter_chat.id` when an anonymous chat voted, else `.user.id`;
/// - `inline_query`, `chosen_inline_result`, `shipping_query`, `pre_checkout_query`,
///   `purchased_paid_media`: `.from.id`; `business_connection`: `.user.id`;
/// - `poll` and kinds this crate does not know: no key.
///
/// # Examples
///
/// ```
/// use pollgate_core::{Update, UpdateKind};
///
/// let poll = Update::from_json(r#"{"update_id":1,"poll":{"id":"p"}}"#).unwrap();
/// assert_eq!((poll.kind(), poll.ordering_key()), (&UpdateKind::Poll, None));
/// let newer = Update::from_json(r#"{"update_id":2,"from_a_later_bot_api":{}}"#).unwrap();
/// assert_eq!(newer.kind(), &UpdateKind::Other("from_a_later_bot_api".into()));
/// assert_eq!(UpdateKind::CallbackQuery.to_string(), "callback_query");
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum UpdateKind {
    /// `message`
    Message,
    /// `edited_message`
    EditedMessage,
    /// `channel_post`
    ChannelPost,
    /// `edited_channel_post`
    EditedChannelPost,
    /// `business_connection`
    BusinessConnection,
    /// `business_message`
    BusinessMessage,
    /// `edited_business_message`
    EditedBusinessMessage,
    /// `deleted_business_messages`
    DeletedBusinessMessages,
    /// `message_reaction`
    MessageReaction,
    /// `message_reaction_count`
    MessageReactionCount,
    /// `inline_query`
    InlineQuery,
    /// `chosen_inline_result`
    ChosenInlineResult,
    /// `callback_query`
    CallbackQuery,
    /// `shipping_query`
    ShippingQuery,
    /// `pre_checkout_query`
    PreCheckoutQuery,
    /// `purchased_paid_media`
    PurchasedPaidMedia,
    /// `poll`
    Poll,
    /// `poll_answer`
    PollAnswer,
    /// `my_chat_member`
    MyChatMember,
    /// `chat_member`
    ChatMember,
    /// `chat_join_request`
    ChatJoinRequest,
    /// `chat_boost`
    ChatBoost,
    /// `removed_chat_boost`
    RemovedChatBoost,
    /// A field this crate does not know (newer Bot API versions add kinds); its name.
    Other(Box<str>),
    /// The object has no field besides `update_id`.
    Empty,
}

/// Where the ordering key of a kind is read from.
#[derive(Clone, Copy)]
enum KeyRule {
    Chat,
    From,
    User,
    Callback,
    PollAnswer,
    None,
}

impl UpdateKind {
    fn from_field(field: &str) -> Option<(UpdateKind, KeyRule)> {
        use KeyRule as R;
        use UpdateKind as K;
        Some(match field {
            "message" => (K::Message, R::Chat),
            "edited_message" => (K::EditedMessage, R::Chat),
            "channel_post" => (K::ChannelPost, R::Chat),
            "edited_channel_post" => (K::EditedChannelPost, R::Chat),
            "business_connection" => (K::BusinessConnection, R::User),
            "business_message" => (K::BusinessMessage, R::Chat),
            "edited_business_message" => (K::EditedBusinessMessage, R::Chat),
            "deleted_business_messages" => (K::DeletedBusinessMessages, R::Chat),
            "message_reaction" => (K::MessageReaction, R::Chat),
            "message_reaction_count" => (K::MessageReactionCount, R::Chat),
            "inline_query" => (K::InlineQuery, R::From),
            "chosen_inline_result" => (K::ChosenInlineResult, R::From),
            "callback_query" => (K::CallbackQuery, R::Callback),
            "shipping_query" => (K::ShippingQuery, R::From),
            "pre_checkout_query" => (K::PreCheckoutQuery, R::From),
            "purchased_paid_media" => (K::PurchasedPaidMedia, R::From),
            "poll" => (K::Poll, R::None),
            "poll_answer" => (K::PollAnswer, R::PollAnswer),
            "my_chat_member" => (K::MyChatMember, R::Chat),
            "chat_member" => (K::ChatMember, R::Chat),
            "chat_join_request" => (K::ChatJoinRequest, R::Chat),
            "chat_boost" => (K::ChatBoost, R::Chat),
            "removed_chat_boost" => (K::RemovedChatBoost, R::Chat),
            _ => return None,
        })
    }

    /// The field name, as in the Bot API (`"message"`, `"callback_query"`, ...).
    pub fn as_str(&self) -> &str {
        use UpdateKind as K;
        match self {
            K::Message => "message",
            K::EditedMessage => "edited_message",
            K::ChannelPost => "channel_post",
            K::EditedChannelPost => "edited_channel_post",
            K::BusinessConnection => "business_connection",
            K::BusinessMessage => "business_message",
            K::EditedBusinessMessage => "edited_business_message",
            K::DeletedBusinessMessages => "deleted_business_messages",
            K::MessageReaction => "message_reaction",
            K::MessageReactionCount => "message_reaction_count",
            K::InlineQuery => "inline_query",
            K::ChosenInlineResult => "chosen_inline_result",
            K::CallbackQuery => "callback_query",
            K::ShippingQuery => "shipping_query",
            K::PreCheckoutQuery => "pre_checkout_query",
            K::PurchasedPaidMedia => "purchased_paid_media",
            K::Poll => "poll",
            K::PollAnswer => "poll_answer",
            K::MyChatMember => "my_chat_member",
            K::ChatMember => "chat_member",
            K::ChatJoinRequest => "chat_join_request",
            K::ChatBoost => "chat_boost",
            K::RemovedChatBoost => "removed_chat_boost",
            K::Other(name) => name,
            K::Empty => "",
        }
    }
}

impl fmt::Display for UpdateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why one update could not be decoded.
///
/// # Examples
///
/// ```
/// use pollgate_core::{ErrorChain, Update};
///
/// let error = Update::from_json(r#"{"update_id":3,"message":"not an object"}"#).unwrap_err();
/// assert_eq!(error.update_id(), Some(3)); // enough to acknowledge past it
/// assert_eq!(error.to_string(), "undecodable update 3");
/// assert!(ErrorChain(&error).to_string().starts_with("undecodable update 3: "));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The JSON is malformed, is not an object, or a field the key is read from has the
    /// wrong type.
    #[error("undecodable update{}", .update_id.map(|id| format!(" {id}")).unwrap_or_default())]
    Invalid {
        /// The `update_id`, when it could still be read.
        update_id: Option<i64>,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
}

impl EnvelopeError {
    /// The `update_id` of the undecodable update, when it could still be read.
    pub fn update_id(&self) -> Option<i64> {
        match self {
            EnvelopeError::Invalid { update_id, .. } => *update_id,
        }
    }
}

/// What one pass over an update's JSON yields.
struct Probe {
    id: i64,
    kind: UpdateKind,
    key: Option<i64>,
}

impl Probe {
    fn decode(json: &str) -> Result<Probe, EnvelopeError> {
        let mut de = serde_json::Deserializer::from_str(json);
        let result = (&mut de)
            .deserialize_map(ProbeVisitor)
            .and_then(|probe| de.end().map(|()| probe));
        result.map_err(|source| EnvelopeError::Invalid {
            update_id: IdOnly::read(json),
            source,
        })
    }
}

/// Second-chance read of just the `update_id`, so a broken update can be skipped past.
#[derive(Deserialize)]
struct IdOnly {
    update_id: i64,
}

impl IdOnly {
    fn read(json: &str) -> Option<i64> {
        serde_json::from_str::<IdOnly>(json).ok().map(|v| v.update_id)
    }
}

struct ProbeVisitor;

impl<'de> Visitor<'de> for ProbeVisitor {
    type Value = Probe;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Telegram Update object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Probe, A::Error> {
        let mut id = None;
        let mut kind = None;
        let mut key = None;
        while let Some(field) = map.next_key::<FieldName<'de>>()? {
            let field = field.as_str();
            if field == "update_id" {
                if id.is_some() {
                    return Err(de::Error::duplicate_field("update_id"));
                }
                id = Some(map.next_value::<i64>()?);
            } else if kind.is_none() {
                match UpdateKind::from_field(field) {
                    Some((k, rule)) => {
                        key = map.next_value_seed(KeySeed(rule))?;
                        kind = Some(k);
                    }
                    None => {
                        map.next_value::<IgnoredAny>()?;
                        kind = Some(UpdateKind::Other(field.into()));
                    }
                }
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        let id = id.ok_or_else(|| de::Error::missing_field("update_id"))?;
        Ok(Probe {
            id,
            kind: kind.unwrap_or(UpdateKind::Empty),
            key,
        })
    }
}

/// A map key, borrowed from the input unless it contains escapes.
struct FieldName<'de>(std::borrow::Cow<'de, str>);

impl FieldName<'_> {
    fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for FieldName<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FieldName<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(FieldName(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(FieldName(std::borrow::Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// `T` read from a JSON object only. Derived `Deserialize` impls also accept a struct
/// written as an array (`"chat": [33]` would read as `{"id": 33}`), which the Bot API
/// never sends; the fuzzer found that the key then disagreed with the object rules.
struct Obj<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData)).map(Obj)
    }
}

/// An object's `id`.
#[derive(Deserialize)]
struct Id {
    id: i64,
}

type IdObj = Option<Obj<Id>>;

fn id_of(o: IdObj) -> Option<i64> {
    o.map(|Obj(i)| i.id)
}

#[derive(Deserialize)]
struct WithChat {
    chat: IdObj,
}

#[derive(Deserialize)]
struct WithFrom {
    from: IdObj,
}

#[derive(Deserialize)]
struct WithUser {
    user: IdObj,
}

#[derive(Deserialize)]
struct Callback {
    message: Option<Obj<WithChat>>,
    from: IdObj,
}

#[derive(Deserialize)]
struct PollAnswer {
    voter_chat: IdObj,
    user: IdObj,
}

struct KeySeed(KeyRule);

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Option<i64>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<i64>, D::Error> {
        Ok(match self.0 {
            KeyRule::Chat => id_of(Obj::<WithChat>::deserialize(d)?.0.chat),
            KeyRule::From => id_of(Obj::<WithFrom>::deserialize(d)?.0.from),
            KeyRule::User => id_of(Obj::<WithUser>::deserialize(d)?.0.user),
            KeyRule::Callback => {
                let Obj(cb) = Obj::<Callback>::deserialize(d)?;
                cb.message.and_then(|Obj(m)| id_of(m.chat)).or(id_of(cb.from))
            }
            KeyRule::PollAnswer => {
                let Obj(pa) = Obj::<PollAnswer>::deserialize(d)?;
                id_of(pa.voter_chat).or(id_of(pa.user))
            }
            KeyRule::None => {
                IgnoredAny::deserialize(d)?;
                None
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_id_kind_and_key_of_a_message() {
        let u = Update::from_json(
            r#"{"update_id":7,"message":{"message_id":1,"chat":{"id":-100,"type":"group"},"text":"hi"}}"#,
        )
        .unwrap();
        assert_eq!(
            (u.id(), u.kind(), u.ordering_key()),
            (7, &UpdateKind::Message, Some(-100))
        );
    }

    #[test]
    fn update_id_may_come_last_and_unknown_kinds_decode() {
        let u = Update::from_json(r#"{"brand_new":{"x":[1,2,{"chat":{"id":5}}]},"update_id":9}"#).unwrap();
        assert_eq!(u.id(), 9);
        assert_eq!(u.kind(), &UpdateKind::Other("brand_new".into()));
        assert_eq!(u.ordering_key(), None);
    }

    #[test]
    fn callback_without_message_is_keyed_by_user_and_zero_is_a_key() {
        let u =
            Update::from_json(r#"{"update_id":1,"callback_query":{"id":"x","from":{"id":0},"message":null}}"#).unwrap();
        assert_eq!(u.ordering_key(), Some(0));
    }

    #[test]
    fn anonymous_poll_vote_is_keyed_by_the_voter_chat() {
        let u =
            Update::from_json(r#"{"update_id":1,"poll_answer":{"user":{"id":136817688},"voter_chat":{"id":-1005}}}"#)
                .unwrap();
        assert_eq!(u.ordering_key(), Some(-1005));
    }

    #[test]
    fn broken_update_keeps_its_id_in_the_error() {
        let e = Update::from_json(r#"{"update_id":3,"message":{"chat":{"id":"x"}}}"#).unwrap_err();
        assert_eq!(e.update_id(), Some(3));
        let e = Update::from_json(r#"{"message":{}}"#).unwrap_err();
        assert_eq!(e.update_id(), None);
        assert!(Update::from_json("[1,2]").is_err());
        assert!(Update::from_json(r#"{"update_id":1} trailing"#).is_err());
    }

    #[test]
    fn escaped_field_names_are_understood() {
        let u = Update::from_json(r#"{"update_\u0069d":4,"m\u0065ssage":{"chat":{"id":2}}}"#).unwrap();
        assert_eq!((u.id(), u.ordering_key()), (4, Some(2)));
    }
}
