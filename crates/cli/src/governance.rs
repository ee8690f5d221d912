//! `flagforge diff`, `approve`, `audit log|verify` and `stale`: the governance commands (the
//! logic lives in flagforge-governance; this file reads inputs and prints).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use evaluator_core::ir::RulesetIr;
use flagforge_distribution::{decide, Decision, Envelope, KeyPair, TrustedKeys};
use flagforge_governance::audit::{link, verify_chain, AuditRecord};
use flagforge_governance::release::{interrupted, verified_audit};
use flagforge_governance::{
    diff, encode_changes, forbidden_transitions, module_rules, Approval, Change, Trust,
};
use serde_json::{json, Value as Json};

/// The compiled rules of a module file, or of rule sources (compiled now).
pub fn rules_of(path: &Path) -> Result<RulesetIr> {
    if path.is_file() {
        let bytes = crate::read_module(path)?;
        if bytes.starts_with(b"\0asm") {
            return module_rules(&bytes).with_context(|| format!("reading {}", path.display()));
        }
    }
    match flagforge_compiler::compile_path(path) {
        Ok(c) => Ok(c.ir),
        Err(e) => bail!("{e}"),
    }
}

fn changes_json(changes: &[Change]) -> Json {
    serde_json::to_value(changes).unwrap_or(Json::Null)
}

