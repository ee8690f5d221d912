//! flagforge beside its peers, in one process and one run, on the same four scenarios:
//!
//! - **S1** one `==` (`market == "FR"`);
//! - **S2** `market` in a 20-item list && `tier` in [gold, platinum] && `app_version >= 2.3.0`
//!   → `new`, else a 50/50 rollout by `customer_id` (`S2` hits the rule, `S2 rollout` falls
//!   through to the rollout);
//! - **S3** `tenant` in a 10,000-member list (hit and miss);
//! - **S4** S2 with 1,000 unused context attributes.
//!
//! Engines: flagforge's module in wasmtime (`LoadedModule::evaluate(key, &Context)`) and
//! evaluator-core natively (`Ruleset::evaluate`), Unleash Yggdrasil (`get_variant` with a typed
//! `Context`), and datalogic-rs, the JSON Logic engine with flagd's operators (`sem_ver`,
//! `fractional`), evaluating a pre-parsed context (`ParsedData`, its zero-copy input: the
//! cheapest way to call it). Every engine's answers are checked before anything is timed.
//! The table at the end reads criterion's estimates of this run.
//!
//! `cargo bench -p flagforge-benches --bench peers`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark harness: a failed setup aborts the run"
)]

use std::collections::HashMap;
use std::hint::black_box;
use std::path::PathBuf;

use criterion::Criterion;
use datalogic_rs::{Engine as LogicEngine, ParsedData};
use evaluator_core::{Options, Ruleset};
use flagforge_compiler::SourceFile;
use flagforge_protocol::{Context, Value};
use unleash_yggdrasil::{Context as UnleashContext, EngineState, UpdateMessage};
use wasm_host::{Host, Limits};

const MARKETS: [&str; 20] = [
    "FR", "DE", "ES", "IT", "NL", "BE", "AT", "PT", "IE", "FI", "SE", "DK", "PL", "CZ", "SK", "HU",
    "RO", "BG", "GR", "HR",
];
const TENANTS: usize = 10_000;
const UNUSED: usize = 1_000;

/// One measured case: a flag, a context, and the variant every engine must answer.
struct Case {
    name: &'static str,
    flag: &'static str,
    attrs: Vec<(String, String)>,
    /// The variant, or `None` for "one of the rollout's two variants".
    expect: Option<&'static str>,
}

fn tenant(i: usize) -> String {
    format!("tenant-{i:05}")
}

fn cases() -> Vec<Case> {
    let kv = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let s2 = kv(&[
        ("market", "HR"),
        ("tier", "platinum"),
        ("app_version", "2.4.1"),
        ("customer_id", "c-1001"),
    ]);
    let mut s4 = s2.clone();
    s4.extend((0..UNUSED).map(|i| (format!("unused_{i:04}"), format!("value-{i}"))));
    vec![
        Case {
            name: "S1",
            flag: "S1",
            attrs: kv(&[("market", "FR")]),
            expect: Some("on"),
        },
        Case {
            name: "S2",
            flag: "S2",
            attrs: s2,
            expect: Some("new"),
        },
        Case {
            name: "S2 rollout",
            flag: "S2",
            attrs: kv(&[
                ("market", "HR"),
                ("tier", "silver"),
                ("app_version", "2.4.1"),
                ("customer_id", "c-1001"),
            ]),
            expect: None,
        },
        Case {
            name: "S3 hit",
            flag: "S3",
            attrs: kv(&[("tenant", &tenant(7_777))]),
            expect: Some("on"),
        },
        Case {
            name: "S3 miss",
            flag: "S3",
            attrs: kv(&[("tenant", "tenant-unknown")]),
            expect: Some("off"),
        },
        Case {
            name: "S4",
            flag: "S2",
            attrs: s4,
            expect: Some("new"),
        },
    ]
}

