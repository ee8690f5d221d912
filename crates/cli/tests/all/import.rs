//! `flagforge import flagd`: every user lands in the bucket flagd's formulas give, computed
//! by an independent oracle (scripts/bucketing_oracle.py, no flagforge code), natively and
//! in wasmtime; flagd's semantics for missing attributes are kept; what cannot be translated
//! is refused with its JSON path.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use flagforge_cli::conformance::run_dir;
use serde_json::{json, Value};

fn flagforge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flagforge"))
        .args(args)
        .output()
        .unwrap()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Asks the oracle for the variant index of each query.
fn oracle(queries: &[Value]) -> Vec<usize> {
    let mut child = Command::new("python3")
        .arg(repo().join("scripts/bucketing_oracle.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs the bucketing oracle");
    let mut input = String::new();
    for q in queries {
        writeln!(input, "{q}").unwrap();
    }
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            usize::try_from(v["index"].as_u64().unwrap()).unwrap()
        })
        .collect()
}

/// A rollout flag of the fixture and the flagd formula its buckets follow.
struct Split {
    flag: &'static str,
    /// The oracle's name for flagd's formula: v2 hashes text, v3 CBOR.
    algorithm: &'static str,
    /// What flagd hashes ahead of the value (v2: `cat` with the flag key; v3 pair: the flag key).
    seed: &'static str,
    variants: &'static [&'static str],
    weights: &'static [u64],
    /// The context attribute bucketed by, and the context each user gets.
    attr: &'static str,
    context: fn(usize) -> Value,
}

const SPLITS: &[Split] = &[
    // flagd v2, `{"cat": [{"var": "$flagd.flagKey"}, {"var": "email"}]}`: "header-color" ++ email.
    Split {
        flag: "header-color",
        algorithm: "flagd-v2",
        seed: "header-color",
        variants: &["red", "blue", "green"],
        weights: &[50, 20, 30],
        attr: "email",
        context: |i| json!({ "email": format!("user{i}@faas.com") }),
    },
    // flagd v2, implicit: flagKey ++ targetingKey.
    Split {
        flag: "checkout-v2",
        algorithm: "flagd-v2",
        seed: "checkout-v2",
        variants: &["on", "off"],
        weights: &[50, 50],
        attr: "targetingKey",
        context: |i| json!({ "targetingKey": format!("user-{i}") }),
    },
    // flagd v3, implicit: CBOR ["pricing-policy", targetingKey].
    Split {
        flag: "pricing-policy",
        algorithm: "flagd-v3-pair",
        seed: "pricing-policy",
        variants: &["standard", "dynamic", "surge"],
        weights: &[25, 25, 50],
        attr: "targetingKey",
        context: |i| json!({ "targetingKey": format!("user-{i}"), "market": "FR" }),
    },
    // flagd v3, `{"var": "email"}`: CBOR of the email alone; `["bm25"]` weighs 1.
    Split {
        flag: "search-ranking",
        algorithm: "flagd-v3",
        seed: "",
        variants: &["bm25", "vector"],
        weights: &[1, 1],
        attr: "email",
        context: |i| json!({ "email": format!("shopper.{i}@example.org") }),
    },
];

