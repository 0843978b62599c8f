//! Edges found in review: the spool forwards the new `Transport::retries` and
//! `Transport::backlog` to its source (the filler is what talks to the server).

mod common;

use std::convert::Infallible;
use std::time::Duration;

use pollgate_core::{Ack, AckModel, Batch, FetchRequest, Transport};
use pollgate_spool::SpoolTransport;

/// A source with nothing to deliver, which reports retries and a backlog.
struct Source;

impl Transport for Source {
    type Error = Infallible;
    fn ack_model(&self) -> AckModel {
        AckModel::Cumulative { window: 100 }
    }
    async fn fetch(&self, request: FetchRequest) -> Result<Batch, Infallible> {
        tokio::time::sleep(request.timeout.max(Duration::from_millis(10))).await;
        Ok(Batch::default())
    }
    async fn ack(&self, _: Ack<'_>) -> Result<(), Infallible> {
        Ok(())
    }
    async fn flush(&self) -> Result<(), Infallible> {
        Ok(())
    }
    fn retries(&self) -> Vec<(&'static str, u64)> {
        vec![("network", 7), ("rate_limited", 2)]
    }
    async fn backlog(&self) -> Option<u64> {
        Some(42)
    }
}

/// What the spool reports is its source's: the retries by kind, and the backlog.
#[tokio::test(start_paused = true)]
async fn the_spool_forwards_retries_and_backlog_to_its_source() {
    let dir = common::temp_dir("forwarding");
    let spool = SpoolTransport::builder(&dir).open(Source).unwrap();
    assert_eq!(spool.retries(), vec![("network", 7), ("rate_limited", 2)]);
    let backlog = tokio::time::timeout(Duration::from_secs(5), spool.backlog())
        .await
        .expect("answers");
    assert_eq!(backlog, Some(42));
    // Closing waits for the spool's transaction thread (a std thread): on paused time the
    // clock would jump past any bound while it works, so the bound is on the real clock.
    tokio::time::resume();
    tokio::time::timeout(Duration::from_secs(60), spool.close())
        .await
        .expect("closes");
    let _ = std::fs::remove_dir_all(&dir);
}
