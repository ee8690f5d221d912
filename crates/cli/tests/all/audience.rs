//! `flagforge build --audience browser`: the module holds only the exposed flags, no member
//! string of any member-list segment, and gives the full module's results for the flags kept.

use std::collections::BTreeSet;

use flagforge_cli::conformance::Engines;
use flagforge_compiler::{compile_audience, compile_path, compile_sources, SourceFile};

/// Every member of every member-list segment of the checkout rules (read from the sources).
fn checkout_members() -> Vec<String> {
    let text =
        std::fs::read_to_string(rules_examples::dir("checkout").join("ruleset.yaml")).unwrap();
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some((_, rest)) = line.split_once("members: [") {
            let list = rest.split(']').next().unwrap();
            out.extend(list.split(',').map(|m| m.trim().to_owned()));
        }
    }
    assert!(out.len() >= 8, "members found: {out:?}");
    out
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

#[test]
fn browser_build_holds_no_member_string_and_keeps_the_exposed_flags_results() {
    let full = compile_path(&rules_examples::dir("checkout")).unwrap();
    let browser = compile_audience(&full, "browser").unwrap();
    assert_eq!(browser.ir.name, "checkout.browser");
    let kept: Vec<&str> = browser.ir.flags.iter().map(|f| f.key.as_str()).collect();
    assert_eq!(
        kept,
        [
            "CheckoutExperienceVariant",
            "PremiumEntitlementRule",
            "FreeShippingThreshold"
        ]
    );

    for m in checkout_members() {
        // The full module carries the members; the browser build's rules data carries none,
        // and its module no more than the bare guest's own code does.
        assert!(
            count(&full.rules, m.as_bytes()) > 0,
            "{m} is in the full rules"
        );
        assert_eq!(
            count(&browser.rules, m.as_bytes()),
            0,
            "{m} leaked into the rules"
        );
        assert_eq!(
            count(&browser.module, m.as_bytes()),
            count(flagforge_compiler::GUEST_WASM, m.as_bytes()),
            "{m} leaked into the module"
        );
        assert_eq!(
            count(&browser.module, m.as_bytes()),
            0,
            "{m} appears in the module"
        );
    }

    // Every checkout case of a kept flag, plus the all-flags contexts for each kept flag: the
    // browser build's result bytes equal the full module's, in wasmtime and natively.
    let (full_engines, browser_engines) = (
        Engines::new(&full).unwrap(),
        Engines::new(&browser).unwrap(),
    );
    let cases = flagforge_compiler::load_cases(&rules_examples::dir("checkout"), "tests").unwrap();
    let mut compared = 0;
    for case in &cases {
        for key in &kept {
            if case.flag.as_deref().is_some_and(|f| f != *key) {
                continue;
            }
            let mut c = case.clone();
            c.flag = Some((*key).to_owned());
            let (fa, fb) = full_engines.both(&c, 0).unwrap();
            let (ba, bb) = browser_engines.both(&c, 0).unwrap();
            assert_eq!(fa, fb);
            assert_eq!(ba, bb);
            assert_eq!(fa, ba, "{}: {key} differs in the browser build", case.name);
            compared += 1;
        }
    }
    assert!(compared >= 10, "only {compared} comparisons");
}

#[test]
fn hashed_sets_answer_like_plain_sets_for_strings_ints_and_floats() {
    let src = r#"
ruleset: sets
context: { s: string, n: int, x: number, tags: list<string> }
segments:
  vip: { members: [alice@example.com, bob@example.com, "", "ünïcode"] }
  accounts: { members: [1, 42, -7, 9007199254740993] }
flags:
  - { key: ByString, kind: ops, owner: t, expose: [browser], variants: { on: true, off: false }, default: off,
      rules: [ { when: 's in segment("vip")', serve: on } ] }
  - { key: ByInt, kind: ops, owner: t, expose: [browser], variants: { on: true, off: false }, default: off,
      rules: [ { when: 'n in segment("accounts")', serve: on } ] }
  - { key: ByList, kind: ops, owner: t, expose: [browser], variants: { on: true, off: false }, default: off,
      rules: [ { when: 's in ["x", "y", "z"] || x in [1, 2.5]', serve: on } ] }
  - { key: Hidden, kind: ops, owner: t, variants: { on: true, off: false }, default: off,
      rules: [ { when: 's in ["secret-member"]', serve: on } ] }
"#;
    let full = compile_sources(&[SourceFile {
        path: "sets.yaml".into(),
        text: src.into(),
    }])
    .unwrap();
    let browser = compile_audience(&full, "browser").unwrap();
    assert_eq!(count(&browser.rules, b"secret-member"), 0);
    assert_eq!(count(&browser.rules, b"alice@example.com"), 0);
    let (f, b) = (
        Engines::new(&full).unwrap(),
        Engines::new(&browser).unwrap(),
    );
    let contexts = [
        r#"{"s": "alice@example.com"}"#,
        r#"{"s": "carol@example.com"}"#,
        r#"{"s": ""}"#,
        r#"{"s": "ünïcode"}"#,
        r#"{"s": "y"}"#,
        r#"{"n": 42}"#,
        r#"{"n": 43}"#,
        r#"{"n": -7}"#,
        r#"{"n": 9007199254740993}"#,
        r#"{"x": 2.5}"#,
        r#"{"x": 2.0}"#,
        r#"{"x": 1}"#,
        r#"{"x": 3}"#,
        r#"{"n": "not an int"}"#,
        r#"{}"#,
        r#"{"s": null}"#,
    ];
    let mut seen = BTreeSet::new();
    for ctx in contexts {
        let json: serde_json::Value = serde_json::from_str(ctx).unwrap();
        let context = flagforge_protocol::value::context_from_json(&json).unwrap();
        for key in ["ByString", "ByInt", "ByList"] {
            let case = flagforge_compiler::Case {
                name: ctx.into(),
                location: String::new(),
                flag: Some(key.into()),
                context: context.clone(),
                expect: Default::default(),
            };
            let (fa, _) = f.both(&case, 0).unwrap();
            let (ba, bb) = b.both(&case, 0).unwrap();
            assert_eq!(fa, ba, "{key} {ctx}");
            assert_eq!(ba, bb, "{key} {ctx}");
            seen.insert(fa);
        }
    }
    assert!(seen.len() >= 3, "the contexts exercise matches and misses");
}

#[test]
fn audience_builds_refuse_what_they_cannot_keep_private() {
    let full = compile_path(&rules_examples::dir("checkout")).unwrap();
    let e = compile_audience(&full, "kiosk").unwrap_err().to_string();
    assert!(
        e.contains("no flag of ruleset `checkout` is exposed to `kiosk`"),
        "{e}"
    );
    let e = compile_audience(&full, "Browser!").unwrap_err().to_string();
    assert!(e.contains("must be lowercase"), "{e}");
    let src = r#"
ruleset: p
context: { s: string }
flags:
  - { key: Base, kind: ops, owner: t, variants: { on: true, off: false }, default: off }
  - { key: Shown, kind: ops, owner: t, expose: [browser], variants: { on: true, off: false }, default: off,
      prerequisites: [ { flag: Base, variants: [on] } ] }
"#;
    let c = compile_sources(&[SourceFile {
        path: "p.yaml".into(),
        text: src.into(),
    }])
    .unwrap();
    let e = compile_audience(&c, "browser").unwrap_err().to_string();
    assert!(
        e.contains("`Shown` is exposed to `browser` but its prerequisite `Base` is not"),
        "{e}"
    );
}
