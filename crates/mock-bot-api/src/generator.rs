//! A seeded generator of realistic, varied Telegram updates.
//!
//! Every update body is an object with one update kind (`message`, `edited_message`,
//! `callback_query`, `channel_post`, `edited_channel_post`, `inline_query`,
//! `my_chat_member`, `chat_member`) and *no* `update_id`: the server inserts that when it
//! stores the update. The same [`BacklogSpec`] always yields the same sequence of bodies.
//!
//! Chats are private chats (positive ids, also the user's id), supergroups (`-100…`),
//! basic groups (`-4…`) and channels (`-100…`); message ids increase per chat, entity offsets
//! are in UTF-16 code units as in the real API.

use std::ops::RangeInclusive;

use fastrand::Rng;
use serde_json::{Value, json};

use crate::config::{BacklogSpec, Mix};
use crate::state::Shared;

/// Date of the first generated update (2025-01-01T00:00:00Z).
const BASE_DATE: i64 = 1_735_689_600;
/// Most distinct chats a spec may ask for.
const MAX_CHATS: usize = 1_000_000;
/// Largest text a spec may ask for, in bytes.
const MAX_TEXT_BYTES: usize = 1024 * 1024;
/// Most updates one spec may generate.
const MAX_UPDATES: usize = 10_000_000;
/// Most entities in one text, as in the real API.
const MAX_ENTITIES: usize = 100;

const FIRST_NAMES: &[&str] = &[
    "Alice",
    "Bob",
    "Дмитрий",
    "María",
    "Li",
    "Ahmed",
    "Sofia",
    "João",
    "Yuki",
    "Olga",
    "Carlos",
    "Fatima",
    "Noah",
    "Emma",
    "Іван",
    "Chen",
];
const LAST_NAMES: &[&str] = &[
    "Smith",
    "Иванова",
    "García",
    "Wang",
    "Khan",
    "Silva",
    "Tanaka",
    "Müller",
];
const LANGS: &[&str] = &["en", "ru", "es", "pt-br", "de", "uk", "ja", "ar", "fa", "id"];
const WORDS: &[&str] = &[
    "the",
    "order",
    "is",
    "ready",
    "please",
    "check",
    "status",
    "payment",
    "delivery",
    "tomorrow",
    "thanks",
    "hello",
    "bot",
    "price",
    "how",
    "much",
    "today",
    "ok",
    "when",
    "where",
    "привет",
    "спасибо",
    "заказ",
    "hola",
    "gracias",
    "obrigado",
    "😀",
    "👍",
    "🚀",
    "ticket",
    "support",
    "refund",
    "link",
    "photo",
    "subscribe",
    "daily",
    "report",
    "news",
    "weather",
    "in",
    "at",
];
const COMMANDS: &[&str] = &["/start", "/help", "/settings", "/status", "/buy", "/cancel"];
const TITLES: &[&str] = &[
    "Rust Beginners",
    "Кофейня на углу",
    "Weekend Hikers",
    "Crypto Signals",
    "Family",
    "Dev Updates",
    "Noticias Hoy",
];
const FILE_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChatKind {
    Private,
    Group,
    Supergroup,
    Channel,
}

#[derive(Debug)]
struct Person {
    json: Value,
}

#[derive(Debug)]
struct Chat {
    kind: ChatKind,
    json: Value,
    /// For private chats: the person on the other side.
    person: Option<usize>,
    next_message_id: i64,
}

/// Produces update bodies one at a time; see the module docs.
#[derive(Debug)]
pub(crate) struct Generator {
    rng: Rng,
    text_bytes: usize,
    people: Vec<Person>,
    chats: Vec<Chat>,
    bot: Value,
    /// Phrases of a few words, with their length in UTF-16 units: texts are built from
    /// these, which is several times faster than word by word.
    phrases: Vec<(String, usize)>,
    produced: u64,
    /// Every update a text message ([`Mix::PrivateText`], [`Mix::GroupText`]).
    text_only: bool,
}

