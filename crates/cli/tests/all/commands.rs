//! The `flagforge` binary, run as a user would.

use std::path::Path;
use std::process::{Command, Output};

fn flagforge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flagforge"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn built_checkout(dir: &Path) -> String {
    let out = dir.join("checkout.wasm");
    let o = flagforge(&[
        "build",
        rules_examples::dir("checkout").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out.to_str().unwrap().to_owned()
}

#[test]
fn build_prints_sha256_and_size_and_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.wasm");
    let b = dir.path().join("b.wasm");
    let src = rules_examples::dir("checkout");
    let oa = stdout(&flagforge(&[
        "build",
        src.to_str().unwrap(),
        "-o",
        a.to_str().unwrap(),
    ]));
    let ob = stdout(&flagforge(&[
        "build",
        src.to_str().unwrap(),
        "-o",
        b.to_str().unwrap(),
    ]));
    let sha = |s: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix("sha256 "))
            .unwrap()
            .to_owned()
    };
    assert_eq!(sha(&oa), sha(&ob));
    assert_eq!(sha(&oa).len(), 64);
    let size: usize = oa
        .lines()
        .find_map(|l| l.strip_prefix("size "))
        .unwrap()
        .trim_end_matches(" bytes")
        .parse()
        .unwrap();
    assert_eq!(size, std::fs::metadata(&a).unwrap().len() as usize);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}

