//! Context bytes as the module receives them (the guest's `ff_evaluate` path, natively, ABI
//! v2: positional contexts), and as hosts translate them from canonical bytes: the shared
//! corpus ruleset answers every input with a readable record, never a panic.
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

fn runtime() -> &'static flagforge_runtime::Runtime {
    static RUNTIME: OnceLock<flagforge_runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| flagforge_runtime::Runtime::new(ruleset().manifest(), usize::MAX))
}

fuzz_target!(|data: &[u8]| {
    let rules = ruleset();
    let rt = runtime();
    // First byte picks the options (explain or not), the rest is the context.
    let (options, ctx) = match data.split_first() {
        Some((o, rest)) => (u32::from(*o & 1), rest),
        None => (0, data),
    };
    let flags = rt.manifest().flags.len() as u32;
    // The bytes as a positional context, straight into the evaluator; then as canonical
    // bytes, through the host's translation.
    let translated = rt.translate(None, ctx).ok();
    for positional in std::iter::once(ctx).chain(translated.as_deref()) {
        for flag in [0, 1, flags.saturating_sub(1), flags, u32::MAX] {
            let mut out = Vec::new();
            rules.evaluate_record(flag, positional, options, &mut out);
            let (_, rest) = flagforge_protocol::abi::Record::read(&out)
                .unwrap_or_else(|e| panic!("unreadable record: {e}"));
            assert!(rest.is_empty(), "bytes after the record");
            if flag < flags {
                assert!(rt.finish(flag, &out).is_ok(), "record does not expand");
            }
        }
        let mut all = Vec::new();
        rules.evaluate_all_records(positional, options, &mut all);
        assert!(rt.finish_all(&all).is_ok(), "records do not expand");
    }
});