impl Generator {
    /// A generator for `spec` (its `updates` field is ignored).
    pub(crate) fn new(spec: &BacklogSpec) -> Self {
        let mut rng = Rng::with_seed(spec.seed);
        let n_chats = spec.chats.clamp(1, MAX_CHATS);
        let mut people = Vec::new();
        let mut chats = Vec::with_capacity(n_chats);
        for i in 0..n_chats {
            let slot = i as i64 * 7919;
            let kind = match (spec.mix, i % 6) {
                (Mix::PrivateText, _) | (Mix::Varied, 0 | 2 | 4) => ChatKind::Private,
                (Mix::GroupText, _) if i % 2 == 1 => ChatKind::Group,
                (Mix::Varied, 1 | 5) if i % 12 == 5 => ChatKind::Group,
                (Mix::Varied, 1 | 5) | (Mix::GroupText, _) => ChatKind::Supergroup,
                _ => ChatKind::Channel,
            };
            let chat = match kind {
                ChatKind::Private => {
                    let id = 100_000_000 + slot + rng.i64(0..7919);
                    let person = make_person(&mut rng, id);
                    let mut json = json!({"id": id, "type": "private"});
                    for key in ["first_name", "last_name", "username"] {
                        if let Some(v) = person.json.get(key) {
                            json[key] = v.clone();
                        }
                    }
                    people.push(person);
                    Chat {
                        kind,
                        json,
                        person: Some(people.len() - 1),
                        next_message_id: 1,
                    }
                }
                ChatKind::Group => {
                    let id = -(4_000_000_000 + slot + rng.i64(0..7919));
                    let title = format!("{} {}", pick(&mut rng, TITLES), i);
                    Chat {
                        kind,
                        json: json!({"id": id, "title": title, "type": "group"}),
                        person: None,
                        next_message_id: 1,
                    }
                }
                ChatKind::Supergroup | ChatKind::Channel => {
                    let id = -(1_001_000_000_000 + slot + rng.i64(0..7919));
                    let title = format!("{} {}", pick(&mut rng, TITLES), i);
                    let ty = if kind == ChatKind::Channel {
                        "channel"
                    } else {
                        "supergroup"
                    };
                    let mut json = json!({"id": id, "title": title, "type": ty});
                    if rng.bool() {
                        json["username"] = Value::String(format!("chat_{}", i));
                    }
                    if kind == ChatKind::Supergroup && rng.u8(..4) == 0 {
                        json["is_forum"] = Value::Bool(true);
                    }
                    Chat {
                        kind,
                        json,
                        person: None,
                        next_message_id: 1,
                    }
                }
            };
            chats.push(chat);
        }
        // People who only write in groups.
        for j in 0..8 {
            let id = 9_000_000_000 + j * 13;
            people.push(make_person(&mut rng, id));
        }
        let phrases = (0..256)
            .map(|_| {
                let words: Vec<&str> = (0..rng.usize(2..=9)).map(|_| pick(&mut rng, WORDS)).collect();
                let phrase = words.join(" ");
                let units = phrase.encode_utf16().count();
                (phrase, units)
            })
            .collect();
        Self {
            rng,
            phrases,
            text_bytes: spec.text_bytes.min(MAX_TEXT_BYTES),
            people,
            chats,
            bot: json!({"id": 123_456, "is_bot": true, "first_name": "Mock", "username": "mock_bot"}),
            produced: 0,
            text_only: spec.mix != Mix::Varied,
        }
    }

    /// The next update body, as JSON text without `update_id`.
    pub(crate) fn next_body(&mut self) -> String {
        let value = self.next_value();
        self.produced += 1;
        serde_json::to_string(&value).unwrap_or_else(|_| "{}".to_owned())
    }

    fn next_value(&mut self) -> Value {
        let date = BASE_DATE + (self.produced / 3) as i64;
        let c = self.rng.usize(..self.chats.len());
        let roll = self.rng.u8(..100);
        if self.text_only {
            return json!({"message": self.text_message(c, date)});
        }
        match self.chats[c].kind {
            ChatKind::Private => match roll {
                0..60 => json!({"message": self.text_message(c, date)}),
                60..70 => json!({"message": self.photo_message(c, date)}),
                70..78 => json!({"edited_message": self.edited_message(c, date)}),
                78..90 => self.callback_query(c, date),
                90..95 => self.inline_query(c),
                _ => self.my_chat_member(c, date),
            },
            ChatKind::Group | ChatKind::Supergroup => match roll {
                0..55 => json!({"message": self.text_message(c, date)}),
                55..65 => json!({"message": self.photo_message(c, date)}),
                65..75 => json!({"edited_message": self.edited_message(c, date)}),
                75..85 => self.callback_query(c, date),
                85..95 => self.chat_member(c, date),
                _ => self.my_chat_member(c, date),
            },
            ChatKind::Channel => match roll {
                0..60 => json!({"channel_post": self.channel_post(c, date)}),
                60..70 => json!({"channel_post": self.photo_message(c, date)}),
                70..85 => json!({"edited_channel_post": self.edited_message(c, date)}),
                _ => self.my_chat_member(c, date),
            },
        }
    }