#[test]
fn check_fails_with_located_errors() {
    let bad = rules_examples::corpus().join("invalid/unknown_attribute.yaml");
    let o = flagforge(&["check", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("unknown_attribute.yaml:14:34: unknown attribute `tierr`"),
        "{err}"
    );
    let ok = flagforge(&["check", rules_examples::dir("checkout").to_str().unwrap()]);
    assert!(ok.status.success());
}

#[test]
fn eval_answers_in_the_documented_json() {
    let dir = tempfile::tempdir().unwrap();
    let module = built_checkout(dir.path());
    let o = flagforge(&[
        "eval",
        &module,
        "--context",
        r#"{"tenant":"acme-fr","market":"FR","customer_id":"c-1"}"#,
        "--flag",
        "FulfillmentRoutingMode",
    ]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["key"], "FulfillmentRoutingMode");
    assert_eq!(v["value"], "NEW_PRIMARY");
    assert_eq!(v["variant"], "NEW_PRIMARY");
    assert_eq!(v["reason"], "TARGETING_MATCH");
    assert!(v.get("errorCode").is_none());

    // Every flag: an object keyed by flag key.
    let all = flagforge(&[
        "eval",
        &module,
        "--context",
        r#"{"market":"IT"}"#,
        "--now",
        "2026-12-01T00:00:00Z",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&all.stdout).unwrap();
    assert_eq!(v.as_object().unwrap().len(), 9);
    assert_eq!(v["FreeShippingThreshold"]["value"], serde_json::json!(50.0));
    assert!(v["FreeShippingThreshold"]["value"].is_f64());
    assert_eq!(v["FraudEngineRoutingMode"]["variant"], "engine_v2");
}

#[test]
fn eval_with_a_wrong_typed_context_gives_reason_error() {
    let dir = tempfile::tempdir().unwrap();
    let module = built_checkout(dir.path());
    let o = flagforge(&[
        "eval",
        &module,
        "--context",
        r#"{"market": 33}"#,
        "--flag",
        "FraudEngineRoutingMode",
    ]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["reason"], "ERROR");
    assert_eq!(v["errorCode"], "TYPE_MISMATCH");
    assert_eq!(v["variant"], "engine_v2", "the kill switch fails safe");
}

#[test]
fn eval_explain_names_the_deciding_rule() {
    let dir = tempfile::tempdir().unwrap();
    let module = built_checkout(dir.path());
    let o = flagforge(&[
        "eval",
        &module,
        "--context",
        r#"{"market":"IT"}"#,
        "--flag",
        "FraudEngineRoutingMode",
        "--explain",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["explain"]["rule"], 0);
    let step = &v["explain"]["steps"][0];
    assert_eq!(step["outcome"], "matched");
    assert!(
        step["source"].as_str().unwrap().starts_with("ops.yaml:"),
        "{step}"
    );
}

#[test]
fn eval_refuses_unusable_context_json_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let module = built_checkout(dir.path());
    let deep = format!("{{\"a\":{}1{}}}", "[".repeat(10_000), "]".repeat(10_000));
    for (ctx, msg) in [
        ("not json", "not valid JSON"),
        ("[1,2]", "must be a JSON object"),
        (deep.as_str(), "not valid JSON"),
    ] {
        let o = flagforge(&["eval", &module, "--context", ctx]);
        assert_eq!(o.status.code(), Some(2), "{ctx}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(msg), "{err}");
    }
}

#[test]
fn inspect_reports_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let module = built_checkout(dir.path());
    let v: serde_json::Value =
        serde_json::from_slice(&flagforge(&["inspect", &module]).stdout).unwrap();
    assert_eq!(v["ruleset"], "checkout");
    assert_eq!(v["abi_version"], 2);
    assert_eq!(v["sha256"].as_str().unwrap().len(), 64);
    let flags = v["flags"].as_array().unwrap();
    assert_eq!(flags.len(), 9);
    assert_eq!(v["targeting_key"], "customer_id");
    let frm = flags
        .iter()
        .find(|f| f["key"] == "FulfillmentRoutingMode")
        .unwrap();
    assert_eq!(frm["kind"], "migration");
    assert_eq!(frm["owner"], "fulfillment-team");
    assert_eq!(frm["expires"], "2027-06-30");
    assert_eq!(frm["default"], "LEGACY_ONLY");
    assert_eq!(frm["variants"]["NEW_ONLY"], "NEW_ONLY");
    assert_eq!(frm["lifecycle"]["dependents"][0], "order-service");
}

#[test]
fn test_command_ends_with_the_summary_line() {
    let o = flagforge(&["test", rules_examples::dir("checkout").to_str().unwrap()]);
    assert!(o.status.success());
    let out = stdout(&o);
    let last = out.lines().last().unwrap();
    assert!(last.ends_with("passed, 0 failed"), "{last}");
}

#[test]
fn inspecting_a_hostile_file_fails_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.wasm");
    std::fs::write(&f, b"\0asmgarbage").unwrap();
    let o = flagforge(&["inspect", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unsupported WebAssembly binary version"));
}

#[test]
fn keygen_writes_a_key_pair_and_never_overwrites_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("keys");
    let o = flagforge(&["keygen", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let id = stdout(&o)
        .lines()
        .find_map(|l| l.strip_prefix("key id ").map(str::to_owned))
        .unwrap();
    let public = flagforge_distribution::PublicKey::read(&out.join("flagforge.pub")).unwrap();
    assert_eq!(public.id(), id);
    let secret = flagforge_distribution::KeyPair::read(&out.join("flagforge.key")).unwrap();
    assert_eq!(secret.public(), public);
    let again = flagforge(&["keygen", "--out", out.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
}

#[test]
fn decide_verify_and_replay_round_trip_and_refuse_with_their_own_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p).to_str().unwrap().to_owned();
    assert!(flagforge(&["keygen", "--out", &d("k")]).status.success());
    assert!(flagforge(&["keygen", "--out", &d("other")])
        .status
        .success());
    let wasm = built_checkout(dir.path());
    let o = flagforge(&[
        "decide",
        &wasm,
        "--flags",
        "FulfillmentRoutingMode,TaxCalculationMode",
        "--context",
        r#"{"tenant":"acme-fr","market":"FR","customer_id":"c-1001"}"#,
        "--key",
        &d("k/flagforge.key"),
        "--correlation-id",
        "order-42",
        "--record",
        &d("rec.json"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let header = stdout(&o).trim().to_owned();
    let verify = |value: &str, key: &str, extra: &[&str]| {
        let mut args = vec!["verify-decision", value, "--key", key];
        args.extend_from_slice(extra);
        flagforge(&args)
    };
    let ok = verify(&header, &d("k/flagforge.pub"), &[]);
    assert!(ok.status.success());
    let json: serde_json::Value = serde_json::from_str(&stdout(&ok)).unwrap();
    assert_eq!(json["correlation_id"], "order-42");
    assert_eq!(
        json["decisions"]["FulfillmentRoutingMode"]["variant"],
        "NEW_PRIMARY"
    );

    let reason = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();
    let wrong = verify(&header, &d("other/flagforge.pub"), &[]);
    assert!(
        !wrong.status.success() && reason(&wrong).contains("[unknown_key]"),
        "{}",
        reason(&wrong)
    );
    let expired = verify(
        &header,
        &d("k/flagforge.pub"),
        &["--now", "2099-01-01T00:00:00Z"],
    );
    assert!(
        !expired.status.success() && reason(&expired).contains("[expired]"),
        "{}",
        reason(&expired)
    );
    // Flip one character of the signed payload.
    let mut chars: Vec<char> = header.chars().collect();
    let i = chars.len() / 2;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    let flipped: String = chars.into_iter().collect();
    let bad = verify(&flipped, &d("k/flagforge.pub"), &[]);
    assert!(!bad.status.success(), "a flipped byte must be refused");
    assert!(
        reason(&bad).contains("[bad_signature]") || reason(&bad).contains("[malformed]"),
        "{}",
        reason(&bad)
    );

    let replay = |extra: &[&str]| {
        let rec = d("rec.json");
        let key = d("k/flagforge.pub");
        let mut args = vec![
            "replay",
            rec.as_str(),
            "--key",
            key.as_str(),
            "--module",
            wasm.as_str(),
        ];
        args.extend_from_slice(extra);
        flagforge(&args)
    };
    let confirmed = replay(&[]);
    assert!(confirmed.status.success(), "{}", stdout(&confirmed));
    assert!(stdout(&confirmed).contains("CONFIRMED: every recorded decision replays identically"));
    // A record altered by hand: another tenant.
    let text = std::fs::read_to_string(d("rec.json")).unwrap();
    std::fs::write(d("rec.json"), text.replace("acme-fr", "shop-9")).unwrap();
    let differs = replay(&[]);
    assert!(!differs.status.success());
    assert!(
        stdout(&differs).contains("DIFFERS    FulfillmentRoutingMode: recorded NEW_PRIMARY"),
        "{}",
        stdout(&differs)
    );
}

#[test]
fn bench_reports_native_and_wasmtime_cost_and_their_ratio() {
    let dir = rules_examples::dir("checkout");
    let o = flagforge(&[
        "bench",
        dir.to_str().unwrap(),
        "--flag",
        "FraudEngineRoutingMode",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let f = &r["flags"][0];
    assert_eq!(f["flag"], "FraudEngineRoutingMode");
    for k in ["native_ns", "wasmtime_ns", "ratio"] {
        assert!(f[k].as_f64().is_some_and(|v| v > 0.0), "{k}: {f}");
    }
    assert!(r["all_flags"]["ratio"].as_f64().is_some_and(|v| v > 0.0));
    assert!(r["wasmtime_load_ms"].as_f64().is_some_and(|v| v > 0.0));
    // A module file works too (the rules are read back out of it for the native side).
    let tmp = tempfile::tempdir().unwrap();
    let wasm = built_checkout(tmp.path());
    let o = flagforge(&["bench", &wasm, "--flag", "TaxCalculationMode"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).contains("TaxCalculationMode"));
    assert!(stdout(&o).contains("wasmtime validate + compile + instantiate"));
}

/// Runs the binary under a 1 GiB address-space limit: a command that read its whole input
/// before checking its size would fail to allocate instead of printing the limit.
fn flagforge_bounded(args: &[&str]) -> Output {
    let mut script = String::from("ulimit -v 1048576; exec \"$0\"");
    for i in 0..args.len() {
        script.push_str(&format!(" \"${}\"", i + 1));
    }
    Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_flagforge"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn endless_and_oversized_inputs_are_refused_at_their_bound_without_reading_them() {
    for args in [
        vec!["inspect", "/dev/zero"],
        vec!["eval", "/dev/zero", "--context", "{}"],
    ] {
        let o = flagforge_bounded(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("the limit is 8388608 bytes"),
            "{args:?}: {err}"
        );
    }
    // A 50 MB rule file: refused before it is read, with the limit in the message.
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yaml");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(50 * 1024 * 1024).unwrap();
    for cmd in ["check", "build"] {
        let out = dir.path().join("big.wasm");
        let o = if cmd == "check" {
            flagforge_bounded(&[cmd, big.to_str().unwrap()])
        } else {
            flagforge_bounded(&[cmd, big.to_str().unwrap(), "-o", out.to_str().unwrap()])
        };
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{cmd}: {err}");
        assert!(
            err.contains("the limit for one ruleset is 4194304 bytes"),
            "{cmd}: {err}"
        );
        assert!(!out.exists());
    }
}

#[test]
fn a_ruleset_whose_module_could_not_be_published_is_refused_by_check_and_build() {
    // 60,000 members of ~16 bytes: a valid ruleset under the source bound, whose module is
    // larger than any envelope `flagforge publish` produces.
    let dir = tempfile::tempdir().unwrap();
    let members: Vec<String> = (0..60_000).map(|i| format!("\"cust-{i:010}\"")).collect();
    std::fs::write(
        dir.path().join("ruleset.yaml"),
        format!(
            "ruleset: huge\ncontext:\n  customer_id: string\nsegments:\n  vip: {{ members: [{}] }}\nflags:\n  - key: Vip\n    kind: ops\n    owner: ops-team\n    variants: {{ on: true, off: false }}\n    default: off\n    rules:\n      - when: 'customer_id in segment(\"vip\")'\n        serve: on\n",
            members.join(", ")
        ),
    )
    .unwrap();
    let out = dir.path().join("huge.wasm");
    for args in [
        vec!["check", dir.path().to_str().unwrap()],
        vec![
            "build",
            dir.path().to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
    ] {
        let o = flagforge(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?}: {err}");
        assert!(
            err.contains("the limit for a module that can be published is 921600 bytes"),
            "{args:?}: {err}"
        );
    }
    assert!(!out.exists());
}
