//! Shared pieces of the webhook tests: update bodies, waiting on a state, and a log
//! capture.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different subset

use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tracing::field::{Field, Visit};
use tracing::span;
use tracing::{Event, Metadata, Subscriber};

/// A message update of `chat`, as Telegram posts it.
pub fn update(id: i64, chat: i64) -> String {
    format!(
        r#"{{"update_id":{id},"message":{{"message_id":{id},"date":0,"chat":{{"id":{chat},"type":"private"}},"text":"hi"}}}}"#
    )
}

/// Waits (yielding, bounded) until `cond` holds; the bound only turns a hang into a failure.
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..5000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// A subscriber that keeps every event and span field as one text line: events as
/// `LEVEL target field=value ...`, spans as `span name field=value ...`, later span
/// values as `record field=value ...`. Install it with `tracing::subscriber::set_default`.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<String>>>);

impl Capture {
    /// Every line captured so far.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().clone()
    }
}

struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attrs: &span::Attributes<'_>) -> span::Id {
        let mut line = Line(format!("span {} ", attrs.metadata().name()));
        attrs.record(&mut line);
        self.0.lock().push(line.0);
        span::Id::from_u64(1)
    }
    fn record(&self, _: &span::Id, values: &span::Record<'_>) {
        let mut line = Line("record ".into());
        values.record(&mut line);
        self.0.lock().push(line.0);
    }
    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut line = Line(format!("{} {} ", event.metadata().level(), event.metadata().target()));
        event.record(&mut line);
        self.0.lock().push(line.0);
    }
    fn enter(&self, _: &span::Id) {}
    fn exit(&self, _: &span::Id) {}
}