    /// Who acts in chat `c`: the private chat's person, or a random one.
    fn actor(&mut self, c: usize) -> usize {
        match self.chats[c].person {
            Some(p) => p,
            None => self.rng.usize(..self.people.len()),
        }
    }

    fn new_message_id(&mut self, c: usize) -> i64 {
        let chat = &mut self.chats[c];
        let id = chat.next_message_id;
        chat.next_message_id += 1;
        id
    }

    fn old_message_id(&mut self, c: usize) -> i64 {
        let next = self.chats[c].next_message_id;
        if next > 1 { self.rng.i64(1..next) } else { 1 }
    }

    /// Common fields of a message in chat `c`: id, sender, chat, date.
    fn message_head(&mut self, c: usize, message_id: i64, date: i64) -> Value {
        let chat = self.chats[c].json.clone();
        if self.chats[c].kind == ChatKind::Channel {
            json!({"message_id": message_id, "sender_chat": chat.clone(), "chat": chat, "date": date})
        } else {
            let actor = self.actor(c);
            let from = self.people[actor].json.clone();
            json!({"message_id": message_id, "from": from, "chat": chat, "date": date})
        }
    }

    fn text_message(&mut self, c: usize, date: i64) -> Value {
        let id = self.new_message_id(c);
        let mut m = self.message_head(c, id, date);
        let (text, entities) = self.text(self.text_bytes, true);
        m["text"] = Value::String(text);
        if !entities.is_empty() {
            m["entities"] = Value::Array(entities);
        }
        if self.rng.u8(..10) == 0 && id > 1 {
            let replied = self.old_message_id(c);
            let head = self.message_head(c, replied, date - 60);
            m["reply_to_message"] = head;
        }
        m
    }

    fn channel_post(&mut self, c: usize, date: i64) -> Value {
        let mut m = self.text_message(c, date);
        if self.rng.bool() {
            m["author_signature"] = Value::String(pick(&mut self.rng, FIRST_NAMES).to_owned());
        }
        m
    }

    fn photo_message(&mut self, c: usize, date: i64) -> Value {
        let id = self.new_message_id(c);
        let mut m = self.message_head(c, id, date);
        let unique = random_string(&mut self.rng, 12);
        let sizes = [90u32, 320, 800, 1280][..self.rng.usize(3..=4)]
            .iter()
            .map(|&w| {
                json!({
                    "file_id": format!("AgACAgIAAxkBAAI{}{}", random_string(&mut self.rng, 48), w),
                    "file_unique_id": format!("AQAD{unique}{w}"),
                    "file_size": (w as u64) * (w as u64) / 9 + self.rng.u64(..500),
                    "width": w,
                    "height": w * 3 / 4,
                })
            })
            .collect::<Vec<_>>();
        m["photo"] = Value::Array(sizes);
        if self.rng.u8(..4) != 0 {
            let (caption, entities) = self.text(self.text_bytes.min(1024), false);
            m["caption"] = Value::String(caption);
            if !entities.is_empty() {
                m["caption_entities"] = Value::Array(entities);
            }
        }
        m
    }

    fn edited_message(&mut self, c: usize, date: i64) -> Value {
        let id = self.old_message_id(c);
        let mut m = self.message_head(c, id, date - 30);
        let (text, entities) = self.text(self.text_bytes, false);
        m["text"] = Value::String(text);
        if !entities.is_empty() {
            m["entities"] = Value::Array(entities);
        }
        m["edit_date"] = json!(date);
        m
    }

    fn callback_query(&mut self, c: usize, date: i64) -> Value {
        let message_id = self.old_message_id(c);
        let actor = self.actor(c);
        let from = self.people[actor].json.clone();
        let buttons: Vec<Value> = (1..=self.rng.u8(2..=4))
            .map(|i| json!({"text": format!("Option {i}"), "callback_data": format!("opt:{i}")}))
            .collect();
        let message = json!({
            "message_id": message_id,
            "from": self.bot.clone(),
            "chat": self.chats[c].json.clone(),
            "date": date - 120,
            "text": "Choose an option:",
            "reply_markup": {"inline_keyboard": [buttons]},
        });
        json!({"callback_query": {
            "id": self.rng.u64(1_000_000_000_000_000..9_000_000_000_000_000).to_string(),
            "from": from,
            "message": message,
            "chat_instance": self.rng.i64(-9_000_000_000_000_000..9_000_000_000_000_000).to_string(),
            "data": format!("opt:{}", self.rng.u8(1..=4)),
        }})
    }

