//! Context bytes as the module receives them (the guest's `ff_evaluate` path, natively): the
//! shared corpus ruleset answers every input with a decodable result, never a panic.
#![no_main]

use std::sync::OnceLock;

use evaluator_core::Ruleset;
use libfuzzer_sys::fuzz_target;

fn ruleset() -> &'static Ruleset {
    static RULES: OnceLock<Ruleset> = OnceLock::new();
    RULES.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../corpus/ruleset.yaml");
        let compiled = flagforge_compiler::compile_path(dir.as_ref())
            .unwrap_or_else(|e| panic!("the corpus compiles: {e}"));
        Ruleset::from_ir(compiled.ir).unwrap_or_else(|e| panic!("the corpus loads: {e:?}"))
    })
}

fuzz_target!(|data: &[u8]| {
    let rules = ruleset();
    // First byte picks the options (explain or not), the rest is the context.
    let (options, ctx) = match data.split_first() {
        Some((o, rest)) => (u32::from(*o & 1), rest),
        None => (0, data),
    };
    for key in [&b"StaticFlag"[..], b"NordicAdults", b"NoSuchFlag", ctx] {
        let out = rules.evaluate_encoded(key, ctx, options);
        assert!(
            flagforge_protocol::decode::<flagforge_protocol::Resolution>(&out).is_ok(),
            "undecodable result"
        );
    }
    let all = rules.evaluate_all_encoded(ctx, options);
    assert!(flagforge_protocol::decode::<Vec<flagforge_protocol::Resolution>>(&all).is_ok());
});
