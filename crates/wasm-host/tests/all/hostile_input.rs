//! Hostile contexts against the real module: too large, too deep, not MessagePack.

use flagforge_protocol::{limits, Context, ErrorCode, Reason, Resolution, Value};
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

/// The module's answer for flag `key` to positional context bytes, sent as they are.
fn raw(m: &LoadedModule, key: &str, positional: &[u8]) -> Resolution {
    let flag = m
        .manifest()
        .flags
        .iter()
        .position(|f| f.key == key)
        .unwrap() as u32;
    let record = m.evaluate_record(flag, positional, 0).unwrap();
    m.manifest().expand_one(flag, &record).unwrap()
}

#[test]
fn a_context_nested_ten_thousand_deep_is_a_parse_error_not_a_crash() {
    let m = checkout();
    // {"market": [[[[...10,000 deep...]]]]} as canonical bytes (refused by the host) and
    // {slot: [[[[...]]]]} as a positional context (refused by the module).
    let mut canonical = vec![0x81, 0xa6];
    canonical.extend_from_slice(b"market");
    let slot = m
        .manifest()
        .context
        .iter()
        .position(|a| a.name == "market")
        .unwrap() as u8;
    let mut positional = vec![0x81, slot];
    for bytes in [&mut canonical, &mut positional] {
        bytes.extend(std::iter::repeat_n(0x91u8, 10_000));
        bytes.push(0xc0);
    }
    let by_host = m.evaluate_canonical("FraudEngineRoutingMode", &canonical, false);
    let by_module = raw(&m, "FraudEngineRoutingMode", &positional);
    for r in [by_host, by_module] {
        assert_eq!(r.error_code, Some(ErrorCode::ParseError));
        assert!(r.error_message.unwrap().contains("nested deeper"));
        assert_eq!(r.variant.as_deref(), Some("engine_v2"));
    }
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
        for r in [
            raw(&m, "FraudEngineRoutingMode", garbage),
            m.evaluate_canonical("FraudEngineRoutingMode", garbage, false),
        ] {
            assert_eq!(
                r.error_code,
                Some(ErrorCode::ParseError),
                "{garbage:?}: {r:?}"
            );
        }
    }
    // Positional contexts only: a string key, a slot out of range, slots out of order.
    for garbage in [
        &b"\x81\xa1a\x01"[..],
        b"\x81\xcc\xff\x01",
        b"\x82\x01\xc0\x00\xc0",
    ] {
        let r = raw(&m, "FraudEngineRoutingMode", garbage);
        assert_eq!(
            r.error_code,
            Some(ErrorCode::ParseError),
            "{garbage:?}: {r:?}"
        );
    }
}

#[test]
fn an_unknown_flag_is_flag_not_found_with_or_without_a_call() {
    let m = checkout();
    let calls = m.stats().calls.load(std::sync::atomic::Ordering::Relaxed);
    let r = m.evaluate("NoSuchFlag", &fr(), false);
    assert_eq!(r.error_code, Some(ErrorCode::FlagNotFound));
    assert_eq!(
        m.stats().calls.load(std::sync::atomic::Ordering::Relaxed),
        calls,
        "answered by the host"
    );
    let record = m.evaluate_record(9_999, &[0x80], 0).unwrap();
    let (record, rest) = flagforge_protocol::abi::Record::read(&record).unwrap();
    assert!(rest.is_empty());
    assert_eq!(record.error, Some(ErrorCode::FlagNotFound));
    assert_eq!(record.variant, None);
}

#[test]
fn the_raw_context_limit_is_enforced_before_calling_the_guest() {
    let m = checkout();
    let big = vec![0u8; limits::MAX_CONTEXT_BYTES + 1];
    assert!(matches!(
        m.evaluate_record(0, &big, 0),
        Err(CallError::ContextTooLarge { .. })
    ));
    let r = m.evaluate_canonical("FraudEngineRoutingMode", &big, false);
    assert_eq!(r.error_code, Some(ErrorCode::InvalidContext));
}