    fn inline_query(&mut self, c: usize) -> Value {
        let actor = self.actor(c);
        let from = self.people[actor].json.clone();
        let (query, _) = self.text(self.text_bytes.min(64), false);
        json!({"inline_query": {
            "id": self.rng.u64(1_000_000_000_000_000..9_000_000_000_000_000).to_string(),
            "from": from,
            "query": query,
            "offset": "",
            "chat_type": if self.rng.bool() { "private" } else { "sender" },
        }})
    }

    fn my_chat_member(&mut self, c: usize, date: i64) -> Value {
        let actor = self.actor(c);
        let from = self.people[actor].json.clone();
        let bot = self.bot.clone();
        let (old, new) = match self.chats[c].kind {
            ChatKind::Private if self.rng.bool() => (
                json!({"status": "member", "user": bot}),
                json!({"status": "kicked", "user": bot, "until_date": 0}),
            ),
            ChatKind::Private => (
                json!({"status": "kicked", "user": bot, "until_date": 0}),
                json!({"status": "member", "user": bot}),
            ),
            _ => (
                json!({"status": "left", "user": bot}),
                json!({
                    "status": "administrator", "user": bot, "can_be_edited": false,
                    "is_anonymous": false, "can_manage_chat": true, "can_delete_messages": true,
                    "can_manage_video_chats": false, "can_restrict_members": true,
                    "can_promote_members": false, "can_change_info": true, "can_invite_users": true,
                    "can_post_stories": false, "can_edit_stories": false, "can_delete_stories": false,
                    "can_send_welcome_messages": false,
                }),
            ),
        };
        json!({"my_chat_member": {
            "chat": self.chats[c].json.clone(), "from": from, "date": date,
            "old_chat_member": old, "new_chat_member": new,
        }})
    }

    fn chat_member(&mut self, c: usize, date: i64) -> Value {
        let who = self.rng.usize(..self.people.len());
        let who = self.people[who].json.clone();
        let joined = self.rng.u8(..3) != 0;
        let (old, new) = if joined { ("left", "member") } else { ("member", "left") };
        let mut update = json!({
            "chat": self.chats[c].json.clone(), "from": who.clone(), "date": date,
            "old_chat_member": {"status": old, "user": who.clone()},
            "new_chat_member": {"status": new, "user": who},
        });
        if joined && self.rng.u8(..4) == 0 {
            update["invite_link"] = json!({
                "invite_link": format!("https://t.me/+{}", random_string(&mut self.rng, 16)),
                "creator": self.bot.clone(), "creates_join_request": false,
                "is_primary": false, "is_revoked": false,
            });
        }
        json!({"chat_member": update})
    }

    /// A text of about `target` bytes and its entities (offsets in UTF-16 units).
    fn text(&mut self, target: usize, allow_command: bool) -> (String, Vec<Value>) {
        let mut text = String::with_capacity(target + 24);
        let mut entities = Vec::new();
        let mut utf16 = 0usize;
        let push = |text: &mut String, piece: &str, utf16: &mut usize| {
            let offset = *utf16;
            text.push_str(piece);
            let len = piece.encode_utf16().count();
            *utf16 += len;
            (offset, len)
        };
        if allow_command && self.rng.u8(..100) < 15 {
            let cmd = pick(&mut self.rng, COMMANDS);
            let (offset, length) = push(&mut text, cmd, &mut utf16);
            entities.push(json!({"offset": offset, "length": length, "type": "bot_command"}));
        }
        while text.len() < target {
            if !text.is_empty() {
                push(&mut text, " ", &mut utf16);
            }
            let room = entities.len() < MAX_ENTITIES;
            let r = self.rng.u8(..100);
            if !room || r >= 20 {
                let (phrase, units) = &self.phrases[self.rng.usize(..self.phrases.len())];
                text.push_str(phrase);
                utf16 += units;
                continue;
            }
            let (piece, kind) = if r < 8 {
                let n = self.rng.u32(1..100_000);
                (format!("https://example.com/item/{n}"), "url")
            } else if r < 16 {
                (format!("@user_{}", self.rng.u16(..1000)), "mention")
            } else {
                (format!("#{}", pick(&mut self.rng, WORDS)), "hashtag")
            };
            let (offset, length) = push(&mut text, &piece, &mut utf16);
            entities.push(json!({"offset": offset, "length": length, "type": kind}));
        }
        if text.is_empty() {
            text.push_str("hi");
        }
        (text, entities)
    }
}

