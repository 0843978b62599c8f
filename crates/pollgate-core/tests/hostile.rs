//! Broken or hostile responses: the decoder must answer with a typed error or a reported
//! undecodable update, never a crash, a hang or unbounded work.

use pollgate_core::{GetUpdatesResponse, Update};

fn decode(body: String) -> Result<GetUpdatesResponse, serde_json::Error> {
    GetUpdatesResponse::decode(&body, Some(1))
}

#[test]
fn a_deeply_nested_response_is_an_error_not_a_stack_overflow() {
    let depth = 200_000;
    let body = format!(
        "{{\"ok\":true,\"result\":[{}{}]}}",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    // The envelope skips the element without recursing; the element is then reported as
    // an undecodable update (not an object), with an inferred id, and acknowledged past.
    let Ok(GetUpdatesResponse::Updates(batch)) = decode(body) else {
        panic!("expected a batch with one undecodable update");
    };
    assert!(batch.updates.is_empty());
    assert_eq!(batch.failures.len(), 1);
    assert!(batch.failures[0].id_inferred);
    assert!(batch.failures[0].raw.len() < 1024, "the kept excerpt is truncated");
}

#[test]
fn a_deeply_nested_field_inside_an_update_is_skipped_without_recursion() {
    let depth = 100_000;
    let nested = format!(
        "{{\"update_id\":2,\"message\":{{\"chat\":{{\"id\":1}},\"x\":{}{}}}}}",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let body = format!(
        "{{\"ok\":true,\"result\":[{{\"update_id\":1,\"poll\":{{}}}},{nested},{{\"update_id\":3,\"poll\":{{}}}}]}}"
    );
    // Both passes skip what they do not need without recursing, so a deep subtree inside
    // a field the key does not depend on costs a scan, not a stack.
    let Ok(GetUpdatesResponse::Updates(batch)) = decode(body) else {
        panic!("expected a batch");
    };
    assert_eq!(batch.updates.iter().map(Update::id).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(batch.updates[1].ordering_key(), Some(1));
    assert!(batch.failures.is_empty());
}

#[test]
fn a_huge_text_field_decodes_without_copies_per_field() {
    let text = "x".repeat(4 << 20);
    let body = format!(
        "{{\"ok\":true,\"result\":[{{\"update_id\":9,\"message\":{{\"chat\":{{\"id\":-5}},\"text\":\"{text}\"}}}}]}}"
    );
    let Ok(GetUpdatesResponse::Updates(batch)) = decode(body) else {
        panic!("a large but valid update must decode");
    };
    let u = &batch.updates[0];
    assert_eq!((u.id(), u.ordering_key()), (9, Some(-5)));
    assert!(u.size() > 4 << 20);
}

#[test]
fn wrong_types_and_garbage_are_typed_errors() {
    for body in [
        "{\"ok\":true,\"result\":null}",
        "{\"ok\":\"yes\",\"result\":[]}",
        "\u{feff}{\"ok\":true,\"result\":[]}",
        "{\"ok\":true,\"result\":[]} {\"ok\":true}",
    ] {
        assert!(decode(body.to_owned()).is_err(), "{body}");
    }
    let Ok(GetUpdatesResponse::Updates(batch)) = decode("{\"ok\":true,\"result\":[1e999999]}".to_owned()) else {
        panic!("an out-of-range number element is one undecodable update");
    };
    assert_eq!(batch.failures.len(), 1);
    for update in [
        "{\"update_id\":1.5}",
        "{\"update_id\":\"1\"}",
        "{\"update_id\":99999999999999999999}",
        "{}",
        "null",
        "\"x\"",
    ] {
        assert!(Update::from_json(update).is_err(), "{update}");
    }
}

#[test]
fn duplicate_and_odd_fields_do_not_confuse_the_envelope() {
    let u = Update::from_json(r#"{"update_id":5,"message":{"chat":{"id":7},"chat":{"id":8}}}"#);
    // serde rejects a duplicate field in a struct: a typed error that keeps the id.
    if let Err(e) = &u {
        assert_eq!(e.update_id(), Some(5));
    }
    assert!(Update::from_json(r#"{"update_id":5,"update_id":6}"#).is_err());
    let u =
        Update::from_json(r#"{"update_id":5,"message":{"chat":{"id":7}},"edited_message":{"chat":{"id":9}}}"#).unwrap();
    assert_eq!(u.ordering_key(), Some(7), "the first kind wins");
}
