//! Decoding a 100-update `getUpdates` response: pollgate's envelope (borrowed raw values,
//! one probe pass per update) against `serde_json::Value`, in the same run.
//!
//! The body is made of the real update fixtures (every kind, 230 B to 1.5 KB each),
//! repeated with increasing ids up to 100 updates.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pollgate_core::GetUpdatesResponse;

fn body() -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut texts = Vec::new();
    for set in ["telegram-updates", "telegram-updates-more"] {
        let mut files: Vec<_> = std::fs::read_dir(dir.join(set))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json") && !p.ends_with("expected.json"))
            .collect();
        files.sort();
        for f in files {
            let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
            v.as_object_mut().unwrap().remove("update_id");
            texts.push(v);
        }
    }
    let updates: Vec<String> = (0..100)
        .map(|i| {
            let mut v = texts[i % texts.len()].clone();
            v["update_id"] = (900_000_000 + i as i64).into();
            serde_json::to_string(&v).unwrap()
        })
        .collect();
    format!("{{\"ok\":true,\"result\":[{}]}}", updates.join(","))
}

fn decode(c: &mut Criterion) {
    let body = body();
    let mut group = c.benchmark_group("decode_100_updates");
    group.throughput(Throughput::Elements(100));
    group.bench_function("pollgate_envelope", |b| {
        b.iter(|| {
            let r = GetUpdatesResponse::decode(black_box(body.as_str()), None).unwrap();
            black_box(r)
        })
    });
    group.bench_function("serde_json_value", |b| {
        b.iter(|| {
            let v: serde_json::Value = serde_json::from_str(black_box(&body)).unwrap();
            black_box(v)
        })
    });
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