fn quoted(items: impl Iterator<Item = String>) -> String {
    items
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---- flagforge -----------------------------------------------------------------------------

fn flagforge_rules() -> String {
    let markets = quoted(MARKETS.iter().map(|m| (*m).to_owned()));
    let tenants = (0..TENANTS).map(tenant).collect::<Vec<_>>().join(", ");
    format!(
        r#"ruleset: peers
targeting_key: customer_id
context:
  customer_id: string
  market: string
  tier: string
  app_version: semver
  tenant: string
segments:
  big_tenants: {{ members: [{tenants}] }}
flags:
  - key: S1
    kind: ops
    owner: bench
    variants: {{ on: true, off: false }}
    default: off
    rules:
      - when: 'market == "FR"'
        serve: on
  - key: S2
    kind: ops
    owner: bench
    variants: {{ new: new, a: a, b: b }}
    default: a
    rules:
      - when: 'market in [{markets}] && tier in ["gold", "platinum"] && app_version >= "2.3.0"'
        serve: new
      - rollout: {{ a: 50, b: 50 }}
        by: customer_id
  - key: S3
    kind: ops
    owner: bench
    variants: {{ on: true, off: false }}
    default: off
    rules:
      - when: 'tenant in segment("big_tenants")'
        serve: on
"#
    )
}

fn flagforge_context(case: &Case) -> Context {
    case.attrs
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect()
}

// ---- Unleash Yggdrasil ---------------------------------------------------------------------

fn unleash_features() -> serde_json::Value {
    let variant = |name: &str, weight: u32| serde_json::json!({"name": name, "weight": weight, "weightType": "variable", "stickiness": "customer_id"});
    let everyone = |group: &str| serde_json::json!({"rollout": "100", "stickiness": "default", "groupId": group});
    serde_json::json!({
        "version": 2,
        "features": [
            {"name": "S1", "enabled": true, "strategies": [{
                "name": "flexibleRollout", "parameters": everyone("S1"),
                "constraints": [{"contextName": "market", "operator": "IN", "values": ["FR"]}],
                "variants": [variant("on", 1000)]
            }]},
            {"name": "S2", "enabled": true, "strategies": [
                {"name": "flexibleRollout", "parameters": everyone("S2"),
                 "constraints": [
                    {"contextName": "market", "operator": "IN", "values": MARKETS},
                    {"contextName": "tier", "operator": "IN", "values": ["gold", "platinum"]},
                    {"contextName": "app_version", "operator": "SEMVER_GTE", "value": "2.3.0"}
                 ],
                 "variants": [variant("new", 1000)]},
                {"name": "flexibleRollout", "parameters": everyone("S2"),
                 "variants": [variant("a", 500), variant("b", 500)]}
            ]},
            {"name": "S3", "enabled": true, "strategies": [{
                "name": "flexibleRollout", "parameters": everyone("S3"),
                "constraints": [{"contextName": "tenant", "operator": "IN",
                                 "values": (0..TENANTS).map(tenant).collect::<Vec<_>>()}],
                "variants": [variant("on", 1000)]
            }]}
        ]
    })
}

fn unleash_context(case: &Case) -> UnleashContext {
    UnleashContext {
        properties: Some(case.attrs.iter().cloned().collect::<HashMap<_, _>>()),
        ..UnleashContext::default()
    }
}

/// Yggdrasil answers a disabled variant when no strategy matched: that is S1's and S3's "off".
fn unleash_answer(engine: &EngineState, flag: &str, ctx: &UnleashContext) -> String {
    let v = engine.get_variant(flag, ctx, &None);
    if v.enabled {
        v.name
    } else {
        "off".to_owned()
    }
}

// ---- datalogic-rs (JSON Logic with flagd's operators) --------------------------------------

fn logic_rules() -> Vec<(&'static str, serde_json::Value)> {
    let var = |name: &str| serde_json::json!({ "var": name });
    vec![
        (
            "S1",
            serde_json::json!({"if": [{"==": [var("market"), "FR"]}, "on", "off"]}),
        ),
        (
            "S2",
            serde_json::json!({"if": [
                {"and": [
                    {"in": [var("market"), MARKETS]},
                    {"in": [var("tier"), ["gold", "platinum"]]},
                    {"sem_ver": [var("app_version"), ">=", "2.3.0"]}
                ]},
                "new",
                {"fractional": [{"cat": ["S2", var("customer_id")]}, ["a", 50], ["b", 50]]}
            ]}),
        ),
        (
            "S3",
            serde_json::json!({"if": [
                {"in": [var("tenant"), (0..TENANTS).map(tenant).collect::<Vec<_>>()]},
                "on",
                "off"
            ]}),
        ),
    ]
}

/// datalogic's answer as a string (the session's arena is reset for the next call).
fn logic_answer(
    session: &mut datalogic_rs::Session<'_>,
    rule: &datalogic_rs::Logic,
    data: &ParsedData,
) -> String {
    let answer = session
        .eval_borrowed(rule, data)
        .expect("datalogic")
        .as_str()
        .map(str::to_owned)
        .unwrap_or_default();
    session.reset();
    answer
}

fn logic_context(case: &Case) -> ParsedData {
    let object: serde_json::Map<String, serde_json::Value> = case
        .attrs
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
        .collect();
    ParsedData::from_json(&serde_json::Value::Object(object).to_string()).expect("context")
}

// ---- the run -------------------------------------------------------------------------------

const ENGINES: [&str; 4] = [
    "flagforge-wasmtime",
    "flagforge-native",
    "yggdrasil",
    "datalogic",
];

fn check(engine: &str, case: &Case, answer: &str) {
    match case.expect {
        Some(want) => assert_eq!(answer, want, "{engine} answers {} wrongly", case.name),
        None => assert!(
            answer == "a" || answer == "b",
            "{engine} answers {} with {answer}",
            case.name
        ),
    }
}

/// Share of `b` among 2,000 customers who fall through to S2's rollout: each engine's own
/// bucketing must split about evenly (they hash differently, so not the same customers).
fn split(mut answer: impl FnMut(&str) -> String) -> f64 {
    let n = 2_000;
    let b = (0..n)
        .filter(|i| answer(&format!("customer-{i}")) == "b")
        .count();
    b as f64 / f64::from(n)
}

fn main() {
    let source = SourceFile {
        path: "peers.yaml".into(),
        text: flagforge_rules(),
    };
    let compiled = flagforge_compiler::compile_sources(&[source]).unwrap_or_else(|e| panic!("{e}"));
    let native = Ruleset::decode(&compiled.rules).expect("rules");
    let wasm = Host::new(Limits::default())
        .expect("engine")
        .load(&compiled.module)
        .expect("module");
    let unleash = EngineState::default();
    let features = serde_json::from_value(unleash_features()).expect("unleash features");
    let warnings = unleash.take_state(UpdateMessage::FullResponse(features));
    assert!(warnings.as_ref().is_none_or(Vec::is_empty), "{warnings:?}");
    let logic = LogicEngine::new();
    let compiled_logic: HashMap<&str, _> = logic_rules()
        .into_iter()
        .map(|(flag, rule)| (flag, logic.compile(&rule.to_string()).expect("rule")))
        .collect();
    let mut session = logic.session();

    let cases = cases();
    // Every engine answers every case correctly before anything is timed.
    for case in &cases {
        let ctx = flagforge_context(case);
        let w = wasm.evaluate(case.flag, &ctx, false);
        let n = native.evaluate(case.flag, &ctx, Options::default());
        assert_eq!(w, n, "wasmtime and native differ on {}", case.name);
        check("flagforge", case, w.variant.as_deref().unwrap_or("-"));
        check(
            "yggdrasil",
            case,
            &unleash_answer(&unleash, case.flag, &unleash_context(case)),
        );
        let answer = logic_answer(
            &mut session,
            &compiled_logic[case.flag],
            &logic_context(case),
        );
        check("datalogic", case, &answer);
    }
    let rollout = cases.iter().find(|c| c.name == "S2 rollout").expect("case");
    let with_customer = |id: &str| Case {
        name: "S2 rollout",
        flag: "S2",
        attrs: rollout
            .attrs
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    if k == "customer_id" {
                        id.into()
                    } else {
                        v.clone()
                    },
                )
            })
            .collect(),
        expect: None,
    };
    let splits = [
        split(|id| {
            let c = with_customer(id);
            wasm.evaluate("S2", &flagforge_context(&c), false)
                .variant
                .unwrap_or_default()
        }),
        split(|id| unleash_answer(&unleash, "S2", &unleash_context(&with_customer(id)))),
        split(|id| {
            logic_answer(
                &mut session,
                &compiled_logic["S2"],
                &logic_context(&with_customer(id)),
            )
        }),
    ];
    for (engine, share) in ["flagforge", "yggdrasil", "datalogic"].iter().zip(splits) {
        assert!(
            (0.45..=0.55).contains(&share),
            "{engine}: {share:.3} of customers in b"
        );
    }
    println!(
        "answers checked; rollout share of b: flagforge {:.3}, yggdrasil {:.3}, datalogic {:.3}",
        splits[0], splits[1], splits[2]
    );

    let mut c = Criterion::default().configure_from_args();
    for case in &cases {
        let ctx = flagforge_context(case);
        let uctx = unleash_context(case);
        let data = logic_context(case);
        let rule = &compiled_logic[case.flag];
        let mut g = c.benchmark_group(format!("peers/{}", case.name));
        g.bench_function(ENGINES[0], |b| {
            b.iter(|| black_box(wasm.evaluate(black_box(case.flag), black_box(&ctx), false)))
        });
        g.bench_function(ENGINES[1], |b| {
            b.iter(|| {
                black_box(native.evaluate(
                    black_box(case.flag),
                    black_box(&ctx),
                    Options::default(),
                ))
            })
        });
        g.bench_function(ENGINES[2], |b| {
            b.iter(|| black_box(unleash.get_variant(black_box(case.flag), black_box(&uctx), &None)))
        });
        g.bench_function(ENGINES[3], |b| {
            b.iter(|| {
                let r = session
                    .eval_borrowed(rule, black_box(&data))
                    .map(|v| v.as_bool());
                session.reset();
                black_box(r)
            })
        });
        g.finish();
    }
    c.final_summary();
    table(&cases);
}

