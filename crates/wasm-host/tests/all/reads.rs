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
        for (index, flag) in module
            .manifest()
            .flags
            .iter()
            .enumerate()
            .filter(|(_, f)| reads[&f.key].is_empty())
        {
            let calls = module.stats().calls.load(Ordering::Relaxed);
            let remembered = module.evaluate(&flag.key, &ctx, false);
            assert_eq!(
                module.stats().calls.load(Ordering::Relaxed),
                calls,
                "{}: no call",
                flag.key
            );
            // The module, asked directly, answers the same.
            let record = module.evaluate_record(index as u32, &[0x80], 0).unwrap();
            assert_eq!(
                remembered,
                module.manifest().expand_one(index as u32, &record).unwrap(),
                "{}",
                flag.key
            );
            assert_eq!(
                remembered,
                module.evaluate_canonical(&flag.key, &encoded, false),
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
        // Each was answered twice without a call: from a context and from canonical bytes.
        assert_eq!(
            module.stats().constant_answers.load(Ordering::Relaxed),
            2 * here as u64
        );
    }
    assert!(
        checked >= 2,
        "the corpus should hold context-free flags: {checked}"
    );
}

/// A flag of a large schema (here 7 + 100 declared attributes) binds only the attributes it
/// reads (evaluator-core's sparse slots): every answer equals the same flag's in a ruleset
/// declaring only the 7, natively and in the module, for present, missing and wrong-typed
/// attributes, and for context bytes whose keys are not in canonical order.
#[test]
fn a_large_schema_binds_only_what_a_flag_reads_with_the_same_answers() {
    let flags = r#"flags:
  - { key: Cmp, kind: ops, owner: t, variants: { on: true, off: false }, default: off, rules: [ { when: 'market == "FR" && n > 3', serve: on } ] }
  - { key: InList, kind: ops, owner: t, variants: { on: true, off: false }, default: off, rules: [ { when: '"gold" in tags', serve: on } ] }
  - { key: Split, kind: experiment, owner: t, expires: 2030-01-01, variants: { a: "a", b: "b" }, default: a, rules: [ { rollout: { a: 50, b: 50 }, by: customer } ] }
  - { key: Version, kind: ops, owner: t, variants: { on: true, off: false }, default: off, rules: [ { when: 'version >= semver("2.0.0")', serve: on } ] }
  - { key: Windowed, kind: ops, owner: t, variants: { on: true, off: false }, default: off, schedule: [ { from: 2026-01-01T00:00:00Z } ], prerequisites: [ { flag: Cmp, variant: on } ], rules: [ { when: 'has(tier)', serve: on } ] }
"#;
    let schema = "  market: string\n  n: int\n  tags: list<string>\n  customer: string\n  version: semver\n  now: timestamp\n  tier: string\n";
    let pads: String = (0..100).map(|i| format!("  pad{i:03}: string\n")).collect();
    let small = format!("ruleset: s\ncontext:\n{schema}{flags}");
    let large = format!("ruleset: s\ncontext:\n{pads}{schema}{flags}");
    let compile = |text: String| {
        flagforge_compiler::compile_sources(&[flagforge_compiler::SourceFile {
            path: "s.yaml".into(),
            text,
        }])
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let (small, large) = (compile(small), compile(large));
    let reference = Ruleset::decode(&small.rules).unwrap();
    let native = Ruleset::decode(&large.rules).unwrap();
    let module = Host::new(Limits::default())
        .unwrap()
        .load(&large.module)
        .unwrap();
    let v = |s: &str| Value::from(s);
    let contexts: Vec<Vec<(&str, Value)>> = vec![
        vec![
            ("market", v("FR")),
            ("n", Value::from(5)),
            ("tier", v("gold")),
            ("now", v("2026-11-25T00:00:00Z")),
        ],
        vec![("market", v("FR")), ("n", v("five")), ("pad050", v("x"))],
        vec![
            ("tags", Value::List(vec![v("silver"), v("gold")])),
            ("customer", v("c-1")),
            ("pad000", v("p")),
            ("pad099", v("q")),
        ],
        vec![
            ("version", v("2.1.0")),
            ("customer", Value::from(7)),
            ("tier", Value::from(3)),
        ],
        vec![
            ("version", v("not-a-version")),
            ("now", v("2025-01-01T00:00:00Z")),
            ("market", v("FR")),
            ("n", Value::from(9)),
        ],
        vec![],
    ];
    let keys = ["Cmp", "InList", "Split", "Version", "Windowed"];
    for pairs in &contexts {
        let ctx: flagforge_protocol::Context = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let bytes = flagforge_protocol::value::encode_context(&ctx).unwrap();
        for key in keys {
            let expected = reference.evaluate(key, &ctx, Options::default());
            assert_eq!(
                native.evaluate(key, &ctx, Options::default()),
                expected,
                "{key} {pairs:?}"
            );
            assert_eq!(
                module.evaluate(key, &ctx, false),
                expected,
                "{key} {pairs:?}"
            );
            // The whole context, padding included, through the bytes path.
            assert_eq!(
                module.evaluate_canonical(key, &bytes, false),
                expected,
                "{key} {pairs:?} (canonical bytes)"
            );
        }
        assert_eq!(
            module.evaluate_all(&ctx, false),
            reference.evaluate_all(&ctx, Options::default())
        );
    }
    // Keys out of canonical order: found by search, same answer.
    let mut reversed = vec![0x83u8];
    for (k, val) in [
        ("n", Value::from(5)),
        ("market", v("FR")),
        ("pad001", v("z")),
    ] {
        reversed.extend(flagforge_protocol::encode(&Value::String(k.into())).unwrap());
        reversed.extend(flagforge_protocol::encode(&val).unwrap());
    }
    let r = module.evaluate_canonical("Cmp", &reversed, false);
    assert_eq!(
        (r.variant.as_deref(), r.reason),
        (Some("on"), flagforge_protocol::Reason::TargetingMatch)
    );
}
