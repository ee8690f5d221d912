//! Deterministic mutation testing of the module boundary: mutated context bytes always come
//! back as a decodable result (a trap would be a guest bug), and mutated module bytes are
//! refused with a reason or load and answer — the process never crashes.

use flagforge_protocol::{Context, Value};
use wasm_host::{Host, Limits};

use crate::guests;

/// xorshift64* with a fixed seed: every run is identical, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, bytes: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(b.len() + 1);
        match rng.below(4) {
            0 if at < b.len() => b[at] = rng.next() as u8,
            1 => b.insert(at.min(b.len()), rng.next() as u8),
            2 if at < b.len() => {
                b.remove(at);
            }
            _ => {
                let markers = [
                    0xc0, 0xc1, 0xc4, 0xd9, 0xdc, 0xdd, 0xde, 0xdf, 0x9f, 0x8f, 0xcb, 0xcf,
                ];
                b.insert(at.min(b.len()), markers[rng.below(markers.len())]);
            }
        }
    }
    b
}

/// One byte overwritten in place: the module keeps its length and sections, so some mutations
/// land in code or data and still validate — the interesting case for the loader.
/// `tail` limits it to the module's last bytes: the data section, where the rules and the
/// guest's constants live, so most of these still validate and reach the rules decoder.
fn overwrite(rng: &mut Rng, bytes: &[u8], tail: Option<usize>) -> Vec<u8> {
    let mut b = bytes.to_vec();
    let from = tail.map_or(0, |t| b.len().saturating_sub(t));
    let at = from + rng.below(b.len() - from);
    b[at] ^= 1 + (rng.next() % 255) as u8;
    b
}

#[test]
fn mutated_context_bytes_always_come_back_as_data() {
    let module = Host::new(Limits::default())
        .unwrap()
        .load(&guests::checkout())
        .unwrap();
    let mut ctx = Context::new();
    for (k, v) in [
        ("tenant", Value::from("acme-fr")),
        ("market", Value::from("FR")),
        ("customer_id", Value::from("c-1001")),
        ("app_version", Value::from("2.5.0-rc.1")),
        ("order_total", Value::Float(184.2)),
        ("now", Value::from("2026-12-10T09:00:00Z")),
        ("extra", Value::List(vec![Value::Int(1), Value::from("é")])),
    ] {
        ctx.insert(k.into(), v);
    }
    // What a host sends for an all-flags call: the mutations hit the module's own reader.
    let layout = flagforge_protocol::positional::Layout::new(module.manifest());
    let mut base = Vec::new();
    flagforge_protocol::positional::encode(&ctx, layout.plan(None), &mut base).unwrap();
    let flags: Vec<String> = module
        .manifest()
        .flags
        .iter()
        .map(|f| f.key.clone())
        .collect();
    let mut rng = Rng(0x5eed_c0de_0000_0002);
    for i in 0..3000 {
        let bytes = mutate(&mut rng, &base);
        let index = i % flags.len();
        let out = module
            .evaluate_record(index as u32, &bytes, (i % 2) as u32)
            .unwrap_or_else(|e| panic!("iteration {i}: the module failed instead of answering: {e}; input {bytes:02x?}"));
        let r = module
            .manifest()
            .expand_one(index as u32, &out)
            .unwrap_or_else(|e| panic!("iteration {i}: unreadable record: {e}"));
        assert_eq!(r.key, flags[index]);
    }
    assert_eq!(
        module
            .stats()
            .discarded_instances
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[test]
fn mutated_modules_are_refused_or_load_and_answer() {
    let host = Host::new(Limits {
        fuel_per_call: 5_000_000,
        ..Limits::default()
    })
    .unwrap();
    let original = guests::checkout();
    let mut rng = Rng(0x5eed_0000_0003);
    let (mut refused, mut loaded) = (0, 0);
    let known = [
        "too_large",
        "bad_magic",
        "invalid_module",
        "imports",
        "missing_export",
        "abi_version",
        "unusable",
        "no_rules",
        "bad_manifest",
        "instantiate",
    ];
    for i in 0..60 {
        let bytes = match i % 4 {
            0 | 2 => mutate(&mut rng, &original),
            1 => overwrite(&mut rng, &original, None),
            _ => overwrite(&mut rng, &original, Some(16 * 1024)),
        };
        match host.load(&bytes) {
            Err(e) => {
                // Refused with one of the documented reasons and a message.
                assert!(known.contains(&e.kind()), "mutation {i}: kind {}", e.kind());
                assert!(!e.to_string().is_empty());
                refused += 1;
            }
            Ok(m) => {
                // Loaded: every declared flag answers, in order, and an error answer says why.
                let all = m.evaluate_all(&Context::new(), false);
                let keys: Vec<&str> = all.iter().map(|r| r.key.as_str()).collect();
                let declared: Vec<&str> =
                    m.manifest().flags.iter().map(|f| f.key.as_str()).collect();
                assert_eq!(keys, declared, "mutation {i}");
                for r in &all {
                    assert_eq!(
                        r.reason == flagforge_protocol::Reason::Error,
                        r.error_code.is_some(),
                        "mutation {i}: {r:?}"
                    );
                }
                loaded += 1;
            }
        }
    }
    // The seed is fixed: both outcomes occur, so both branches above were exercised.
    assert!(
        refused > 0 && loaded > 0,
        "refused {refused}, loaded {loaded}"
    );
    assert_eq!(refused + loaded, 60);
}