/// flagd's answers for contexts that exercise its semantics (missing attributes above all).
const SEMANTICS: &str = r#"
  - { name: evaluator matches, flag: welcome-banner, context: { email: a@faas.com }, expect: { variant: on, reason: TARGETING_MATCH } }
  - { name: evaluator fails, flag: welcome-banner, context: { email: a@b.com }, expect: { variant: off, reason: TARGETING_MATCH } }
  - { name: missing email takes the else branch, flag: welcome-banner, context: {}, expect: { variant: off, reason: TARGETING_MATCH } }
  - { name: a null branch serves the default, flag: header-color, context: { email: x@b.com }, expect: { variant: red, reason: DEFAULT } }
  - { name: outside the pilot market, flag: pricing-policy, context: { market: DE, targetingKey: u1 }, expect: { variant: standard, reason: TARGETING_MATCH } }
  - { name: test accounts are not in the pilot, flag: pricing-policy, context: { market: FR, email: test-1@x.org, targetingKey: u1 }, expect: { variant: standard, reason: TARGETING_MATCH } }
  - { name: pilot without a targeting key serves the default, flag: pricing-policy, context: { market: FR }, expect: { variant: standard } }
  - { name: sem_ver at the bound, flag: app-upgrade, context: { version: 2.1.0 }, expect: { variant: new } }
  - { name: sem_ver caret same major, flag: app-upgrade, context: { version: 1.4.2 }, expect: { variant: legacy } }
  - { name: sem_ver caret takes prereleases of the major, flag: app-upgrade, context: { version: 1.0.0-beta.1 }, expect: { variant: legacy } }
  - { name: sem_ver caret excludes the next major, flag: app-upgrade, context: { version: 2.0.5 }, expect: { variant: unsupported } }
  - { name: sem_ver caret excludes major zero, flag: app-upgrade, context: { version: 0.9.0 }, expect: { variant: unsupported } }
  - { name: sem_ver without a version, flag: app-upgrade, context: {}, expect: { variant: unsupported } }
  - { name: large basket, flag: basket-discount, context: { basket: 150, tier: gold }, expect: { variant: large, value: 10.5 } }
  - { name: a missing attribute is not equal to staff, flag: basket-discount, context: { basket: 150 }, expect: { variant: large } }
  - { name: staff get nothing on a large basket, flag: basket-discount, context: { basket: 150, tier: staff }, expect: { variant: none, reason: DEFAULT } }
  - { name: between, flag: basket-discount, context: { basket: 50 }, expect: { variant: small } }
  - { name: between is exclusive, flag: basket-discount, context: { basket: 20 }, expect: { variant: none, reason: DEFAULT } }
  - { name: no basket, flag: basket-discount, context: {}, expect: { variant: none, reason: DEFAULT } }
  - { name: before the launch, flag: launch-window, context: { now: "2025-12-31T23:59:59Z" }, expect: { variant: closed } }
  - { name: at the launch, flag: launch-window, context: { now: "2026-01-01T00:00:00Z" }, expect: { variant: open } }
  - { name: disabled, flag: legacy-flow, context: {}, expect: { variant: off, reason: DISABLED } }
"#;