/// Generates `spec.updates` bodies (at most 10 million) and stores them; returns their id
/// range (empty, `next..=next - 1`, when nothing was generated).
pub(crate) fn generate_into(shared: &Shared, spec: &BacklogSpec) -> RangeInclusive<i64> {
    let mut generator = Generator::new(spec);
    let bodies: Vec<String> = (0..spec.updates.min(MAX_UPDATES))
        .map(|_| generator.next_body())
        .collect();
    let ids = shared.push_bodies(bodies);
    match (ids.first(), ids.last()) {
        (Some(first), Some(last)) => *first..=*last,
        _ => {
            let next = shared.stats().next_update_id;
            next..=next - 1
        }
    }
}

fn make_person(rng: &mut Rng, id: i64) -> Person {
    let first = pick(rng, FIRST_NAMES);
    let mut json = json!({"id": id, "is_bot": false, "first_name": first});
    if rng.bool() {
        json["last_name"] = Value::String(pick(rng, LAST_NAMES).to_owned());
    }
    if rng.u8(..3) != 0 {
        json["username"] = Value::String(format!("user{}", id % 1_000_000));
    }
    if rng.u8(..5) != 0 {
        json["language_code"] = Value::String(pick(rng, LANGS).to_owned());
    }
    if rng.u8(..20) == 0 {
        json["is_premium"] = Value::Bool(true);
    }
    Person { json }
}

fn pick<'a>(rng: &mut Rng, items: &[&'a str]) -> &'a str {
    items[rng.usize(..items.len())]
}

fn random_string(rng: &mut Rng, len: usize) -> String {
    (0..len)
        .map(|_| FILE_CHARS[rng.usize(..FILE_CHARS.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bodies(spec: &BacklogSpec) -> Vec<String> {
        let mut g = Generator::new(spec);
        (0..spec.updates).map(|_| g.next_body()).collect()
    }

    #[test]
    fn same_seed_same_bodies_other_seed_other_bodies() {
        let spec = BacklogSpec::default();
        assert_eq!(bodies(&spec), bodies(&spec));
        let other = BacklogSpec {
            seed: 2,
            ..spec.clone()
        };
        assert_ne!(bodies(&spec), bodies(&other));
    }

    #[test]
    fn entity_offsets_are_utf16_and_inside_the_text() {
        let spec = BacklogSpec {
            updates: 500,
            text_bytes: 300,
            ..BacklogSpec::default()
        };
        for body in bodies(&spec) {
            let v: Value = serde_json::from_str(&body).unwrap();
            let Some(m) = v.get("message").or(v.get("channel_post")) else {
                continue;
            };
            let (Some(text), Some(entities)) = (m["text"].as_str(), m["entities"].as_array()) else {
                continue;
            };
            let units: Vec<u16> = text.encode_utf16().collect();
            for e in entities {
                let (o, l) = (
                    e["offset"].as_u64().unwrap() as usize,
                    e["length"].as_u64().unwrap() as usize,
                );
                let slice = String::from_utf16(&units[o..o + l]).unwrap();
                match e["type"].as_str().unwrap() {
                    "url" => assert!(slice.starts_with("https://"), "{slice}"),
                    "mention" => assert!(slice.starts_with('@'), "{slice}"),
                    "hashtag" => assert!(slice.starts_with('#'), "{slice}"),
                    "bot_command" => assert!(slice.starts_with('/'), "{slice}"),
                    other => panic!("unexpected entity {other}"),
                }
            }
        }
    }

    #[test]
    fn text_mixes_hold_text_messages_in_their_kind_of_chat_only() {
        for (mix, private) in [(Mix::PrivateText, true), (Mix::GroupText, false)] {
            let bodies = bodies(&BacklogSpec {
                updates: 300,
                chats: 20,
                mix,
                ..BacklogSpec::default()
            });
            let mut chats = std::collections::HashSet::new();
            for b in &bodies {
                let v: Value = serde_json::from_str(b).unwrap();
                let m = &v["message"];
                assert!(m["text"].is_string(), "{mix:?}: {b}");
                let id = m["chat"]["id"].as_i64().unwrap();
                assert_eq!(id > 0, private, "{mix:?}: {b}");
                assert_ne!(m["chat"]["type"], "channel", "{b}");
                chats.insert(id);
            }
            assert_eq!(chats.len(), 20, "{mix:?}: every chat is used");
        }
    }

    #[test]
    fn text_size_is_close_to_target() {
        let mut g = Generator::new(&BacklogSpec {
            text_bytes: 1000,
            ..BacklogSpec::default()
        });
        for _ in 0..50 {
            let (t, _) = g.text(1000, true);
            assert!((1000..1100).contains(&t.len()), "{}", t.len());
        }
        let (t, _) = g.text(0, false);
        assert_eq!(t, "hi");
    }
}
