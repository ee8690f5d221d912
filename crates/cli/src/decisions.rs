//! `flagforge decide`, `verify-decision` and `replay`: decision contexts from the command line.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use flagforge_decision::{decide as decide_flags, now_ms, DecisionContext, Subject};
use flagforge_distribution::{Envelope, KeyPair, PublicKey, TrustedKeys};
use flagforge_protocol::time::{parse_duration, parse_timestamp};
use flagforge_protocol::Value;
use serde_json::{json, Value as Json};

use crate::{load_module, parse_context, with_now};

/// A key file: a public key, or a key pair (its public half).
fn public_key(path: &Path) -> Result<PublicKey> {
    PublicKey::read(path)
        .or_else(|_| KeyPair::read(path).map(|k| k.public()))
        .with_context(|| format!("reading key {}", path.display()))
}

fn trusted(paths: &[PathBuf]) -> Result<TrustedKeys> {
    Ok(TrustedKeys::new(
        paths
            .iter()
            .map(|p| public_key(p))
            .collect::<Result<Vec<_>>>()?,
    ))
}

/// Evaluates `flags` once and prints the signed header value; with `record`, also writes the
/// decision record (context + header) that `replay` checks later.
#[allow(clippy::too_many_arguments)]
pub fn decide(
    module: &Path,
    flags: &str,
    context: &str,
    key: &Path,
    correlation_id: Option<String>,
    ttl: &str,
    version: Option<u64>,
    record: Option<&Path>,
    bind: Option<&str>,
) -> Result<String> {
    let m = load_module(module)?;
    let mut ctx = parse_context(context)?;
    with_now(m.manifest(), &mut ctx, None)?;
    let key = KeyPair::read(key).with_context(|| format!("reading key {}", key.display()))?;
    let ttl_ms = parse_duration(ttl)
        .map(|ns| ns / 1_000_000)
        .with_context(|| format!("--ttl `{ttl}`: expected a duration like 30s, 5m, 1h"))?;
    let flags: Vec<&str> = flags
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .collect();
    if flags.is_empty() {
        bail!("--flags: name at least one flag");
    }
    let cid = correlation_id.unwrap_or_else(|| format!("cid-{}", now_ms()));
    let mut d = decide_flags(&m, version, &flags, &ctx, &cid, now_ms(), ttl_ms)?;
    if let Some(attribute) = bind {
        d.subject = Some(Subject::of(attribute, &ctx).with_context(|| {
            format!("--bind `{attribute}`: the context has no string or integer `{attribute}` to bind the decision to")
        })?);
    }
    let header = d.encode(&key);
    if let Some(path) = record {
        let rec = json!({
            "context": Value::Map(ctx).to_json(),
            "decision": header,
        });
        std::fs::write(path, serde_json::to_string_pretty(&rec)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(header)
}

/// Verifies a header value and returns it decoded as JSON.
pub fn verify(value: &str, keys: &[PathBuf], now: Option<&str>) -> Result<Json> {
    let now = match now {
        Some(t) => parse_timestamp(t)
            .map(|ns| ns / 1_000_000)
            .with_context(|| format!("--now `{t}`: expected an RFC 3339 timestamp"))?,
        None => now_ms(),
    };
    let d = DecisionContext::verify(value, &trusted(keys)?, now)
        .map_err(|e| anyhow::anyhow!("{e} [{}]", e.kind()))?;
    Ok(d.describe().to_json())
}

/// Re-evaluates a decision record against the module with the recorded hash. Returns the
/// report and whether every flag was confirmed.
pub fn replay(
    record: &Path,
    keys: &[PathBuf],
    modules: &[PathBuf],
    snapshot_dir: Option<&Path>,
    brokers: Option<&str>,
) -> Result<(String, bool)> {
    let text = String::from_utf8(crate::read_file(record, crate::MAX_JSON_FILE_BYTES)?)
        .with_context(|| format!("{} is not UTF-8", record.display()))?;
    let rec: Json = serde_json::from_str(&text).context("the record is not JSON")?;
    let header = rec["decision"]
        .as_str()
        .context("the record has no \"decision\" (the header value)")?;
    let ctx = flagforge_protocol::value::context_from_json(&rec["context"])
        .context("the record's \"context\" is not a context object")?;
    // Replays happen after expiry: check the signature and format, not the clock.
    let d = match DecisionContext::verify(header, &trusted(keys)?, i64::MIN) {
        Ok(d) => d,
        Err(e) => {
            return Ok((
                format!(
                "NOT CONFIRMED: the recorded decision context was altered or is not ours: {e} [{}]",
                e.kind()
            ),
                false,
            ))
        }
    };
    let mut out = format!(
        "decision {} made {} by key {}\n",
        d.correlation_id,
        flagforge_decision::rfc3339_ms(d.decided_at_ms),
        d.key_id
    );
    let mut ok = true;
    for (i, r) in d.rulesets.iter().enumerate() {
        let bytes = find_module(&r.sha256, modules, snapshot_dir, brokers)?.with_context(|| {
            format!(
                "no module with sha256 {} (ruleset {}) in --module files, the snapshot directory or the topic history",
                r.sha256, r.name
            )
        })?;
        let host = wasm_host::Host::new(wasm_host::Limits::default())?;
        let m = host.load(&bytes)?;
        out.push_str(&format!(
            "module {} v{} sha256 {}\n",
            r.name,
            r.version.map_or("?".into(), |v| v.to_string()),
            r.sha256
        ));
        for (flag, c) in d.decisions.iter().filter(|(_, c)| c.ruleset == i) {
            let again = m.evaluate(flag, &ctx, false);
            if again.value == c.value && again.variant == c.variant {
                out.push_str(&format!(
                    "  confirmed  {flag} = {}\n",
                    c.variant.as_deref().unwrap_or("-")
                ));
            } else {
                ok = false;
                out.push_str(&format!(
                    "  DIFFERS    {flag}: recorded {} ({}), replay gives {} ({})\n",
                    c.variant.as_deref().unwrap_or("-"),
                    c.value.to_json(),
                    again.variant.as_deref().unwrap_or("-"),
                    again.value.to_json()
                ));
            }
        }
    }
    out.push_str(if ok {
        "CONFIRMED: every recorded decision replays identically\n"
    } else {
        "NOT CONFIRMED: the record does not replay to the recorded decisions\n"
    });
    Ok((out, ok))
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The module bytes with this sha256, from module files, a snapshot directory, or the modules
/// topic's history (every envelope still on the topic).
fn find_module(
    sha256: &str,
    modules: &[PathBuf],
    snapshot_dir: Option<&Path>,
    brokers: Option<&str>,
) -> Result<Option<Vec<u8>>> {
    for p in modules {
        let bytes = crate::read_module(p)?;
        if sha256_hex(&bytes) == sha256 {
            return Ok(Some(bytes));
        }
    }
    if let Some(dir) = snapshot_dir {
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let Ok(bytes) =
                crate::read_file(&entry?.path(), flagforge_distribution::MAX_RECORD_BYTES)
            else {
                continue;
            };
            if let Ok(env) = Envelope::decode(&bytes) {
                if sha256_hex(&env.module) == sha256 {
                    return Ok(Some(env.module));
                }
            }
        }
    }
    if let Some(b) = brokers {
        // The recorded hash is the module's identity: bytes hashing to it are the module,
        // whoever put them on the topic.
        let config = flagforge_kafka::KafkaConfig::new(b);
        for record in flagforge_kafka::read_topic(&config, flagforge_kafka::MODULES_TOPIC)? {
            if let Ok(env) = Envelope::decode(&record.value) {
                if sha256_hex(&env.module) == sha256 {
                    return Ok(Some(env.module));
                }
            }
        }
    }
    Ok(None)
}
