//! Governance end to end with the `flagforge` binary, a real broker (tansu, sqlite engine) and
//! a running `flagforge host --trust`: diff, approvals and separation of duties, owner scopes,
//! migration journeys, the audit chain (verified, then tampered with in the broker's storage),
//! the crash between the audit write and the module write, and the stale-flag report.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use flagforge_distribution::{Draft, Envelope, KeyPair, TrustedKeys};
use flagforge_governance::{diff, encode_changes, module_rules};
use flagforge_kafka::KafkaConfig;
use flagforge_testkit::{free_port, Broker};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

fn flagforge(args: &[&str]) -> Output {
    flagforge_env(args, &[])
}

fn flagforge_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flagforge"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}", text(&o));
    text(&o)
}

fn refused(o: Output) -> String {
    assert!(!o.status.success(), "expected a refusal: {}", text(&o));
    text(&o)
}

/// The checkout example with `edit(file name, text)` applied, written as a module file.
fn module(dir: &Path, name: &str, edit: impl Fn(&str, String) -> String) -> PathBuf {
    let compiled =
        flagforge_compiler::compile_path_edited(&rules_examples::dir("checkout"), |p, t| {
            edit(p.file_name().unwrap().to_str().unwrap(), t)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let path = dir.join(name);
    std::fs::write(&path, &compiled.module).unwrap();
    path
}

/// One edit of the checkout sources: in FILE, replace the first FROM by TO.
type Edit = (&'static str, &'static str, &'static str);

/// The policy change (TaxCalculationMode serves vertex_v2 in CH too).
const CH: Edit = (
    "policy.yaml",
    "'market == \"DE\" || market == \"AT\"'",
    "'market == \"DE\" || market == \"AT\" || market == \"CH\"'",
);
/// Logistics-team's change (SameDayDispatchEligibility's silver split).
const SPLIT: Edit = (
    "experience.yaml",
    "rollout: { eligible: 20, not_eligible: 80 }",
    "rollout: { eligible: 50, not_eligible: 50 }",
);

/// The checkout sources with `edits` applied in order (each must find its text).
fn edited(edits: &'static [Edit]) -> impl Fn(&str, String) -> String {
    move |name, mut t| {
        for (file, from, to) in edits {
            if name == *file {
                assert!(t.contains(from), "`{from}` not in {file}");
                t = t.replacen(from, to, 1);
            }
        }
        t
    }
}

#[test]
fn diff_lists_exactly_the_changed_flags_and_reordering_is_no_change() {
    let d = tempfile::tempdir().unwrap();
    let v1 = module(d.path(), "v1.wasm", |_, t| t);
    let v2 = module(d.path(), "v2.wasm", |name, t| match name {
        "policy.yaml" => t.replace(
            "'market == \"DE\" || market == \"AT\"'",
            "'market == \"DE\" || market == \"AT\" || market == \"CH\"'",
        ),
        "ops.yaml" => t.replace("owner: risk-team", "owner: fraud-team"),
        "migration.yaml" => t.replacen(
            "        serve: DUAL_WRITE\n",
            "        serve: SHADOW_READ\n",
            1,
        ),
        _ => t,
    });
    let out: Value = serde_json::from_str(&ok(flagforge(&[
        "diff",
        v1.to_str().unwrap(),
        v2.to_str().unwrap(),
        "--json",
    ])))
    .unwrap();
    let mut events: Vec<(String, String)> = out["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["event"].as_str().unwrap().to_owned(),
                c["flag"]["key"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    events.sort();
    assert_eq!(
        events,
        [
            ("FlagMetadataChanged", "FraudEngineRoutingMode"),
            ("FlagRulesChanged", "TaxCalculationMode"),
            ("FlagStateChanged", "LegacyOrderWriteMode"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    // Sources with keys and flags in another order: no events (diffing directories).
    let src = d.path().join("reordered");
    std::fs::create_dir(&src).unwrap();
    for entry in std::fs::read_dir(rules_examples::dir("checkout")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "yaml") {
            let t = std::fs::read_to_string(&p).unwrap().replace(
                "    kind: policy\n    owner: pricing-team\n",
                "    owner: pricing-team\n    kind: policy\n",
            );
            std::fs::write(src.join(p.file_name().unwrap()), t).unwrap();
        }
    }
    let same = ok(flagforge(&[
        "diff",
        rules_examples::dir("checkout").to_str().unwrap(),
        src.to_str().unwrap(),
    ]));
    assert_eq!(same.trim(), "no changes");
}

#[test]
fn stale_lists_every_example_flag_expiring_before_the_day_and_check_warns() {
    let checkout = rules_examples::dir("checkout");
    let out: Value = serde_json::from_str(&ok(flagforge(&[
        "stale",
        checkout.to_str().unwrap(),
        "--today",
        "2030-01-01",
        "--json",
    ])))
    .unwrap();
    let mut listed: Vec<String> = out["expired"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["flag"].as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    let ir = flagforge_compiler::compile_path(&checkout).unwrap().ir;
    let mut expected: Vec<String> = ir
        .flags
        .iter()
        .filter(|f| f.expires.as_deref().is_some_and(|e| e < "2030-01-01"))
        .map(|f| f.key.clone())
        .collect();
    expected.sort();
    assert!(expected.len() >= 4, "{expected:?}");
    assert_eq!(listed, expected);
    // Nothing expired in 2026 → the CI gate passes; by 2030 it fails.
    assert!(flagforge(&[
        "stale",
        checkout.to_str().unwrap(),
        "--today",
        "2026-11-25",
        "--fail-on-expired"
    ])
    .status
    .success());
    let gate = flagforge(&[
        "stale",
        checkout.to_str().unwrap(),
        "--today",
        "2030-01-01",
        "--fail-on-expired",
    ]);
    assert!(!gate.status.success());
    assert!(
        text(&gate).contains("LegacyOrderWriteMode (migration, order-platform) expired 2027-09-30"),
        "{}",
        text(&gate)
    );
    // Fully rolled out: a flag whose rules all serve its default.
    let d = tempfile::tempdir().unwrap();
    let old = d.path().join("old.yaml");
    std::fs::write(
        &old,
        "ruleset: t\ncontext: { market: string }\nflags:\n  - key: OldBanner\n    kind: release\n    owner: web\n    expires: 2020-01-01\n    default: on\n    rules:\n      - when: 'market == \"FR\"'\n        serve: on\n",
    )
    .unwrap();
    let report: Value =
        serde_json::from_str(&ok(flagforge(&["stale", old.to_str().unwrap(), "--json"]))).unwrap();
    assert_eq!(report["fully_rolled_out"][0]["flag"], "OldBanner");
    assert_eq!(report["fully_rolled_out"][0]["serves"], "on");
    let check = ok(flagforge(&["check", old.to_str().unwrap()]));
    assert!(
        check.contains("warning: flag `OldBanner` (web) expired on 2020-01-01"),
        "{check}"
    );
}

struct Keys {
    dir: PathBuf,
}

impl Keys {
    fn make(&self, name: &str) -> KeyPair {
        ok(flagforge(&[
            "keygen",
            "--out",
            self.dir.join(name).to_str().unwrap(),
        ]));
        KeyPair::read(&self.dir.join(name).join("flagforge.key")).unwrap()
    }
    fn path(&self, name: &str) -> String {
        self.dir
            .join(name)
            .join("flagforge.key")
            .display()
            .to_string()
    }
}

/// A running `flagforge host`; killed on drop.
struct Host {
    child: Child,
    base: String,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn get(url: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    match agent.get(url).call() {
        Ok(mut r) => (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        ),
        Err(_) => (0, String::new()),
    }
}

impl Host {
    fn served(&self) -> Option<(u64, String)> {
        let (status, body) = get(&format!("{}/readyz", self.base));
        if status != 200 {
            return None;
        }
        let v: Value = serde_json::from_str(&body).ok()?;
        let r = &v["rulesets"][0];
        Some((r["version"].as_u64()?, r["sha256"].as_str()?.to_owned()))
    }
    fn metrics(&self) -> String {
        get(&format!("{}/metrics", self.base)).1
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sha(path: &Path) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// Produces an envelope straight to the modules topic, as an attacker or a buggy publisher would.
fn produce_by_hand(brokers: &str, env: &Envelope) {
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.max.bytes", "2000000")
        .create()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        producer
            .send(
                FutureRecord::to(flagforge_kafka::MODULES_TOPIC)
                    .key(&env.ruleset)
                    .payload(&env.encode()),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    });
}

/// The epoch the topic's newest trusted envelope is in: a hand-made envelope copies it, as an
/// attacker would, so that only the governance checks stand in its way.
fn current_epoch(brokers: &str, keys: &[&KeyPair]) -> Option<u64> {
    let trusted = TrustedKeys::new(keys.iter().map(|k| k.public()));
    flagforge_kafka::history(&KafkaConfig::new(brokers), &trusted)
        .unwrap()
        .iter()
        .filter(|e| e.ruleset == "checkout")
        .map(Envelope::position)
        .max()
        .and_then(|p| (p.epoch != 0).then_some(p.epoch))
}

/// An envelope built the way `publish` builds one (diff against `previous`, in the topic's
/// current epoch), signed by the author only.
fn hand_made(
    epoch: Option<u64>,
    author: &KeyPair,
    version: u64,
    previous: &Path,
    module: &Path,
) -> Envelope {
    let (old, new) = (
        std::fs::read(previous).unwrap(),
        std::fs::read(module).unwrap(),
    );
    let changes = diff(
        Some(&module_rules(&old).unwrap()),
        &module_rules(&new).unwrap(),
    );
    Envelope::sign(
        Draft {
            ruleset: "checkout".into(),
            version,
            module: new,
            created_at: "2026-11-25T12:00:00Z".into(),
            previous: Some(sha(previous)),
            changes: Some(encode_changes(&changes)),
            epoch,
            ..Draft::default()
        },
        author,
    )
}

fn rejected(host: &Host, reason: &str) -> u64 {
    let needle = format!("flagforge_envelopes_rejected_total{{reason=\"{reason}\"}} ");
    host.metrics()
        .lines()
        .find_map(|l| l.strip_prefix(&needle).and_then(|n| n.trim().parse().ok()))
        .unwrap_or(0)
}

#[test]
fn governed_publishes_need_approvals_and_scopes_hosts_check_again_and_the_audit_chain_holds() {
    let mut broker = Broker::start_durable();
    let brokers = broker.addr.clone();
    let d = tempfile::tempdir().unwrap();
    let keys = Keys {
        dir: d.path().join("keys"),
    };
    let (alice, bob, carol) = (keys.make("alice"), keys.make("bob"), keys.make("carol"));
    let trust = d.path().join("trust.yaml");
    std::fs::write(
        &trust,
        format!(
            "keys:\n  - identity: alice@shop.example\n    key: {}\n    roles: [author]\n    owners: [\"*\"]\n  - identity: bob@shop.example\n    key: {}\n    roles: [approver]\n    owners: [\"*\"]\n  - identity: carol@shop.example\n    key: {}\n    roles: [author]\n    owners: [logistics-team]\n",
            alice.public().to_text(),
            bob.public().to_text(),
            carol.public().to_text()
        ),
    )
    .unwrap();
    let trust_s = trust.to_str().unwrap();
    let publish = |m: &Path, key: &str, extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec![
            "publish",
            m.to_str().unwrap(),
            "--brokers",
            &brokers,
            "--key",
            key,
            "--trust",
            trust_s,
            "--reason",
            "test",
        ];
        args.extend_from_slice(extra);
        flagforge_env(&args, env)
    };

    // v1: the policy and migration flags are new, so they need an approval too.
    let v1 = module(d.path(), "v1.wasm", |_, t| t);
    let out = refused(publish(&v1, &keys.path("alice"), &[], &[]));
    assert!(
        out.contains("TaxCalculationMode (policy flag of finance-platform) needs 1 approval(s)"),
        "{out}"
    );
    ok(flagforge(&[
        "approve",
        v1.to_str().unwrap(),
        "--key",
        &keys.path("bob"),
        "--first",
    ]));
    assert!(ok(publish(&v1, &keys.path("alice"), &[], &[])).contains("version 1"));

    let port = free_port();
    let host = Host {
        child: Command::new(env!("CARGO_BIN_EXE_flagforge"))
            .args([
                "host",
                "--brokers",
                &brokers,
                "--trust",
                trust_s,
                "--snapshot-dir",
                d.path().join("snapshots").to_str().unwrap(),
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--ruleset",
                "checkout",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        base: format!("http://127.0.0.1:{port}"),
    };
    wait_until("the host serves v1", || {
        host.served() == Some((1, sha(&v1)))
    });

    // A policy change with only the author's signature: refused by publish...
    let v2 = module(d.path(), "v2.wasm", edited(&[CH]));
    let out = refused(publish(&v2, &keys.path("alice"), &[], &[]));
    assert!(out.contains("TaxCalculationMode (policy flag of finance-platform) needs 1 approval(s) by an approver for finance-platform other than the author; it has 0"), "{out}");
    // ... and the same envelope made by hand and sent straight to the topic is refused by the
    // running host, counted, and v1 keeps serving.
    produce_by_hand(
        &brokers,
        &hand_made(
            current_epoch(&brokers, &[&alice, &bob, &carol]),
            &alice,
            2,
            &v1,
            &v2,
        ),
    );
    wait_until("the host counts the unapproved envelope", || {
        rejected(&host, "missing_approval") == 1
    });
    assert_eq!(host.served(), Some((1, sha(&v1))));
    // With bob's approval it publishes (above the hand-made version) and the host serves it.
    ok(flagforge(&[
        "approve",
        v2.to_str().unwrap(),
        "--key",
        &keys.path("bob"),
        "--brokers",
        &brokers,
        "--trust",
        trust_s,
    ]));
    assert!(ok(publish(&v2, &keys.path("alice"), &[], &[])).contains("version 3"));
    wait_until("the host serves the approved change", || {
        host.served() == Some((3, sha(&v2)))
    });

    // Carol may change logistics-team's flags only: publish refuses, the host refuses the
    // hand-made envelope, and her own team's flag goes through without an approval (release).
    let v3 = module(
        d.path(),
        "v3.wasm",
        edited(&[
            CH,
            (
                "ops.yaml",
                "when: 'market == \"IT\"'",
                "when: 'market == \"IT\" || market == \"ES\"'",
            ),
        ]),
    );
    let out = refused(publish(&v3, &keys.path("carol"), &[], &[]));
    assert!(
        out.contains("carol@shop.example")
            && out.contains("may not change FraudEngineRoutingMode, owned by risk-team"),
        "{out}"
    );
    produce_by_hand(
        &brokers,
        &hand_made(
            current_epoch(&brokers, &[&alice, &bob, &carol]),
            &carol,
            4,
            &v2,
            &v3,
        ),
    );
    wait_until("the host counts the out-of-scope envelope", || {
        rejected(&host, "out_of_scope") == 1
    });
    let v4 = module(d.path(), "v4.wasm", edited(&[CH, SPLIT]));
    assert!(ok(publish(&v4, &keys.path("carol"), &[], &[])).contains("version 5"));
    wait_until("the host serves carol's change", || {
        host.served() == Some((5, sha(&v4)))
    });
    assert_eq!(host.served(), Some((5, sha(&v4))));

    // A migration flag jumping LEGACY_ONLY → NEW_ONLY is refused, naming the transition.
    let jump = module(
        d.path(),
        "jump.wasm",
        edited(&[
            CH,
            SPLIT,
            (
                "migration.yaml",
                "    default: LEGACY_ONLY
",
                "    default: NEW_ONLY
",
            ),
        ]),
    );
    let out = refused(publish(&jump, &keys.path("alice"), &[], &[]));
    assert!(
        out.contains("FulfillmentRoutingMode: LEGACY_ONLY → NEW_ONLY is not an allowed transition"),
        "{out}"
    );

    // The audit trail: three publishes, chained; the flag's history with who approved.
    let verified = ok(flagforge(&[
        "audit",
        "verify",
        "--brokers",
        &brokers,
        "--trust",
        trust_s,
    ]));
    assert!(
        verified.contains("audit chain ok: 3 records, signatures verified"),
        "{verified}"
    );
    let log = ok(flagforge(&[
        "audit",
        "log",
        "--brokers",
        &brokers,
        "--flag",
        "TaxCalculationMode",
    ]));
    assert!(
        log.contains("checkout v1") && log.contains("FlagDefined TaxCalculationMode"),
        "{log}"
    );
    assert!(
        log.contains("checkout v3")
            && log.contains("by alice@shop.example, approved by bob@shop.example")
            && log.contains("FlagRulesChanged TaxCalculationMode"),
        "{log}"
    );
    assert!(
        !log.contains("checkout v5"),
        "v5 did not change TaxCalculationMode: {log}"
    );

    // A crash between the audit write and the module write: the record is there, the module
    // is not; hosts keep serving v5; another module is refused until the interrupted one is
    // completed; completing it writes no second record; publishing it again changes nothing.
    let v6 = module(
        d.path(),
        "v6.wasm",
        edited(&[
            CH,
            SPLIT,
            (
                "experience.yaml",
                "expires: 2027-01-31",
                "expires: 2027-02-28",
            ),
        ]),
    );
    let crashed = publish(
        &v6,
        &keys.path("alice"),
        &[],
        &[("FLAGFORGE_FAULT", "crash-after-audit")],
    );
    assert!(
        !crashed.status.success(),
        "the publish was meant to crash: {}",
        text(&crashed)
    );
    let after_crash = ok(flagforge(&["audit", "verify", "--brokers", &brokers]));
    assert!(
        after_crash.contains("never reached the modules topic")
            && after_crash.contains("4 records"),
        "{after_crash}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(host.served(), Some((5, sha(&v4))));
    let out = refused(publish(&jump, &keys.path("alice"), &[], &[]));
    assert!(out.contains("a publish was interrupted"), "{out}");
    assert!(ok(publish(&v6, &keys.path("alice"), &[], &[]))
        .contains("completed an interrupted publish"));
    wait_until("the host serves the completed publish", || {
        host.served() == Some((6, sha(&v6)))
    });
    assert!(ok(publish(&v6, &keys.path("alice"), &[], &[])).contains("unchanged"));
    let verified = ok(flagforge(&[
        "audit",
        "verify",
        "--brokers",
        &brokers,
        "--trust",
        trust_s,
    ]));
    assert!(verified.contains("audit chain ok: 4 records"), "{verified}");
    drop(host);

    // The records survive a broker restart (regression: tansu deleted them all when the
    // topic said `retention.ms=-1`).
    broker.restart();
    let verified = ok(flagforge(&[
        "audit",
        "verify",
        "--brokers",
        &brokers,
        "--trust",
        trust_s,
    ]));
    assert!(verified.contains("audit chain ok: 4 records"), "{verified}");

    // Someone with access to the broker's storage alters the second record (the identity of
    // its author): the chain breaks at the record after it.
    broker.stop();
    let db = broker.sqlite_path().unwrap();
    let tamper = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys\n\
             db=sqlite3.connect(sys.argv[1])\n\
             q='select r.rowid, r.v from record r join topition t on r.topition=t.id join topic p on t.topic=p.id where p.name=? and r.offset_id=1'\n\
             rowid,v=db.execute(q,('flagforge.audit',)).fetchone()\n\
             assert b'alice@shop.example' in v\n\
             db.execute('update record set v=? where rowid=?',(v.replace(b'alice@shop.example',b'alicf@shop.example'),rowid))\n\
             db.commit()",
            db.to_str().unwrap(),
        ])
        .output()
        .expect("python3 (with sqlite3) runs the tampering step");
    assert!(tamper.status.success(), "{}", text(&tamper));
    broker.resume();
    let broken = refused(flagforge(&["audit", "verify", "--brokers", &brokers]));
    assert!(
        broken.contains("BROKEN LINK at record #2 (offset 2)"),
        "{broken}"
    );
}
