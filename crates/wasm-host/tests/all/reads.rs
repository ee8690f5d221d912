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
