//! Decode and key extraction on real `Update` objects of every kind.
//!
//! The fixtures (copied from the project's shared set; sources in their README files) come
//! with `expected.json`: the id, kind and ordering key worked out by hand for each file.

use std::collections::BTreeMap;
use std::path::Path;

use pollgate_core::{GetUpdatesResponse, Update};
use serde::Deserialize;

#[derive(Deserialize)]
struct Expected {
    update_id: i64,
    kind: String,
    key: Option<i64>,
}

fn load(set: &str) -> Vec<(String, String, Expected)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(set);
    let expected: BTreeMap<String, Expected> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    assert!(expected.len() >= 20, "{set}: only {} fixtures", expected.len());
    expected
        .into_iter()
        .map(|(file, exp)| {
            let text = std::fs::read_to_string(dir.join(&file)).unwrap();
            (file, text, exp)
        })
        .collect()
}

fn check_set(set: &str) {
    for (file, text, exp) in load(set) {
        let u = Update::from_json(&text).unwrap_or_else(|e| panic!("{set}/{file}: {e}"));
        assert_eq!(u.id(), exp.update_id, "{set}/{file}: id");
        assert_eq!(u.kind().as_str(), exp.kind, "{set}/{file}: kind");
        assert_eq!(u.ordering_key(), exp.key, "{set}/{file}: key");
        assert_eq!(u.size(), text.len(), "{set}/{file}: size");
        // Typed access on demand sees the same object.
        let v = u.value().unwrap();
        assert_eq!(v["update_id"].as_i64(), Some(exp.update_id), "{set}/{file}");
    }
}

#[test]
fn public_set_decodes_with_the_expected_id_kind_and_key() {
    check_set("telegram-updates");
}

#[test]
fn second_set_decodes_with_the_expected_id_kind_and_key() {
    check_set("telegram-updates-more");
}

#[test]
fn a_response_of_every_fixture_decodes_in_one_pass_and_keeps_exact_texts() {
    let mut all: Vec<(String, Expected)> = load("telegram-updates")
        .into_iter()
        .chain(load("telegram-updates-more"))
        .map(|(_, text, exp)| (text, exp))
        .collect();
    all.sort_by_key(|(_, e)| e.update_id);
    let texts: Vec<&str> = all.iter().map(|(t, _)| t.trim()).collect();
    let body = format!("{{\"ok\":true,\"result\":[{}]}}", texts.join(",\n"));
    let GetUpdatesResponse::Updates(batch) = GetUpdatesResponse::decode(&body, None).unwrap() else {
        panic!("not an update list");
    };
    assert!(batch.failures.is_empty(), "{:?}", batch.failures);
    assert_eq!(batch.updates.len(), all.len());
    for (u, (text, exp)) in batch.updates.iter().zip(&all) {
        assert_eq!(u.raw(), text.trim());
        assert_eq!((u.id(), u.ordering_key()), (exp.update_id, exp.key));
    }
}