#[test]
fn flagd_import_keeps_every_users_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = repo().join("corpus/import/flagd/shop.flagd.json");
    let o = flagforge(&[
        "import",
        "flagd",
        fixture.to_str().unwrap(),
        "-o",
        dir.path().to_str().unwrap(),
        "--expires",
        "2027-06-30",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("imported 9 flag(s)"), "{out}");
    assert!(
        out.contains("header-color: kind `experiment` and expires 2027-06-30 were defaulted"),
        "{out}"
    );
    let yaml = std::fs::read_to_string(dir.path().join("shop.yaml")).unwrap();
    assert!(yaml.contains("ticket: DS-12"), "metadata carried:\n{yaml}");
    assert!(yaml.contains("owner: design-system"), "{yaml}");

    // Metadata reaches the module's manifest (the flag set's and the flag's), keys in UTF-8
    // order as every host writes maps.
    let module = dir.path().join("shop.wasm");
    let o = flagforge(&[
        "build",
        dir.path().to_str().unwrap(),
        "-o",
        module.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = flagforge(&["inspect", module.to_str().unwrap()]);
    let manifest: Value = serde_json::from_slice(&o.stdout).unwrap();
    let header = manifest["flags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["key"] == "header-color")
        .unwrap();
    assert_eq!(
        header["metadata"],
        json!({ "team": "storefront", "flagSetId": "shop", "owner": "design-system",
                "ticket": "DS-12", "reviewed": true, "weight": 3 })
    );
    let keys: Vec<&String> = header["metadata"].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["flagSetId", "owner", "reviewed", "team", "ticket", "weight"]
    );

    const USERS: usize = 120;
    let mut queries = Vec::new();
    for s in SPLITS {
        for i in 0..USERS {
            let ctx = (s.context)(i);
            queries.push(json!({
                "algorithm": s.algorithm,
                "seed": s.seed,
                "value": ctx[s.attr],
                "weights": s.weights,
            }));
        }
    }
    let picks = oracle(&queries);
    let mut cases = String::from("cases:\n");
    cases.push_str(SEMANTICS.trim_start_matches('\n'));
    let mut picks = picks.into_iter();
    for s in SPLITS {
        let mut seen = vec![0usize; s.variants.len()];
        for i in 0..USERS {
            let pick = picks.next().unwrap();
            seen[pick] += 1;
            let case = json!({
                "name": format!("{} user {i}", s.flag),
                "flag": s.flag,
                "context": (s.context)(i),
                "expect": { "variant": s.variants[pick], "reason": "SPLIT" },
            });
            writeln!(cases, "  - {case}").unwrap();
        }
        // Every variant is reached, so the expectations cannot all be one answer.
        assert!(seen.iter().all(|n| *n > 0), "{}: {seen:?}", s.flag);
    }
    std::fs::create_dir(dir.path().join("tests")).unwrap();
    std::fs::write(dir.path().join("tests/flagd.yaml"), cases).unwrap();

    let report = run_dir(dir.path()).unwrap();
    report.print();
    assert_eq!(report.disagreements, 0);
    assert_eq!(report.failed, 0, "{:#?}", report.failures);
    assert_eq!(
        report.passed,
        SPLITS.len() * USERS + SEMANTICS.trim().lines().count()
    );
    assert!(
        report.untested_flags.is_empty(),
        "{:?}",
        report.untested_flags
    );
}

#[test]
fn untranslatable_flagd_is_refused_with_its_json_path() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("bad.json");
    let doc = json!({
        "flags": {
            "a": {
                "state": "ENABLED",
                "variants": { "on": true, "off": false },
                "defaultVariant": "off",
                "targeting": { "if": [{ "some": [{ "var": "tags" }, { "==": [{ "var": "" }, "x"] }] }, "on", "off"] }
            },
            "b": {
                "state": "ENABLED",
                "variants": { "on": true, "off": false },
                "defaultVariant": "off",
                "targeting": { "if": [{ "==": [{ "var": "user.email" }, "x"] }, "on", null] }
            },
            "c": {
                "state": "ENABLED",
                "variants": { "on": true, "off": false },
                "defaultVariant": null
            },
            "d": {
                "state": "ENABLED",
                "variants": { "on": true, "off": false },
                "defaultVariant": "off",
                "targeting": { "if": [{ "or": [{ "==": [{ "var": "age" }, "18"] }, { ">": [{ "var": "age" }, 18] }] }, "on", null] }
            },
            "e": {
                "state": "ENABLED",
                "variants": { "on": true, "off": false },
                "defaultVariant": "off",
                "targeting": { "fractional": [["on", 50], ["of", 50]] }
            }
        }
    });
    std::fs::write(&src, doc.to_string()).unwrap();
    let out = dir.path().join("out");
    let o = flagforge(&[
        "import",
        "flagd",
        src.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    for expected in [
        "$.flags.a.targeting.if[0].some: JSON Logic operator `some` has no flagforge translation",
        "$.flags.b.targeting.if[0][\"==\"][0].var: `user.email` reads a nested attribute",
        "$.flags.c.defaultVariant: flagforge flags always serve a variant",
        "$.flags.d.targeting.if[0].or[1][\">\"]: `age` is used as a number here but as a string at $.flags.d.targeting.if[0].or[0][\"==\"]",
        "$.flags.e.targeting.fractional[1]: `of` is not one of the flag's variants",
        "5 part(s) of",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    assert!(!out.exists(), "nothing is written when anything is refused");
}
