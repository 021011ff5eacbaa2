//! `message::classify` on arbitrary bytes: never panics, fails exactly when serde_json fails
//! (but for what only serde_json's `Value` refuses, see `grammatical`),
//! and what it calls a request or a response is one to serde_json too, with the same id.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_relay_core::message::{classify, ClassifyError, Envelope, Kind, Message};
use serde_json::Value;

/// Checks one envelope against the JSON value it came from.
fn agree(e: &Envelope<'_>, v: &Value) {
    let obj = match (e.kind, v.as_object()) {
        (Kind::Request | Kind::Response, Some(obj)) => obj,
        (Kind::Request | Kind::Response, None) => panic!("{:?} from a non-object {v}", e.kind),
        _ => return,
    };
    let outcome = obj.contains_key("result") || obj.contains_key("error");
    match e.kind {
        Kind::Request => {
            assert!(
                obj.get("method").is_some_and(Value::is_string),
                "request without a method: {v}"
            );
            assert!(!outcome, "request with a result or error: {v}");
            assert!(
                obj.get("id").is_some_and(|i| !i.is_null()),
                "request without an id: {v}"
            );
        }
        _ => {
            assert!(!obj.contains_key("method"), "response with a method: {v}");
            assert!(outcome, "response without a result or error: {v}");
        }
    }
    let id =
        e.id.map(|raw| serde_json::from_str::<Value>(raw.get()).expect("an id is JSON"));
    let want = obj.get("id").filter(|i| !i.is_null());
    assert_eq!(id.as_ref(), want, "id of {v}");
}

/// Errors serde_json's `Value` gives for text that is valid JSON by RFC 8259's grammar: a
/// number too large for an f64, and escapes of lone UTF-16 surrogates (§8.2). `classify`
/// rightly accepts both in the values it skips.
fn grammatical(e: &serde_json::Error) -> bool {
    let e = e.to_string();
    e.starts_with("number out of range")
        || e.contains("surrogate")
        || e.contains("hex escape")
        || e.starts_with("invalid unicode code point")
}

fuzz_target!(|data: &[u8]| {
    let parsed = serde_json::from_slice::<Value>(data);
    match (classify(data), parsed) {
        (Ok(Message::Single(e)), Ok(v)) => agree(&e, &v),
        (Ok(Message::Batch(es)), Ok(Value::Array(vs))) => {
            assert_eq!(es.len(), vs.len());
            for (e, v) in es.iter().zip(&vs) {
                agree(e, v);
            }
        }
        (Ok(Message::Batch(_)), Ok(v)) => panic!("a batch from a non-array {v}"),
        (Ok(_), Err(e)) if std::str::from_utf8(data).is_ok() && grammatical(&e) => {}
        (Ok(m), Err(e)) => panic!("classified {m:?}, but serde_json says {e}"),
        (Err(ClassifyError::NotAMessage), Ok(v)) => {
            assert!(!v.is_object() && !v.is_array(), "not a message: {v}")
        }
        (Err(ClassifyError::NotAMessage), Err(e)) => panic!("not a message, but not JSON: {e}"),
        (Err(ClassifyError::NotJson(_)), Ok(v)) => panic!("not JSON, but serde_json parsed {v}"),
        (Err(ClassifyError::NotJson(_)), Err(_)) => {}
    }
});
