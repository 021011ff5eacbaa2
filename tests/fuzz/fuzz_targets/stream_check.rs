//! `stream_check::StreamCheck` against `message::classify`: the input after its first byte is
//! fed in pieces whose sizes the first byte chooses, and the checker must agree with
//! `classify` on the whole: valid or not, a message or not, and for an object its kind, id,
//! method and params (as far as the checker keeps them); for a batch its length.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_relay_core::message::{classify, ClassifyError, Message};
use mcp_relay_core::stream_check::{StreamCheck, MAX_ID, MAX_METHOD, MAX_PARAMS};

fuzz_target!(|data: &[u8]| {
    let Some((&seed, line)) = data.split_first() else {
        return;
    };
    // Piece sizes: 1 to `most` bytes, from a small LCG seeded by the first byte; 0: whole.
    let most = usize::from(seed >> 4) * 3;
    let mut state = u32::from(seed) | 1;
    let mut check = StreamCheck::new();
    let mut rest = line;
    while !rest.is_empty() {
        let n = if most == 0 {
            rest.len()
        } else {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            1 + (state >> 16) as usize % most
        };
        let (piece, tail) = rest.split_at(n.min(rest.len()));
        check.feed(piece);
        rest = tail;
    }
    let early = check.error().map(str::to_owned);
    let got = check.finish();
    if let Some(e) = &early {
        assert!(matches!(&got, Err(ClassifyError::NotJson(g)) if g == e), "{e} then {got:?}");
    }
    match (classify(line), got) {
        (Ok(Message::Single(e)), Ok(s)) => {
            assert_eq!(s.kind, e.kind);
            assert_eq!(s.batch, None);
            let id = e.id.map(|i| i.get());
            assert_eq!(s.id.as_ref().map(|i| i.as_str()), id.filter(|i| i.len() <= MAX_ID));
            assert_eq!(s.long_id, id.is_some_and(|i| i.len() > MAX_ID));
            let method = e.method.as_deref();
            assert_eq!(s.method.as_deref(), method.filter(|m| m.len() <= MAX_METHOD));
            assert_eq!(s.long_method, method.is_some_and(|m| m.len() > MAX_METHOD));
            let params = e.params.map(|p| p.get().as_bytes());
            assert_eq!(s.params_len, params.map_or(0, <[u8]>::len));
            assert_eq!(s.params.as_deref(), params.filter(|p| p.len() <= MAX_PARAMS));
        }
        (Ok(Message::Batch(es)), Ok(s)) => assert_eq!(s.batch, Some(es.len())),
        (Err(ClassifyError::NotAMessage), Err(ClassifyError::NotAMessage)) => {}
        (Err(ClassifyError::NotJson(_)), Err(ClassifyError::NotJson(_))) => {}
        (want, got) => panic!("classify says {want:?}, the checker {got:?}"),
    }
});
