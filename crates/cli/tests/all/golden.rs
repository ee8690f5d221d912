//! Golden result bytes: every case of the corpus and of each example ruleset must produce
//! exactly the result bytes recorded in `corpus/golden/` (and, with explanations, bytes with
//! the recorded sha256).
//! Any change to evaluation output shows up here; if it is intended, regenerate with
//! `BLESS=1 cargo test -p flagforge-cli --test all golden` and review the diff. Other hosts
//! (Node, Chromium) compare against the same files.

use std::path::{Path, PathBuf};

use flagforge_cli::conformance::Engines;
use flagforge_protocol::abi;
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};

fn golden_dir() -> PathBuf {
    rules_examples::corpus().join("golden")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Case name, flag, context, and result bytes (hex) for each option set.
fn results(dir: &Path) -> Json {
    let compiled = flagforge_compiler::compile_path(dir).unwrap();
    let engines = Engines::new(&compiled).unwrap();
    let cases = flagforge_compiler::load_cases(dir, "tests").unwrap();
    let rows: Vec<Json> = cases
        .iter()
        .map(|case| {
            let mut row = json!({
                "name": case.name,
                "flag": case.flag,
                "context": flagforge_protocol::Value::Map(case.context.clone()).to_json(),
            });
            let (native, wasm) = engines.both(case, 0).unwrap();
            assert_eq!(native, wasm, "{}: engines disagree", case.name);
            row["result"] = Json::String(hex(&native));
            let (native, wasm) = engines.both(case, abi::OPT_EXPLAIN).unwrap();
            assert_eq!(native, wasm, "{}: engines disagree (explained)", case.name);
            row["explained_sha256"] = Json::String(hex(&Sha256::digest(&native)));
            row
        })
        .collect();
    json!({ "ruleset": compiled.ir.name, "cases": rows })
}

/// With `BLESS` set, writes `actual` as golden file `name` and returns `None`; otherwise
/// returns the recorded golden content.
fn golden_or_bless(name: &str, actual: &Json) -> Option<Json> {
    let file = golden_dir().join(format!("{name}.json"));
    if std::env::var_os("BLESS").is_some() {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&file, serde_json::to_string_pretty(actual).unwrap() + "\n").unwrap();
        return None;
    }
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e}; run with BLESS=1 to create it", file.display()));
    Some(serde_json::from_str(&text).unwrap())
}

fn check(name: &str, dir: &Path) {
    let actual = results(dir);
    let Some(expected) = golden_or_bless(name, &actual) else {
        return;
    };
    let (exp, act) = (&expected["cases"], &actual["cases"]);
    assert_eq!(
        exp.as_array().map(Vec::len),
        act.as_array().map(Vec::len),
        "{name}: number of cases changed; review and BLESS=1"
    );
    for (e, a) in exp.as_array().unwrap().iter().zip(act.as_array().unwrap()) {
        assert_eq!(
            e, a,
            "{name}: case `{}` changed its result bytes; review and BLESS=1",
            a["name"]
        );
    }
}

#[test]
fn corpus_results_match_the_golden_bytes() {
    check("corpus", &rules_examples::corpus());
}

#[test]
fn example_results_match_the_golden_bytes() {
    for name in rules_examples::RULESETS {
        check(name, &rules_examples::dir(name));
    }
}

/// The canonical context bytes of `corpus/encoding/contexts.json` (tricky numbers, unicode,
/// key order, nesting, null), from the Rust encoder every Rust host uses: the target for the
/// JavaScript bindings' encoder (bindings/tests).
#[test]
fn context_encodings_match_the_golden_bytes() {
    let source: Json = serde_json::from_str(
        &std::fs::read_to_string(rules_examples::corpus().join("encoding/contexts.json")).unwrap(),
    )
    .unwrap();
    let rows: Vec<Json> = source["contexts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let ctx = flagforge_protocol::value::context_from_json(&c["context"]).unwrap();
            let bytes = flagforge_protocol::value::encode_context(&ctx).unwrap();
            json!({ "name": c["name"], "context": c["context"], "bytes": hex(&bytes) })
        })
        .collect();
    let actual = json!({ "contexts": rows });
    let Some(expected) = golden_or_bless("encoding", &actual) else {
        return;
    };
    assert_eq!(
        expected, actual,
        "context encodings changed; review and BLESS=1"
    );
}