/// criterion's mean estimate of this run, in ns.
fn mean_ns(group: &str, engine: &str) -> Option<f64> {
    let exe = std::env::current_exe().ok()?;
    // target/<profile>/deps/peers-… → target/criterion
    let criterion: PathBuf = exe.parent()?.parent()?.parent()?.join("criterion");
    let dir = criterion.join(group.replace('/', "_")).join(engine);
    let text = std::fs::read_to_string(dir.join("new/estimates.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["mean"]["point_estimate"].as_f64()
}

fn table(cases: &[Case]) {
    let names: Vec<&str> = cases.iter().map(|c| c.name).collect();
    println!("\nns per evaluation (criterion mean, this run)\n");
    println!("| engine | {} |", names.join(" | "));
    println!("|---|{}", "---:|".repeat(names.len()));
    let mut means: HashMap<&str, Vec<Option<f64>>> = HashMap::new();
    for engine in ENGINES {
        let row: Vec<Option<f64>> = names
            .iter()
            .map(|n| mean_ns(&format!("peers/{n}"), engine))
            .collect();
        let cells: Vec<String> = row
            .iter()
            .map(|m| m.map_or("-".to_owned(), |m| format!("{m:.0}")))
            .collect();
        println!("| {engine} | {} |", cells.join(" | "));
        means.insert(engine, row);
    }
    let ratio = |a: &str, b: &str, limit: Option<f64>| {
        let cells: Vec<String> = (0..names.len())
            .map(|i| match (means[a][i], means[b][i]) {
                (Some(x), Some(y)) => {
                    let r = x / y;
                    match limit {
                        Some(l) if r <= l => format!("{r:.2}× met"),
                        Some(_) => format!("{r:.2}× MISSED"),
                        None => format!("{r:.2}×"),
                    }
                }
                _ => "-".to_owned(),
            })
            .collect();
        let budget = limit.map_or(String::new(), |l| format!(" (budget ≤ {l}×)"));
        println!("| {a} / {b}{budget} | {} |", cells.join(" | "));
    };
    ratio("flagforge-wasmtime", "flagforge-native", Some(1.3));
    ratio("flagforge-wasmtime", "yggdrasil", Some(1.0));
    ratio("flagforge-native", "yggdrasil", None);
    ratio("flagforge-wasmtime", "datalogic", None);
}