/// `flagforge diff OLD NEW [--json]`.
pub fn diff_cmd(old: &Path, new: &Path, as_json: bool) -> Result<ExitCode> {
    let (a, b) = (rules_of(old)?, rules_of(new)?);
    let changes = diff(Some(&a), &b);
    let forbidden = forbidden_transitions(&changes, &b);
    if as_json {
        let out = json!({
            "old": a.name, "new": b.name,
            "changes": changes_json(&changes),
            "forbiddenTransitions": forbidden.iter().map(|t| json!({
                "flag": t.flag, "scope": t.scope, "from": t.from, "to": t.to,
                "allowed": t.allowed, "message": t.to_string(),
            })).collect::<Vec<_>>(),
        });
        outln!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        if changes.is_empty() {
            outln!("no changes");
        }
        for c in &changes {
            outln!("{}", c.summary());
        }
        for t in &forbidden {
            outln!("FORBIDDEN TRANSITION {t}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `approve` diffs the module against.
pub enum Against {
    /// The newest version on the modules topic verified against the keys (the newest a host
    /// governed by the trust file would serve, when one is given).
    Topic(flagforge_kafka::KafkaConfig, Option<Trust>, TrustedKeys),
    /// A module file.
    Module(PathBuf),
    /// Nothing: the ruleset's first version.
    First,
}

/// `flagforge approve FILE.wasm --key KEY (--brokers B | --against OLD.wasm | --first)`.
pub fn approve(
    module: &Path,
    key: &Path,
    against: Against,
    out: Option<PathBuf>,
) -> Result<ExitCode> {
    let key = KeyPair::read(key)?;
    let loaded = crate::load_module(module)?;
    let bytes = crate::read_module(module)?;
    let ruleset = loaded.manifest().ruleset.clone();
    let previous: Option<(String, Vec<u8>)> = match against {
        Against::First => None,
        Against::Module(p) => {
            let b = crate::read_module(&p)?;
            Some((crate::decisions::sha256_hex(&b), b))
        }
        Against::Topic(config, trust, trusted) => {
            if trust.is_none() && trusted.is_empty() {
                bail!("with --brokers, pass --trust (or --trusted-key) so the version on the topic can be verified before it is approved against");
            }
            let mut publisher = flagforge_kafka::Publisher::new(config)?.trusting(trusted);
            if let Some(t) = trust {
                publisher = publisher.governed(t);
            }
            publisher.latest(&ruleset)?.map(|e| (e.sha256, e.module))
        }
    };
    let new = module_rules(&bytes)?;
    let old = previous
        .as_ref()
        .map(|(_, m)| module_rules(m))
        .transpose()?;
    let changes = diff(old.as_ref(), &new);
    outln!(
        "approving `{ruleset}` sha256 {} against {}:",
        loaded.sha256_hex(),
        previous
            .as_ref()
            .map_or("nothing (first version)".to_owned(), |(s, _)| format!(
                "sha256 {s}"
            ))
    );
    for c in &changes {
        outln!("  {}", c.summary().replace('\n', "\n  "));
    }
    let approval = Approval::sign(
        &key,
        &ruleset,
        &loaded.sha256_hex(),
        previous.as_ref().map(|(s, _)| s.as_str()),
        &encode_changes(&changes),
    );
    let out = out.unwrap_or_else(|| approval_path(module, key.public().id()));
    std::fs::write(&out, serde_json::to_string_pretty(&approval)?)
        .with_context(|| format!("writing {}", out.display()))?;
    outln!(
        "approval by {} written to {}",
        key.public().id(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Where `approve` writes an approval of `module` by key `id` (and `publish` looks for it).
fn approval_path(module: &Path, id: &str) -> PathBuf {
    let name = module
        .file_name()
        .map_or_else(|| "module".into(), |n| n.to_string_lossy().into_owned());
    module.with_file_name(format!("{name}.approval-{id}.json"))
}

/// The approvals next to `module` (`MODULE.approval-*.json`) plus the files given.
pub fn approvals_for(module: &Path, extra: &[PathBuf]) -> Result<Vec<Approval>> {
    let name = module
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let prefix = format!("{name}.approval-");
    let dir = module
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".json"))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files.extend(extra.iter().cloned());
    files
        .iter()
        .map(|f| {
            let text = crate::read_file(f, crate::MAX_JSON_FILE_BYTES)?;
            serde_json::from_slice(&text)
                .with_context(|| format!("{}: not an approval", f.display()))
        })
        .collect()
}

/// Reads a trust file, with its located error.
pub fn read_trust(path: &Path) -> Result<Trust> {
    Trust::read(path).map_err(|e| anyhow::anyhow!("{e}"))
}

fn audit_records(config: &flagforge_kafka::KafkaConfig) -> Result<Vec<flagforge_kafka::Record>> {
    Ok(flagforge_kafka::read_topic(
        config,
        flagforge_kafka::AUDIT_TOPIC,
    )?)
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// `flagforge audit log [--flag KEY] [--json]`.
pub fn audit_log(
    config: &flagforge_kafka::KafkaConfig,
    flag: Option<&str>,
    as_json: bool,
) -> Result<ExitCode> {
    let raw = audit_records(config)?;
    let mut rows = Vec::new();
    for r in &raw {
        let Ok(rec) = AuditRecord::decode(&r.value) else {
            eprintln!("warning: offset {}: not an audit record", r.offset);
            continue;
        };
        let changes: Vec<Change> = rec
            .changes()
            .into_iter()
            .filter(|c| flag.is_none_or(|f| c.flag().key == f))
            .collect();
        if flag.is_some() && changes.is_empty() {
            continue;
        }
        rows.push((r.offset, rec, changes));
    }
    if as_json {
        let out: Vec<Json> = rows
            .iter()
            .map(|(offset, rec, changes)| {
                let e = &rec.envelope;
                json!({
                    "offset": offset, "seq": rec.seq, "recordedAt": rec.recorded_at,
                    "ruleset": e.ruleset, "version": e.version, "sha256": e.sha256,
                    "previous": e.previous, "author": rec.author, "authorKey": e.author,
                    "approvers": rec.approvers, "reason": e.reason, "change": e.change,
                    "changes": changes_json(changes),
                })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        outln!(
            "no audit records{}",
            flag.map_or(String::new(), |f| format!(" for {f}"))
        );
    }
    for (_, rec, changes) in &rows {
        let e = &rec.envelope;
        outln!(
            "#{} {} {} v{} sha256 {} by {}{}{}{}",
            rec.seq,
            rec.recorded_at,
            e.ruleset,
            e.version,
            short(&e.sha256),
            rec.author,
            if rec.approvers.is_empty() {
                String::new()
            } else {
                format!(", approved by {}", rec.approvers.join(", "))
            },
            e.reason
                .as_ref()
                .map_or(String::new(), |r| format!(", reason: {r}")),
            e.change
                .as_ref()
                .map_or(String::new(), |c| format!(", change: {c}")),
        );
        for c in changes {
            outln!("    {}", c.summary().replace('\n', "\n    "));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `flagforge audit verify [--trust FILE | --trusted-key KEY…]`: the chain, the signatures
/// (with keys), and that every module on the modules topic has its record. With keys, records
/// not signed by a trusted author are reported and left out: the chain is the chain of
/// verified records, which is the one publishers extend.
pub fn audit_verify(
    config: &flagforge_kafka::KafkaConfig,
    trust: Option<&Trust>,
    trusted: &TrustedKeys,
) -> Result<ExitCode> {
    let keys = trust.map_or_else(|| trusted.clone(), Trust::authors);
    let verifying = !keys.is_empty();
    let raw = audit_records(config)?;
    let all: Vec<Vec<u8>> = raw.iter().map(|r| r.value.clone()).collect();
    // The records the chain is made of, with their offsets (to say where a link breaks).
    let (values, offsets): (Vec<Vec<u8>>, Vec<i64>) = if verifying {
        let (verified, ignored) = verified_audit(&all, &keys);
        if ignored > 0 {
            outln!(
                "warning: {ignored} record(s) on the audit topic are not signed by a trusted author (forged, or another publisher's keys): ignored"
            );
        }
        // `verified_audit` keeps log order, so each kept record is the next raw record with
        // the same bytes.
        let mut rest = raw.iter();
        verified
            .into_iter()
            .map(|(b, _)| {
                let offset = rest.find(|r| r.value == b).map_or(-1, |r| r.offset);
                (b, offset)
            })
            .unzip()
    } else {
        (all, raw.iter().map(|r| r.offset).collect())
    };
    let records = match verify_chain(&values) {
        Ok(r) => r,
        Err(b) => {
            let offset = offsets.get(b.index).copied().unwrap_or(-1);
            outln!(
                "BROKEN LINK at record #{} (offset {offset}): {}",
                b.index,
                b.reason
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut failures = Vec::new();
    if let Some(trust) = trust {
        for r in &records {
            let e = &r.envelope;
            let statement = flagforge_governance::envelope_statement(e);
            for s in e.signatures.iter().filter(|s| s.role == "approver") {
                if !trust
                    .member(&s.key_id)
                    .is_some_and(|m| m.key.verify(&statement, &s.signature))
                {
                    failures.push(format!(
                        "record #{} ({} v{}): the approval by {} does not verify",
                        r.seq, e.ruleset, e.version, s.key_id
                    ));
                }
            }
        }
    }
    // Every module hosts would serve must have its audit record; a record newer than the
    // modules topic is a publish interrupted between its two writes.
    let mut newest: std::collections::BTreeMap<String, Envelope> =
        std::collections::BTreeMap::new();
    for m in flagforge_kafka::read_topic(config, flagforge_kafka::MODULES_TOPIC)? {
        let env = if verifying {
            Envelope::from_record(m.key.as_deref(), &m.value, &keys).ok()
        } else {
            Envelope::decode(&m.value)
                .ok()
                .filter(|e| m.key.as_deref() == Some(e.ruleset.as_bytes()))
        };
        let Some(env) = env else { continue };
        let current = newest
            .get(&env.ruleset)
            .map(|b| (b.position(), b.sha256.as_str()));
        if decide(current, &env) == Decision::Accept {
            newest.insert(env.ruleset.clone(), env);
        }
    }
    for (ruleset, env) in &newest {
        let recorded = records.iter().any(|r| {
            r.envelope.ruleset == *ruleset
                && r.envelope.position() == env.position()
                && r.envelope.sha256 == env.sha256
        });
        if !recorded {
            failures.push(format!(
                "{ruleset} v{} (sha256 {}) is on the modules topic without an audit record",
                env.position(),
                short(&env.sha256)
            ));
        }
        if let Some(r) = interrupted(&records, ruleset, Some(env.position())) {
            outln!(
                "warning: record #{} ({ruleset} v{}) never reached the modules topic: an interrupted publish; publish that module again to complete it",
                r.seq,
                r.envelope.position()
            );
        }
    }
    if !failures.is_empty() {
        for f in &failures {
            outln!("FAILED {f}");
        }
        return Ok(ExitCode::FAILURE);
    }
    outln!(
        "audit chain ok: {} records{}, head {}",
        records.len(),
        if verifying {
            ", signatures verified"
        } else {
            " (signatures not verified: pass --trust or --trusted-key)"
        },
        values
            .last()
            .map_or_else(|| "(empty)".to_owned(), |v| link(v))
    );
    Ok(ExitCode::SUCCESS)
}

/// The rulesets under `path`: itself, or, for a directory holding no rule file but
/// ruleset directories (like `rules-examples/`), each of those.
fn rulesets_under(path: &Path) -> Vec<PathBuf> {
    let yaml = |p: &Path| p.extension().is_some_and(|e| e == "yaml" || e == "yml");
    let Ok(entries) = std::fs::read_dir(path) else {
        return vec![path.to_path_buf()];
    };
    let entries: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    if entries.iter().any(|p| p.is_file() && yaml(p)) {
        return vec![path.to_path_buf()];
    }
    let mut dirs: Vec<PathBuf> = entries
        .into_iter()
        .filter(|d| {
            d.is_dir()
                && std::fs::read_dir(d)
                    .is_ok_and(|rd| rd.filter_map(Result::ok).any(|e| yaml(&e.path())))
        })
        .collect();
    dirs.sort();
    if dirs.is_empty() {
        vec![path.to_path_buf()]
    } else {
        dirs
    }
}

/// `flagforge stale PATH [--today DATE] [--within DAYS] [--json] [--fail-on-expired]`: PATH is
/// a ruleset (directory, rule file or module) or a directory of ruleset directories (one
/// report each; `--json` then prints an array).
pub fn stale(
    path: &Path,
    today: Option<&str>,
    within: i64,
    as_json: bool,
    fail_on_expired: bool,
) -> Result<ExitCode> {
    let today = today.map_or_else(today_utc, str::to_owned);
    let mut reports = Vec::new();
    for dir in rulesets_under(path) {
        let ir = rules_of(&dir)?;
        let Some(report) = flagforge_governance::stale(&ir, &today, within) else {
            bail!("--today `{today}`: expected YYYY-MM-DD");
        };
        reports.push(report);
    }
    if as_json {
        match reports.as_slice() {
            [one] => outln!("{}", serde_json::to_string_pretty(one)?),
            many => outln!("{}", serde_json::to_string_pretty(many)?),
        }
    } else {
        for report in &reports {
            print_stale(report, within);
        }
    }
    let expired = reports.iter().any(|r| !r.expired.is_empty());
    Ok(if fail_on_expired && expired {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_stale(report: &flagforge_governance::StaleReport, within: i64) {
    outln!(
        "ruleset `{}` on {} (expiring: within {} days)",
        report.ruleset,
        report.today,
        within
    );
    let section = |title: &str, rows: Vec<String>| {
        outln!("{title} ({}):", rows.len());
        for r in rows {
            outln!("  {r}");
        }
    };
    section(
        "expired",
        report
            .expired
            .iter()
            .map(|e| {
                format!(
                    "{} ({}, {}) expired {} ({} days ago)",
                    e.flag, e.kind, e.owner, e.expires, -e.days_left
                )
            })
            .collect(),
    );
    section(
        "expiring soon",
        report
            .expiring
            .iter()
            .map(|e| {
                format!(
                    "{} ({}, {}) expires {} (in {} days)",
                    e.flag, e.kind, e.owner, e.expires, e.days_left
                )
            })
            .collect(),
    );
    section(
        "fully rolled out (serves one variant; retirement candidates)",
        report
            .fully_rolled_out
            .iter()
            .map(|r| format!("{} ({}) always serves {}", r.flag, r.owner, r.serves))
            .collect(),
    );
    section(
        "no other flag depends on",
        report
            .unreferenced
            .iter()
            .map(|u| {
                if u.dependents.is_empty() {
                    format!(
                        "{} ({}), no services declared in `dependents`",
                        u.flag, u.owner
                    )
                } else {
                    format!(
                        "{} ({}), read by {}",
                        u.flag,
                        u.owner,
                        u.dependents.join(", ")
                    )
                }
            })
            .collect(),
    );
}

/// Today's date (UTC), `YYYY-MM-DD`.
pub fn today_utc() -> String {
    crate::now_rfc3339()
        .get(..10)
        .unwrap_or("1970-01-01")
        .to_owned()
}
