//! Sending only the attributes a flag reads (and its prerequisites read) must not change any
//! answer: every corpus and example case, with noise attributes added to the context, gives
//! the same `Resolution` from the module as native evaluator-core on the full context.

use evaluator_core::{Options, Ruleset};
use flagforge_protocol::Value;
use wasm_host::{Host, Limits};

#[test]
fn answers_from_the_read_attributes_only_equal_answers_from_the_full_context() {
    let dirs = [rules_examples::corpus(), rules_examples::dir("checkout")];
    let mut compared = 0;
    for dir in dirs {
        let compiled = flagforge_compiler::compile_path(&dir).unwrap();
        let native = Ruleset::decode(&compiled.rules).unwrap();
        let module = Host::new(Limits::default())
            .unwrap()
            .load(&compiled.module)
            .unwrap();
        for case in flagforge_compiler::load_cases(&dir, "tests").unwrap() {
            let mut ctx = case.context.clone();
            for i in 0..50 {
                ctx.entry(format!("noise_{i:02}"))
                    .or_insert_with(|| Value::from("unread"));
            }
            for explain in [false, true] {
                match &case.flag {
                    Some(flag) => {
                        assert_eq!(
                            module.evaluate(flag, &ctx, explain),
                            native.evaluate(flag, &ctx, Options { explain }),
                            "{}: {flag} (explain {explain})",
                            case.name
                        );
                    }
                    None => assert_eq!(
                        module.evaluate_all(&ctx, explain),
                        native.evaluate_all(&ctx, Options { explain }),
                        "{} (all flags, explain {explain})",
                        case.name
                    ),
                }
                compared += 1;
            }
        }
    }
    assert!(compared > 200, "{compared}");
}

/// Flags whose answer reads no attribute (static flags, literal-only conditions) are answered
/// from the module's own answer remembered at load: the same bytes the module gives now for
/// any context, and no call into the module.
#[test]
fn remembered_answers_of_context_free_flags_are_the_modules_own_bytes() {
    use std::sync::atomic::Ordering;
    let mut checked = 0;
    for dir in [rules_examples::corpus(), rules_examples::dir("checkout")] {
        let compiled = flagforge_compiler::compile_path(&dir).unwrap();
        let module = Host::new(Limits::default())
            .unwrap()
            .load(&compiled.module)
            .unwrap();
        let reads = module.manifest().answer_reads();
        let mut ctx = flagforge_protocol::Context::new();
        ctx.insert("market".into(), Value::from("FR"));
        ctx.insert("noise".into(), Value::from(42));
        let encoded = flagforge_protocol::value::encode_context(&ctx).unwrap();
        for flag in module
            .manifest()
            .flags
            .iter()
            .filter(|f| reads[&f.key].is_empty())
        {
            let calls = module.stats().calls.load(Ordering::Relaxed);
            let remembered = module.evaluate(&flag.key, &ctx, false);
            assert_eq!(
                module.stats().calls.load(Ordering::Relaxed),
                calls,
                "{}: no call",
                flag.key
            );
            assert_eq!(
                flagforge_protocol::encode(&remembered).unwrap(),
                module
                    .evaluate_raw(flag.key.as_bytes(), &encoded, 0)
                    .unwrap(),
                "{}",
                flag.key
            );
            // With an explanation the module is asked.
            assert!(
                module.evaluate(&flag.key, &ctx, true).explain.is_some(),
                "{}",
                flag.key
            );
            checked += 1;
        }
        let here = module
            .manifest()
            .flags
            .iter()
            .filter(|f| reads[&f.key].is_empty())
            .count();
        assert_eq!(
            module.stats().constant_answers.load(Ordering::Relaxed),
            here as u64
        );
    }
    assert!(
        checked >= 2,
        "the corpus should hold context-free flags: {checked}"
    );
}
