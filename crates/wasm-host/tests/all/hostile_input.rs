//! Hostile contexts against the real module: too large, too deep, not MessagePack.

use flagforge_protocol::{
    decode, limits, value::encode_context, Context, ErrorCode, Reason, Resolution, Value,
};
use wasm_host::{CallError, Host, Limits, LoadedModule};

use crate::guests;

fn checkout() -> LoadedModule {
    Host::new(Limits::default())
        .unwrap()
        .load(&guests::checkout())
        .unwrap()
}

fn fr() -> Context {
    let mut ctx = Context::new();
    ctx.insert("market".into(), Value::from("IT"));
    ctx
}

#[test]
fn a_ten_megabyte_context_is_refused_with_on_error_and_the_next_call_works() {
    let m = checkout();
    // 10 MB in an attribute the flag reads (`market`): refused before the module sees it.
    let mut ctx = Context::new();
    ctx.insert("market".into(), Value::String("x".repeat(10 * 1024 * 1024)));
    let r = m.evaluate("FraudEngineRoutingMode", &ctx, false);
    assert_eq!(r.reason, Reason::Error);
    assert_eq!(r.error_code, Some(ErrorCode::InvalidContext));
    assert_eq!(
        r.variant.as_deref(),
        Some("engine_v2"),
        "on_error of the kill switch"
    );
    assert!(r
        .error_message
        .unwrap()
        .contains(&format!("the limit is {} bytes", limits::MAX_CONTEXT_BYTES)));
    let ok = m.evaluate("FraudEngineRoutingMode", &fr(), false);
    assert_eq!(
        (ok.reason, ok.variant.as_deref()),
        (Reason::TargetingMatch, Some("engine_v2"))
    );
    // 10 MB in an attribute nothing reads is never encoded or sent: the answer is normal.
    let mut unread = fr();
    unread.insert("blob".into(), Value::String("x".repeat(10 * 1024 * 1024)));
    assert_eq!(m.evaluate("FraudEngineRoutingMode", &unread, false), ok);
}

#[test]
fn a_ten_megabyte_context_sent_raw_within_a_raised_limit_is_still_answered() {
    let limits = Limits {
        max_context_bytes: 16 * 1024 * 1024,
        memory_bytes: 128 * 1024 * 1024,
        fuel_per_call: 2_000_000_000,
        ..Limits::default()
    };
    let m = Host::new(limits)
        .unwrap()
        .load(&guests::checkout())
        .unwrap();
    let mut ctx = fr();
    ctx.insert("blob".into(), Value::String("x".repeat(10 * 1024 * 1024)));
    let r = m.evaluate("FraudEngineRoutingMode", &ctx, false);
    assert_eq!(
        (r.reason, r.variant.as_deref()),
        (Reason::TargetingMatch, Some("engine_v2")),
        "{r:?}"
    );
}

#[test]
fn an_oversized_attribute_fails_only_the_flags_that_read_it_in_a_bulk_evaluation() {
    let m = checkout();
    let mut ctx = fr();
    ctx.insert("email".into(), Value::String("x".repeat(2 * 1024 * 1024)));
    let all = m.evaluate_all(&ctx, false);
    assert_eq!(all.len(), m.manifest().flags.len());
    for r in &all {
        // Each flag answers as it does alone: an error only where its answer reads `email`.
        assert_eq!(*r, m.evaluate(&r.key, &ctx, false), "{}", r.key);
    }
    assert!(all.iter().any(|r| r.reason != Reason::Error));
    assert!(all.iter().any(|r| r.reason == Reason::Error));
}

#[test]
fn a_context_nested_ten_thousand_deep_is_a_parse_error_not_a_crash() {
    let m = checkout();
    // {"market": [[[[...10,000 deep...]]]]} as raw MessagePack.
    let mut bytes = vec![0x81, 0xa6];
    bytes.extend_from_slice(b"market");
    bytes.extend(std::iter::repeat_n(0x91u8, 10_000));
    bytes.push(0xc0);
    let out = m
        .evaluate_raw(b"FraudEngineRoutingMode", &bytes, 0)
        .unwrap();
    let r: Resolution = decode(&out).unwrap();
    assert_eq!(r.error_code, Some(ErrorCode::ParseError));
    assert!(r.error_message.unwrap().contains("nested deeper"));
    assert_eq!(r.variant.as_deref(), Some("engine_v2"));
    let ok = m.evaluate("FraudEngineRoutingMode", &fr(), false);
    assert_eq!(ok.reason, Reason::TargetingMatch);
}

#[test]
fn garbage_context_bytes_are_a_parse_error() {
    let m = checkout();
    for garbage in [
        &b"\xc1"[..],
        b"\xff\xff\xff",
        b"not msgpack at all",
        b"\x93\x01\x02\x03",
        b"\xdf\xff\xff\xff\xff",
    ] {
        let out = m
            .evaluate_raw(b"FraudEngineRoutingMode", garbage, 0)
            .unwrap();
        let r: Resolution = decode(&out).unwrap();
        assert_eq!(
            r.error_code,
            Some(ErrorCode::ParseError),
            "{garbage:?}: {r:?}"
        );
    }
}

#[test]
fn a_non_utf8_flag_key_is_flag_not_found() {
    let m = checkout();
    let ctx = encode_context(&fr()).unwrap();
    let out = m.evaluate_raw(b"\xff\xfe", &ctx, 0).unwrap();
    let r: Resolution = decode(&out).unwrap();
    assert_eq!(r.error_code, Some(ErrorCode::FlagNotFound));
}

#[test]
fn the_raw_context_limit_is_enforced_before_calling_the_guest() {
    let m = checkout();
    let big = vec![0u8; limits::MAX_CONTEXT_BYTES + 1];
    assert!(matches!(
        m.evaluate_raw(b"x", &big, 0),
        Err(CallError::ContextTooLarge { .. })
    ));
}
