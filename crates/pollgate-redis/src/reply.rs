//! Parsing of stream replies from raw [`redis::Value`]s.
//!
//! The client's typed stream replies assume every entry has fields; a pending entry that
//! was deleted from the stream (trimmed by `MAXLEN`, removed by `XDEL`) comes back as an
//! id with a nil body, and must be acknowledged, not mistaken for a malformed reply.
//! Parsing by hand keeps that case, and every other shape, explicit.

use pollgate_core::Update;
use redis::Value;

use crate::error::RedisTransportError;

/// One stream entry as delivered: its id and its fields, or `None` when the entry is still
/// pending but no longer in the stream.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub(crate) id: String,
    pub(crate) fields: Option<Vec<(String, Vec<u8>)>>,
}

impl Entry {
    /// The value of `field`, if present.
    pub(crate) fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .as_ref()?
            .iter()
            .find(|(f, _)| f == name)
            .map(|(_, v)| v.as_slice())
    }
}

fn bad(command: &'static str, detail: impl Into<String>) -> RedisTransportError {
    RedisTransportError::Protocol {
        command,
        detail: detail.into(),
    }
}

fn string(command: &'static str, v: Value) -> Result<String, RedisTransportError> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).map_err(|_| bad(command, "an id is not UTF-8")),
        Value::SimpleString(s) => Ok(s),
        Value::VerbatimString { text, .. } => Ok(text),
        other => Err(bad(command, format!("expected a string, got {other:?}"))),
    }
}

fn bytes(v: Value) -> Vec<u8> {
    match v {
        Value::BulkString(b) => b,
        Value::SimpleString(s) => s.into_bytes(),
        Value::VerbatimString { text, .. } => text.into_bytes(),
        Value::Int(i) => i.to_string().into_bytes(),
        other => format!("{other:?}").into_bytes(),
    }
}

fn array(command: &'static str, v: Value) -> Result<Vec<Value>, RedisTransportError> {
    match v {
        Value::Array(items) | Value::Set(items) => Ok(items),
        other => Err(bad(command, format!("expected an array, got {other:?}"))),
    }
}

/// One entry: `[id, [field, value, ...]]` or `[id, nil]`.
fn entry(command: &'static str, v: Value) -> Result<Entry, RedisTransportError> {
    let mut parts = array(command, v)?.into_iter();
    let id = string(
        command,
        parts.next().ok_or_else(|| bad(command, "an entry without an id"))?,
    )?;
    let fields = match parts.next() {
        None | Some(Value::Nil) => None,
        Some(Value::Map(pairs)) => Some(
            pairs
                .into_iter()
                .map(|(f, v)| Ok((string(command, f)?, bytes(v))))
                .collect::<Result<_, RedisTransportError>>()?,
        ),
        Some(list) => {
            let flat = array(command, list)?;
            if flat.len() % 2 != 0 {
                return Err(bad(command, "an odd number of field/value items"));
            }
            let mut out = Vec::with_capacity(flat.len() / 2);
            let mut it = flat.into_iter();
            while let (Some(f), Some(v)) = (it.next(), it.next()) {
                out.push((string(command, f)?, bytes(v)));
            }
            Some(out)
        }
    };
    Ok(Entry { id, fields })
}

/// A list of entries (`XRANGE`, `XCLAIM`, the entries of one stream in `XREADGROUP`).
/// Nil items (Redis 6 `XAUTOCLAIM` for deleted entries) are skipped.
pub(crate) fn entries(command: &'static str, v: Value) -> Result<Vec<Entry>, RedisTransportError> {
    array(command, v)?
        .into_iter()
        .filter(|v| !matches!(v, Value::Nil))
        .map(|v| entry(command, v))
        .collect()
}

/// An `XREADGROUP` reply for one stream: nil on timeout, else `[[key, entries]]` (RESP2)
/// or `{key: entries}` (RESP3).
pub(crate) fn read_group(v: Value) -> Result<Vec<Entry>, RedisTransportError> {
    Ok(read_groups(v)?.into_iter().flat_map(|(_, entries)| entries).collect())
}

