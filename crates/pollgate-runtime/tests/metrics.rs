//! What the runtime exports through the `metrics` facade: the counters agree with the
//! run's own `Stats`, the histograms saw every handler, the backlog comes from the
//! transport, and nothing at all is exported unless asked for. The recorder is a
//! Prometheus one installed for this thread only (the tests run on one thread, paused).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::update;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use pollgate_admission::Fixed;
use pollgate_core::{InMemoryTransport, Update};
use pollgate_runtime::{Runtime, metrics as names};

/// The value of the series `name{labels}` (labels as rendered, `""` for none).
fn value(text: &str, name: &str, labels: &str) -> Option<f64> {
    let series = if labels.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{labels}}}")
    };
    text.lines()
        .find_map(|l| l.strip_prefix(&series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().expect("a number"))
}

fn recorder() -> PrometheusRecorder {
    PrometheusBuilder::new().build_recorder()
}

#[tokio::test(start_paused = true)]
async fn counters_gauges_and_histograms_follow_the_run() {
    let recorder = recorder();
    let handle = recorder.handle();
    let _local = metrics::set_default_local_recorder(&recorder);

    let updates: Vec<Update> = (1..=40).map(|id| update(id, id % 4)).collect();
    let transport = Arc::new(InMemoryTransport::with_updates(updates));
    let runtime = Runtime::builder(Arc::clone(&transport), |u: Update| async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if u.id() % 10 == 0 {
            return Err(std::io::Error::other("every tenth fails"));
        }
        Ok(())
    })
    .policy(Fixed::new(8))
    .export_metrics(Duration::from_millis(50))
    .backlog_interval(Duration::from_millis(50))
    .build();
    let shutdown = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());

    // Mid-run: 8 handlers hold their slots, the rest of the backlog waits on the server.
    tokio::time::sleep(Duration::from_millis(160)).await;
    let mid = handle.render();
    assert_eq!(value(&mid, names::IN_FLIGHT, ""), Some(8.0), "{mid}");
    assert_eq!(value(&mid, names::LIMIT_SLOTS, ""), Some(8.0), "{mid}");
    let backlog = value(&mid, names::BACKLOG_UPDATES, "").expect("the transport tells its backlog");
    assert!(backlog > 0.0 && backlog < 40.0, "{mid}");
    assert_eq!(
        value(&mid, names::LIMIT_BYTES, ""),
        None,
        "Fixed sets no byte limit: no series"
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    shutdown.cancel();
    let summary = run.await.unwrap().unwrap();
    let end = handle.render();
    let s = &summary.stats;
    assert_eq!((s.completed, s.failed), (36, 4));
    assert_eq!(value(&end, names::HANDLED, ""), Some(36.0), "{end}");
    assert_eq!(
        value(&end, names::HANDLER_FAILURES, "kind=\"error\""),
        Some(4.0),
        "{end}"
    );
    assert_eq!(
        value(&end, names::HANDLER_FAILURES, "kind=\"panic\""),
        Some(0.0),
        "{end}"
    );
    assert_eq!(value(&end, names::FETCHED, ""), Some(40.0), "{end}");
    assert_eq!(value(&end, names::FETCHES, ""), Some(s.fetches as f64), "{end}");
    assert_eq!(
        value(&end, names::IN_FLIGHT, ""),
        Some(0.0),
        "the last export is after the drain"
    );
    assert_eq!(value(&end, names::BACKLOG_UPDATES, ""), Some(0.0), "{end}");
    // Every handler run was timed (paused time: exactly 100 ms each), and every
    // admission too.
    let count = format!("{}_count", names::HANDLER_DURATION_SECONDS);
    let sum = format!("{}_sum", names::HANDLER_DURATION_SECONDS);
    assert_eq!(value(&end, &count, ""), Some(40.0), "{end}");
    let total = value(&end, &sum, "").unwrap();
    assert!((total - 4.0).abs() < 1e-6, "40 runs of 100 ms: {total}");
    let waits = format!("{}_count", names::ADMISSION_WAIT_SECONDS);
    assert_eq!(value(&end, &waits, ""), Some(40.0), "{end}");
}

#[tokio::test(start_paused = true)]
async fn nothing_is_exported_unless_asked() {
    let recorder = recorder();
    let handle = recorder.handle();
    let _local = metrics::set_default_local_recorder(&recorder);

    let transport = Arc::new(InMemoryTransport::with_updates((1..=5).map(|id| update(id, 1))));
    let runtime = Runtime::builder(Arc::clone(&transport), |_u: Update| async {
        Ok::<(), std::io::Error>(())
    })
    .policy(Fixed::new(2))
    .build();
    let shutdown = runtime.shutdown_token();
    let run = tokio::spawn(runtime.run());
    tokio::time::sleep(Duration::from_secs(1)).await;
    shutdown.cancel();
    let summary = run.await.unwrap().unwrap();
    assert_eq!(summary.stats.completed, 5);
    let text = handle.render();
    assert!(!text.contains("pollgate_"), "exported without export_metrics: {text}");
}
