//! Inputs found by the fuzz targets (`fuzz/`), kept as regression tests of the normal
//! suite. Each file in `tests/fuzz-regressions/` is named after its target.
//!
//! Both finds were numbers beyond the range of `f64` (`169e863506`): valid JSON, which
//! the envelope accepts without converting, but which `serde_json::Value` refuses. The
//! envelope's id and key must still be right, and `Update::value()` reports a typed error.

use pollgate_core::{GetUpdatesResponse, Update};

fn input(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-regressions")
        .join(name);
    String::from_utf8(std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn update_with_a_number_beyond_f64_keeps_its_id_and_key_and_value_is_a_typed_error() {
    let text = input("update_envelope-number-beyond-f64.json");
    let u = Update::from_json(&text).unwrap();
    assert_eq!(
        (u.id(), u.kind().as_str(), u.ordering_key()),
        (517935623, "channel_post", Some(-1))
    );
    let err = u.value().unwrap_err();
    assert!(err.to_string().contains("out of range"), "{err}");
}

#[test]
fn response_with_a_number_beyond_f64_decodes_every_update_or_reports_it() {
    let text = input("get_updates_response-number-beyond-f64.json");
    let Ok(GetUpdatesResponse::Updates(batch)) = GetUpdatesResponse::decode(text.as_str(), None) else {
        panic!("the response is valid JSON with a result array");
    };
    assert!(!batch.is_empty());
    for u in &batch.updates {
        assert!(text.contains(u.raw()));
        if let Ok(v) = u.value() {
            assert_eq!(v["update_id"].as_i64(), Some(u.id()));
        }
    }
}

#[test]
fn an_array_where_an_object_belongs_is_an_error_not_a_key() {
    let text = input("update_envelope-array-instead-of-object.json");
    // `"chat":[33]`: serde's derived structs would read the array as `{"id":33}`.
    let err = Update::from_json(&text).unwrap_err();
    assert_eq!(
        err.update_id(),
        Some(7),
        "the id is still reported, so the update is skipped past"
    );
    for body in [
        r#"{"update_id":1,"message":[{"id":5}]}"#,
        r#"{"update_id":1,"callback_query":{"message":[[5]]}}"#,
    ] {
        assert!(Update::from_json(body).is_err(), "{body}");
    }
}