/// An `XREADGROUP` reply for several streams: each stream's key with its entries.
pub(crate) fn read_groups(v: Value) -> Result<Vec<(String, Vec<Entry>)>, RedisTransportError> {
    const C: &str = "XREADGROUP";
    let streams: Vec<(Value, Value)> = match v {
        Value::Nil => return Ok(Vec::new()),
        Value::Map(pairs) => pairs,
        other => array(C, other)?
            .into_iter()
            .map(|kv| {
                let mut kv = array(C, kv)?.into_iter();
                match (kv.next(), kv.next()) {
                    (Some(k), Some(e)) => Ok((k, e)),
                    _ => Err(bad(C, "a stream without entries")),
                }
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    streams
        .into_iter()
        .map(|(k, e)| Ok((string(C, k)?, entries(C, e)?)))
        .collect()
}

/// An `XAUTOCLAIM` reply: the next cursor, the claimed entries, and the ids that were
/// pending but deleted from the stream (Redis ≥ 7).
pub(crate) fn auto_claim(v: Value) -> Result<(String, Vec<Entry>, Vec<String>), RedisTransportError> {
    const C: &str = "XAUTOCLAIM";
    let mut parts = array(C, v)?.into_iter();
    let cursor = string(C, parts.next().ok_or_else(|| bad(C, "no cursor"))?)?;
    let claimed = entries(C, parts.next().ok_or_else(|| bad(C, "no entries"))?)?;
    let deleted = match parts.next() {
        Some(list) => array(C, list)?
            .into_iter()
            .map(|v| string(C, v))
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    Ok((cursor, claimed, deleted))
}

/// The `lag` of `group` in an `XINFO GROUPS` reply: entries of the stream not yet
/// delivered to the group. `None` when the group is not listed or Redis cannot tell
/// (`lag` is nil after some deletions, and absent before Redis 7).
pub(crate) fn group_lag(v: Value, group: &str) -> Option<u64> {
    let groups = array("XINFO GROUPS", v).ok()?;
    groups.into_iter().find_map(|g| {
        // RESP2: a flat `[key, value, ...]` array; RESP3: a map.
        let pairs: Vec<(Value, Value)> = match g {
            Value::Map(pairs) => pairs,
            Value::Array(flat) => {
                let mut it = flat.into_iter();
                std::iter::from_fn(|| Some((it.next()?, it.next()?))).collect()
            }
            _ => return None,
        };
        let field = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| bytes(k.clone()) == name.as_bytes())
                .map(|(_, v)| v.clone())
        };
        if field("name").map(bytes)? != group.as_bytes() {
            return None;
        }
        match field("lag")? {
            Value::Int(n) => Some(n.max(0) as u64),
            _ => None,
        }
    })
}

/// The extended `XPENDING` reply: `[[id, consumer, idle_ms, deliveries], ...]`, as
/// `(id, deliveries)`.
pub(crate) fn pending(v: Value) -> Result<Vec<(String, u64)>, RedisTransportError> {
    const C: &str = "XPENDING";
    array(C, v)?
        .into_iter()
        .map(|row| {
            let row = array(C, row)?;
            let mut it = row.into_iter();
            let id = string(C, it.next().ok_or_else(|| bad(C, "a row without an id"))?)?;
            let deliveries = match it.nth(2) {
                Some(Value::Int(n)) => n.max(0) as u64,
                other => return Err(bad(C, format!("a delivery count that is not an integer: {other:?}"))),
            };
            Ok((id, deliveries))
        })
        .collect()
}

/// Why a stream entry is not an update; its chain is the reason the dead-letter stream
/// records.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EntryError {
    #[error("the entry has no `{0}` field")]
    Missing(String),
    #[error("the `{0}` field is not UTF-8")]
    NotUtf8(String),
    #[error("not a Telegram update")]
    NotAnUpdate(#[source] pollgate_core::EnvelopeError),
}

impl EntryError {
    /// The reason as the dead-letter stream records it: the message and its causes.
    pub(crate) fn reason(&self) -> String {
        pollgate_core::ErrorChain(self).to_string()
    }
}

/// The stream's JSON field of an entry as an update, or why it is not one.
pub(crate) fn decode(entry: &Entry, field: &str) -> Result<Update, EntryError> {
    match entry.field(field) {
        None => Err(EntryError::Missing(field.to_owned())),
        Some(raw) => std::str::from_utf8(raw)
            .map_err(|_| EntryError::NotUtf8(field.to_owned()))
            .and_then(|json| Update::from_json(json).map_err(EntryError::NotAnUpdate)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn read_group_parses_entries_and_deleted_ones() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("s"),
            Value::Array(vec![
                Value::Array(vec![bulk("1-0"), Value::Array(vec![bulk("update"), bulk("{}")])]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
            ]),
        ])]);
        let got = read_group(reply).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].field("update"), Some(&b"{}"[..]));
        assert_eq!(got[1].fields, None);
        assert!(read_group(Value::Nil).unwrap().is_empty());
    }

    #[test]
    fn group_lag_reads_resp2_and_resp3_and_unknown_lag_is_none() {
        let s = |x: &str| Value::BulkString(x.as_bytes().to_vec());
        let flat =
            |name: &str, lag: Value| Value::Array(vec![s("name"), s(name), s("pending"), Value::Int(2), s("lag"), lag]);
        let reply = Value::Array(vec![flat("others", Value::Int(9)), flat("workers", Value::Int(4))]);
        assert_eq!(group_lag(reply, "workers"), Some(4));
        let map = Value::Array(vec![Value::Map(vec![
            (s("name"), s("workers")),
            (s("lag"), Value::Int(7)),
        ])]);
        assert_eq!(group_lag(map, "workers"), Some(7));
        assert_eq!(
            group_lag(Value::Array(vec![flat("workers", Value::Nil)]), "workers"),
            None,
            "lag unknown"
        );
        assert_eq!(
            group_lag(Value::Array(vec![flat("others", Value::Int(1))]), "workers"),
            None
        );
        assert_eq!(group_lag(Value::Nil, "workers"), None);
    }

    #[test]
    fn malformed_replies_are_protocol_errors_not_panics() {
        for v in [
            Value::Int(3),
            Value::Array(vec![Value::Int(1)]),
            Value::Array(vec![Value::Array(vec![bulk("s")])]),
            Value::Array(vec![Value::Array(vec![
                bulk("s"),
                Value::Array(vec![Value::Array(vec![bulk("1-0"), Value::Array(vec![bulk("odd")])])]),
            ])]),
        ] {
            assert!(matches!(read_group(v), Err(RedisTransportError::Protocol { .. })));
        }
        assert!(auto_claim(Value::Array(vec![])).is_err());
        assert!(pending(Value::Array(vec![Value::Array(vec![bulk("1-0"), bulk("c")])])).is_err());
    }

    #[test]
    fn auto_claim_and_pending_shapes() {
        let reply = Value::Array(vec![
            bulk("0-0"),
            Value::Array(vec![Value::Array(vec![
                bulk("5-0"),
                Value::Array(vec![bulk("update"), bulk("x")]),
            ])]),
            Value::Array(vec![bulk("4-0")]),
        ]);
        let (cursor, claimed, deleted) = auto_claim(reply).unwrap();
        assert_eq!(cursor, "0-0");
        assert_eq!(claimed[0].id, "5-0");
        assert_eq!(deleted, vec!["4-0".to_string()]);
        let rows = Value::Array(vec![Value::Array(vec![
            bulk("5-0"),
            bulk("c"),
            Value::Int(10),
            Value::Int(3),
        ])]);
        assert_eq!(pending(rows).unwrap(), vec![("5-0".to_string(), 3)]);
    }
}
