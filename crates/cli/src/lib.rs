//! The `flagforge` command line: check, build, inspect, eval, test and the demo.
//!
//! Every command is a function here so tests can call it; `main.rs` only parses arguments.

/// `println!` that ends the process quietly when stdout is closed (`flagforge … | head`).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

mod bench;
pub mod conformance;
mod decisions;
mod demo;
mod distribution_demo;
mod governance;
mod import;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};
use flagforge_protocol::{value::context_from_json, Context, Manifest, Value};
use serde_json::{json, Map as JsonMap, Value as Json};
use wasm_host::{Host, Limits, LoadedModule};

/// flagforge: feature-flag rules compiled to one sandboxed WebAssembly module.
#[derive(Debug, Parser)]
#[command(name = "flagforge", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate rule files; exits non-zero with file:line:col errors.
    Check {
        /// A ruleset directory or a single rule file.
        path: PathBuf,
    },
    /// Compile a ruleset into a module; prints its sha256 and size.
    Build {
        /// A ruleset directory or a single rule file.
        path: PathBuf,
        /// Where to write the module.
        #[arg(short, long)]
        out: PathBuf,
        /// Build for an audience (e.g. `browser`): only flags marked `expose: [AUDIENCE]`,
        /// membership sets as keyed digests, ruleset named `NAME.AUDIENCE`.
        #[arg(long)]
        audience: Option<String>,
    },
    /// Print a module's manifest as JSON.
    Inspect {
        /// The module.
        module: PathBuf,
    },
    /// Evaluate flags of a module for a context; prints JSON.
    Eval {
        /// The module.
        module: PathBuf,
        /// The context: inline JSON, or @file.json.
        #[arg(long, default_value = "{}")]
        context: String,
        /// Evaluate only this flag (default: every flag, as an object keyed by flag key).
        #[arg(long)]
        flag: Option<String>,
        /// Add which rule and conditions decided each result.
        #[arg(long)]
        explain: bool,
        /// Time to evaluate at (RFC 3339). When the schema declares `now: timestamp` and the
        /// context has none, the current time is used.
        #[arg(long)]
        now: Option<String>,
    },
    /// Run the test cases in DIR/tests through the module in wasmtime AND natively.
    Test {
        /// A ruleset directory.
        path: PathBuf,
    },
    /// Measure evaluation cost for a ruleset: native vs wasmtime ns/op, one flag and all
    /// flags, and module compile/load time.
    Bench {
        /// A ruleset directory, a rule file, or a module (.wasm).
        path: PathBuf,
        /// The context: inline JSON, or @file.json (default: the first demo scenario or test).
        #[arg(long)]
        context: Option<String>,
        /// Measure only this flag (default: every flag).
        #[arg(long)]
        flag: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Decide flags once for a workflow: print the signed decision context header value.
    Decide {
        /// The module.
        module: PathBuf,
        /// Flags to decide, comma-separated.
        #[arg(long)]
        flags: String,
        /// The context: inline JSON, or @file.json.
        #[arg(long)]
        context: String,
        /// The decider's key pair (from `flagforge keygen`).
        #[arg(long)]
        key: PathBuf,
        /// The workflow's correlation id (default: generated).
        #[arg(long)]
        correlation_id: Option<String>,
        /// How long downstream services accept the decision.
        #[arg(long, default_value = "15m")]
        ttl: String,
        /// The module's published version, recorded in the context.
        #[arg(long)]
        version: Option<u64>,
        /// Also write a decision record (context + header) for `flagforge replay`.
        #[arg(long)]
        record: Option<PathBuf>,
        /// Bind the decision to this context attribute's value (the targeting key, e.g.
        /// `customer_id`): downstream hosts honour it only for requests with the same value.
        #[arg(long)]
        bind: Option<String>,
    },
    /// Verify a decision context header value; print it as JSON or fail with the reason.
    VerifyDecision {
        /// The header value.
        value: String,
        /// A trusted decider key (public key or key pair file; repeatable for rotation).
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// Verify as of this instant instead of now (RFC 3339).
        #[arg(long)]
        now: Option<String>,
    },
    /// Re-evaluate a decision record against the module with the recorded hash.
    Replay {
        /// The record (JSON: {"context": …, "decision": header value}).
        record: PathBuf,
        /// A trusted decider key (repeatable).
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// Module files to search for the recorded hash (repeatable).
        #[arg(long = "module")]
        modules: Vec<PathBuf>,
        /// A host's snapshot directory to search.
        #[arg(long)]
        snapshot_dir: Option<PathBuf>,
        /// Search the modules topic's history on this broker.
        #[arg(long)]
        brokers: Option<String>,
    },
    /// Create an Ed25519 key pair for signing modules: DIR/flagforge.key and DIR/flagforge.pub.
    Keygen {
        /// Directory to write the key files into (an existing secret key is never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a module and publish it to the compacted modules topic as the ruleset's next version.
    Publish {
        /// The module.
        module: PathBuf,
        /// Kafka bootstrap servers.
        #[arg(long)]
        brokers: String,
        /// The signing key (a `flagforge keygen` secret key file).
        #[arg(long)]
        key: PathBuf,
        /// Why this change.
        #[arg(long)]
        reason: Option<String>,
        /// Change reference (ticket, pull request).
        #[arg(long)]
        change: Option<String>,
        /// librdkafka setting passed through, e.g. `-X security.protocol=ssl` (repeatable).
        #[arg(short = 'X', value_name = "KEY=VALUE")]
        settings: Vec<String>,
        /// A trust file: refuse what its policy does not allow (owner scopes, approvals), as
        /// hosts started with it will.
        #[arg(long)]
        trust: Option<PathBuf>,
        /// An approval file from `flagforge approve` (repeatable; MODULE.approval-*.json next
        /// to the module are picked up too).
        #[arg(long = "approval")]
        approvals: Vec<PathBuf>,
        /// A public key whose releases on the topic count when numbering (repeatable; give it
        /// the keys hosts trust). The signing key always counts; with --trust, its authors.
        #[arg(long = "trusted-key", conflicts_with = "trust")]
        trusted_keys: Vec<PathBuf>,
    },
    /// Semantic diff between two versions (modules or rule sources): domain events per flag.
    Diff {
        /// The older version: a module (.wasm), a ruleset directory or a rule file.
        old: PathBuf,
        /// The newer version.
        new: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Approve a module: sign its diff against the version it replaces (a detached approval
    /// file that `flagforge publish` attaches).
    Approve {
        /// The module to approve.
        module: PathBuf,
        /// The approver's key pair (from `flagforge keygen`).
        #[arg(long)]
        key: PathBuf,
        /// Diff against the newest version on this broker's modules topic.
        #[arg(long, conflicts_with_all = ["against", "first"])]
        brokers: Option<String>,
        /// Diff against this module file.
        #[arg(long, conflicts_with = "first")]
        against: Option<PathBuf>,
        /// Approve the ruleset's first version.
        #[arg(long)]
        first: bool,
        /// With --brokers: the trust file hosts use, so the version diffed against is the one
        /// governed hosts serve.
        #[arg(long)]
        trust: Option<PathBuf>,
        /// With --brokers and no trust file: a key whose releases on the topic are trusted
        /// (repeatable).
        #[arg(long = "trusted-key", conflicts_with = "trust")]
        trusted_keys: Vec<PathBuf>,
        /// Where to write the approval (default: MODULE.approval-KEYID.json).
        #[arg(short, long)]
        out: Option<PathBuf>,
        /// librdkafka setting passed through (repeatable).
        #[arg(short = 'X', value_name = "KEY=VALUE")]
        settings: Vec<String>,
    },
    /// The audit trail: one hash-chained record per publish on the audit topic.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Lifecycle report: expired and expiring flags, fully rolled-out flags, flags nothing
    /// depends on.
    Stale {
        /// A ruleset directory, a rule file or a module.
        path: PathBuf,
        /// The day to report for (YYYY-MM-DD; default: today, UTC).
        #[arg(long)]
        today: Option<String>,
        /// Report flags expiring within this many days.
        #[arg(long, default_value_t = 30)]
        within: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Exit non-zero when a flag has expired (a CI gate).
        #[arg(long)]
        fail_on_expired: bool,
    },
    /// Serve modules over HTTP (OFREP, module download, metrics), kept current from Kafka and
    /// started from the snapshot directory.
    Host {
        /// Kafka bootstrap servers (omit to serve the snapshot directory only).
        #[arg(long)]
        brokers: Option<String>,
        /// A trusted public key file (repeatable).
        #[arg(
            long = "trusted-key",
            required_unless_present = "trust",
            conflicts_with = "trust"
        )]
        trusted_keys: Vec<PathBuf>,
        /// Where the last good envelope per ruleset is kept.
        #[arg(long)]
        snapshot_dir: PathBuf,
        /// HTTP listen address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Rulesets this host must serve before it reports ready (repeatable).
        #[arg(long = "ruleset")]
        rulesets: Vec<String>,
        /// Let browser pages from these origins call the host (CORS on OFREP, module
        /// downloads and event streams), e.g. `https://shop.example`, a comma-separated list,
        /// or `*`. Serve browser-audience modules only from a host reachable by browsers.
        #[arg(long)]
        cors_origin: Option<String>,
        /// How OFREP answers a failed evaluation: `spec` (status 400/404/500 with a
        /// top-level `errorCode`: SDKs run error hooks and return the caller's default) or
        /// `fallback` (200 with the flag's `on_error` variant, the code in `metadata`).
        #[arg(long, value_enum, default_value = "spec")]
        ofrep_errors: OfrepErrorsArg,
        /// A trusted decider key: OFREP requests carrying a decision context (header
        /// `flagforge-decision`) signed by it get the carried answers (repeatable).
        #[arg(long = "decision-key")]
        decision_keys: Vec<PathBuf>,
        /// librdkafka setting passed through (repeatable).
        #[arg(short = 'X', value_name = "KEY=VALUE")]
        settings: Vec<String>,
        /// A trust file: only envelopes its policy allows are served (its authors replace
        /// --trusted-key).
        #[arg(long)]
        trust: Option<PathBuf>,
        /// Compile every module at load instead of keeping native code in
        /// `SNAPSHOT_DIR/compiled` (the cache makes restarts skip compilation).
        #[arg(long)]
        no_compiled_cache: bool,
        /// Most HTTP connections open at once; more are closed on accept.
        #[arg(long, default_value_t = 4096)]
        http_max_connections: usize,
        /// Time a client has to send a request's headers (e.g. 10s, 500ms).
        #[arg(long, default_value = "10s", value_parser = parse_duration_arg)]
        http_header_timeout: std::time::Duration,
        /// Time a client has to send a request's body.
        #[arg(long, default_value = "10s", value_parser = parse_duration_arg)]
        http_body_timeout: std::time::Duration,
        /// A connection that moves no byte for this long is closed.
        #[arg(long, default_value = "60s", value_parser = parse_duration_arg)]
        http_idle_timeout: std::time::Duration,
        /// Largest request body in bytes (refused from `Content-Length` before reading).
        #[arg(long, default_value_t = 1024 * 1024)]
        http_max_body_bytes: usize,
    },
    /// Translate another flag system's definitions into a rule file (checked before it is
    /// written): `flagforge import flagd FLAGS.json -o DIR`.
    Import {
        #[command(subcommand)]
        from: import::From,
    },
    /// Build the examples and show decisions for realistic contexts (the main job).
    Demo {
        /// The examples directory.
        #[arg(long, default_value = "rules-examples")]
        examples: PathBuf,
        /// Run the distribution part against this broker instead of the in-process mock.
        #[arg(long)]
        brokers: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Print the publishes recorded, with their changes.
    Log {
        /// Kafka bootstrap servers.
        #[arg(long)]
        brokers: String,
        /// Only records changing this flag (and only its changes).
        #[arg(long)]
        flag: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// librdkafka setting passed through (repeatable).
        #[arg(short = 'X', value_name = "KEY=VALUE")]
        settings: Vec<String>,
    },
    /// Walk the hash chain and report the first broken link; with a trust file also verify
    /// every signature; check every module on the modules topic has its record.
    Verify {
        /// Kafka bootstrap servers.
        #[arg(long)]
        brokers: String,
        /// The trust file (verifies author and approval signatures).
        #[arg(long)]
        trust: Option<PathBuf>,
        /// A trusted author key, without a trust file (repeatable).
        #[arg(long = "trusted-key", conflicts_with = "trust")]
        trusted_keys: Vec<PathBuf>,
        /// librdkafka setting passed through (repeatable).
        #[arg(short = 'X', value_name = "KEY=VALUE")]
        settings: Vec<String>,
    },
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Check { path } => check(&path),
        Command::Import { from } => import::run(from),
        Command::Build {
            path,
            out,
            audience,
        } => build(&path, &out, audience.as_deref()),
        Command::Inspect { module } => {
            outln!("{}", serde_json::to_string_pretty(&inspect(&module)?)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval {
            module,
            context,
            flag,
            explain,
            now,
        } => {
            let out = eval(&module, &context, flag.as_deref(), explain, now.as_deref())?;
            outln!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Test { path } => {
            let report = conformance::run_dir(&path)?;
            report.print();
            Ok(if report.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Bench {
            path,
            context,
            flag,
            json,
        } => {
            let report = bench::run(&path, context.as_deref(), flag.as_deref())?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                outln!("{}", bench::table(&report).trim_end());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Decide {
            module,
            flags,
            context,
            key,
            correlation_id,
            ttl,
            version,
            record,
            bind,
        } => {
            let header = decisions::decide(
                &module,
                &flags,
                &context,
                &key,
                correlation_id,
                &ttl,
                version,
                record.as_deref(),
                bind.as_deref(),
            )?;
            outln!("{header}");
            Ok(ExitCode::SUCCESS)
        }
        Command::VerifyDecision { value, keys, now } => {
            match decisions::verify(&value, &keys, now.as_deref()) {
                Ok(json) => {
                    outln!("{}", serde_json::to_string_pretty(&json)?);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("rejected: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Replay {
            record,
            keys,
            modules,
            snapshot_dir,
            brokers,
        } => {
            let (report, ok) = decisions::replay(
                &record,
                &keys,
                &modules,
                snapshot_dir.as_deref(),
                brokers.as_deref(),
            )?;
            outln!("{}", report.trim_end());
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Keygen { out } => {
            let key = flagforge_distribution::KeyPair::generate()?;
            key.write(&out)?;
            outln!("key id {}", key.public().id());
            outln!("secret {}", out.join("flagforge.key").display());
            outln!("public {}", out.join("flagforge.pub").display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Publish {
            module,
            brokers,
            key,
            reason,
            change,
            settings,
            trust,
            approvals,
            trusted_keys,
        } => publish(
            &module,
            &brokers,
            &key,
            reason,
            change,
            &settings,
            trust.as_deref(),
            &approvals,
            &read_keys(&trusted_keys)?,
        ),
        Command::Diff { old, new, json } => governance::diff_cmd(&old, &new, json),
        Command::Approve {
            module,
            key,
            brokers,
            against,
            first,
            trust,
            trusted_keys,
            out,
            settings,
        } => {
            let against = match (brokers, against, first) {
                (Some(b), _, _) => governance::Against::Topic(
                    kafka_config(&b, &settings)?,
                    trust.as_deref().map(governance::read_trust).transpose()?,
                    read_keys(&trusted_keys)?,
                ),
                (_, Some(m), _) => governance::Against::Module(m),
                (_, _, true) => governance::Against::First,
                _ => {
                    bail!("say what the module replaces: --brokers, --against OLD.wasm or --first")
                }
            };
            governance::approve(&module, &key, against, out)
        }
        Command::Audit { command } => match command {
            AuditCommand::Log {
                brokers,
                flag,
                json,
                settings,
            } => governance::audit_log(&kafka_config(&brokers, &settings)?, flag.as_deref(), json),
            AuditCommand::Verify {
                brokers,
                trust,
                trusted_keys,
                settings,
            } => {
                let trust = trust.as_deref().map(governance::read_trust).transpose()?;
                governance::audit_verify(
                    &kafka_config(&brokers, &settings)?,
                    trust.as_ref(),
                    &read_keys(&trusted_keys)?,
                )
            }
        },
        Command::Stale {
            path,
            today,
            within,
            json,
            fail_on_expired,
        } => governance::stale(&path, today.as_deref(), within, json, fail_on_expired),
        Command::Host {
            brokers,
            trusted_keys,
            snapshot_dir,
            listen,
            rulesets,
            cors_origin,
            ofrep_errors,
            decision_keys,
            settings,
            no_compiled_cache,
            trust,
            http_max_connections,
            http_header_timeout,
            http_body_timeout,
            http_idle_timeout,
            http_max_body_bytes,
        } => host(flagforge_daemon::DaemonConfig {
            kafka: brokers.map(|b| kafka_config(&b, &settings)).transpose()?,
            trusted: read_keys(&trusted_keys)?,
            snapshot_dir,
            listen,
            rulesets,
            cors_origin,
            ofrep_errors: match ofrep_errors {
                OfrepErrorsArg::Spec => flagforge_daemon::OfrepErrors::Spec,
                OfrepErrorsArg::Fallback => flagforge_daemon::OfrepErrors::Fallback,
            },
            decision_keys: read_keys(&decision_keys)?,
            compiled_cache: !no_compiled_cache,
            trust: trust.as_deref().map(governance::read_trust).transpose()?,
            http: flagforge_daemon::HttpLimits {
                max_connections: http_max_connections,
                header_timeout: http_header_timeout,
                body_timeout: http_body_timeout,
                idle_timeout: http_idle_timeout,
                max_body_bytes: http_max_body_bytes,
            },
        }),
        Command::Demo { examples, brokers } => {
            demo::run(&examples)?;
            distribution_demo::run(&examples, brokers.as_deref())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `flagforge host --ofrep-errors`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum OfrepErrorsArg {
    /// Status and top-level `errorCode` as the OFREP specification defines.
    Spec,
    /// 200 with the flag's `on_error` variant; the code in `metadata`.
    Fallback,
}

/// Refuses a module nobody could publish: above the envelope limit of `flagforge publish`.
fn publishable(module: &[u8]) -> Result<(), String> {
    let limit = flagforge_protocol::limits::MAX_PUBLISH_BYTES;
    if module.len() > limit {
        return Err(format!(
            "error: the module would be {} bytes; the limit for a module that can be published is {limit} bytes (the envelope `flagforge publish` produces; hosts load at most {} bytes)",
            module.len(),
            flagforge_protocol::limits::MAX_MODULE_BYTES
        ));
    }
    Ok(())
}

fn check(path: &Path) -> Result<ExitCode> {
    match flagforge_compiler::compile_path(path)
        .map_err(|e| e.to_string())
        .and_then(|c| {
            publishable(&c.module)?;
            Ok(c.ir)
        }) {
        Ok(ir) => {
            outln!(
                "ok: ruleset `{}`: {} flags, {} context attributes",
                ir.name,
                ir.flags.len(),
                ir.schema.len()
            );
            let today = governance::today_utc();
            if let Some(report) = flagforge_governance::stale(&ir, &today, 0) {
                for e in &report.expired {
                    eprintln!(
                        "warning: flag `{}` ({}) expired on {} ({} days ago): retire it or move its expiry",
                        e.flag, e.owner, e.expires, -e.days_left
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn build(path: &Path, out: &Path, audience: Option<&str>) -> Result<ExitCode> {
    let compiled = match flagforge_compiler::compile_path(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let compiled = match audience {
        None => compiled,
        Some(a) => match flagforge_compiler::compile_audience(&compiled, a) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::FAILURE);
            }
        },
    };
    if let Err(e) = publishable(&compiled.module) {
        eprintln!("{e}");
        return Ok(ExitCode::FAILURE);
    }
    std::fs::write(out, &compiled.module).with_context(|| format!("writing {}", out.display()))?;
    outln!(
        "built ruleset `{}` ({} flags) -> {}",
        compiled.ir.name,
        compiled.ir.flags.len(),
        out.display()
    );
    outln!("sha256 {}", compiled.sha256);
    outln!("size {} bytes", compiled.module.len());
    Ok(ExitCode::SUCCESS)
}

/// Public key files as a trusted set.
fn read_keys(paths: &[PathBuf]) -> Result<flagforge_distribution::TrustedKeys> {
    Ok(flagforge_distribution::TrustedKeys::new(
        paths
            .iter()
            .map(|p| flagforge_distribution::PublicKey::read(p))
            .collect::<Result<Vec<_>, _>>()?,
    ))
}

/// A duration argument: `500ms`, `10s`, `5m`, `1h`.
fn parse_duration_arg(text: &str) -> Result<std::time::Duration, String> {
    flagforge_protocol::time::parse_duration(text)
        .and_then(|ns| u64::try_from(ns).ok())
        .map(std::time::Duration::from_nanos)
        .ok_or_else(|| format!("`{text}`: expected a duration like 500ms, 10s, 5m"))
}

fn kafka_config(brokers: &str, settings: &[String]) -> Result<flagforge_kafka::KafkaConfig> {
    let mut config = flagforge_kafka::KafkaConfig::new(brokers);
    for s in settings {
        let (k, v) = s
            .split_once('=')
            .with_context(|| format!("-X `{s}`: expected KEY=VALUE"))?;
        config.extra.push((k.to_owned(), v.to_owned()));
    }
    Ok(config)
}

fn host(config: flagforge_daemon::DaemonConfig) -> Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let running = flagforge_daemon::start(config).await?;
        eprintln!("flagforge host: listening on http://{}", running.addr);
        tokio::signal::ctrl_c().await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::too_many_arguments)]
fn publish(
    module: &Path,
    brokers: &str,
    key: &Path,
    reason: Option<String>,
    change: Option<String>,
    settings: &[String],
    trust: Option<&Path>,
    approval_files: &[PathBuf],
    trusted: &flagforge_distribution::TrustedKeys,
) -> Result<ExitCode> {
    let trust = trust.map(governance::read_trust).transpose()?;
    let approvals = governance::approvals_for(module, approval_files)?;
    let key = flagforge_distribution::KeyPair::read(key)?;
    // Never publish what a host would refuse: validate and read the ruleset name first.
    let bytes = read_module(module)?;
    let loaded = Host::new(Limits::default())?
        .load(&bytes)
        .with_context(|| format!("loading {}", module.display()))?;
    let publisher = flagforge_kafka::Publisher::new(kafka_config(brokers, settings)?)?
        .trusting(trusted.clone());
    let created_at = now_rfc3339();
    let runtime = tokio::runtime::Runtime::new()?;
    let ruleset = loaded.manifest().ruleset.clone();
    let release = flagforge_kafka::Release {
        ruleset: ruleset.clone(),
        module: bytes,
        created_at,
        reason,
        change,
        approvals,
    };
    let publisher = match trust {
        Some(t) => publisher.governed(t),
        None => publisher,
    };
    let published = match runtime.block_on(publisher.release(release, &key)) {
        Ok(p) => p,
        Err(flagforge_kafka::KafkaError::Release(why)) => {
            eprintln!("refused: {why}");
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e.into()),
    };
    for (reason, n) in &published.ignored {
        eprintln!(
            "note: {n} record(s) on the modules topic ignored ({reason}): not verified, never built upon"
        );
    }
    if let Some((key_id, at)) = &published.untrusted_newer {
        eprintln!(
            "warning: the topic holds `{ruleset}` version {at} signed by key {key_id}, which this publisher does not trust; hosts that trust it serve that version and will refuse this one. Pass that key with --trusted-key if it is legitimate"
        );
    }
    if published.new_epoch {
        eprintln!(
            "note: no verified earlier version of `{ruleset}` on the modules topic (a first publish, or a broker that lost its data): numbering starts over at 1 in a new epoch ({}), which hosts serving any older version accept",
            published.epoch
        );
    }
    if published.recovered {
        outln!(
            "completed an interrupted publish: ruleset `{ruleset}` version {} (sha256 {}) was in the audit log but not on the modules topic; it is now",
            published.version,
            published.sha256
        );
        return Ok(ExitCode::SUCCESS);
    }
    if published.unchanged {
        outln!(
            "unchanged: ruleset `{ruleset}` version {} already holds sha256 {}",
            published.version,
            published.sha256
        );
    } else {
        outln!(
            "published ruleset `{ruleset}` version {} (sha256 {}) signed by {}{}",
            published.version,
            published.sha256,
            key.public().id(),
            published.record.map_or(String::new(), |r| format!(
                ", at {} partition {} offset {}",
                flagforge_kafka::MODULES_TOPIC,
                r.partition,
                r.offset
            ))
        );
        for c in &published.changes {
            outln!("  {}", c.summary().replace('\n', "\n  "));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The current time as RFC 3339 (UTC, whole seconds).
pub(crate) fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    flagforge_protocol::time::format_timestamp(secs * 1_000_000_000)
}

/// Reads a file of at most `limit` bytes, checking the size before reading (`/dev/zero`, a
/// 50 GB file and a FIFO are refused at the bound, with the bound in the message).
pub fn read_file(path: &Path, limit: usize) -> Result<Vec<u8>> {
    flagforge_distribution::read_bounded(path, limit)
        .with_context(|| format!("reading {}", path.display()))
}

/// Reads a module file (at most the size a host loads).
pub fn read_module(path: &Path) -> Result<Vec<u8>> {
    read_file(path, flagforge_protocol::limits::MAX_MODULE_BYTES)
}

/// Largest JSON input read from a file (a context, a decision record, an approval).
pub const MAX_JSON_FILE_BYTES: usize = 4 * 1024 * 1024;

/// Loads a module file into a default host.
pub fn load_module(path: &Path) -> Result<LoadedModule> {
    let bytes = read_module(path)?;
    let host = Host::new(Limits::default())?;
    host.load(&bytes)
        .with_context(|| format!("loading {}", path.display()))
}

/// The manifest of a module file as JSON (what `flagforge inspect` prints).
pub fn inspect(path: &Path) -> Result<Json> {
    let module = load_module(path)?;
    Ok(manifest_json(
        module.manifest(),
        &module.sha256_hex(),
        module.size(),
    ))
}

fn manifest_json(m: &Manifest, sha256: &str, size: usize) -> Json {
    let flags: Vec<Json> = m
        .flags
        .iter()
        .map(|f| {
            let variants: JsonMap<String, Json> = f
                .variants
                .iter()
                .map(|v| (v.name.clone(), v.value.to_json()))
                .collect();
            let mut o = json!({
                "key": f.key,
                "kind": f.kind.as_str(),
                "owner": f.owner,
                "expires": f.expires,
                "description": f.description,
                "variants": variants,
                "default": f.default,
                "on_error": f.on_error,
                "static": f.is_static,
                "reads": f.reads,
                "propagation": f.propagation.as_str(),
            });
            if let Some(obj) = o.as_object_mut() {
                if !f.states.is_empty() {
                    obj.insert("states".into(), json!(f.states));
                }
                if !f.prerequisites.is_empty() {
                    obj.insert("prerequisites".into(), json!(f.prerequisites));
                }
                if !f.metadata.is_empty() {
                    let meta: JsonMap<String, Json> = f
                        .metadata
                        .iter()
                        .map(|(k, v)| (k.clone(), v.to_json()))
                        .collect();
                    obj.insert("metadata".into(), Json::Object(meta));
                }
                if f.lifecycle != flagforge_protocol::Lifecycle::default() {
                    obj.insert(
                        "lifecycle".into(),
                        serde_json::to_value(&f.lifecycle).unwrap_or(Json::Null),
                    );
                }
            }
            o
        })
        .collect();
    json!({
        "ruleset": m.ruleset,
        "sha256": sha256,
        "size": size,
        "abi_version": m.abi_version,
        "compiler": m.compiler,
        "targeting_key": m.targeting_key,
        "context": m.context.iter().map(|a| (a.name.clone(), Json::String(a.ty.clone()))).collect::<JsonMap<_, _>>(),
        "flags": flags,
    })
}

/// Parses a `--context` argument: inline JSON or `@file`.
pub fn parse_context(arg: &str) -> Result<Context> {
    let text = match arg.strip_prefix('@') {
        Some(path) => String::from_utf8(read_file(Path::new(path), MAX_JSON_FILE_BYTES)?)
            .with_context(|| format!("context file {path} is not UTF-8"))?,
        None => arg.to_owned(),
    };
    let json: Json = serde_json::from_str(&text).context("context is not valid JSON")?;
    Ok(context_from_json(&json)?)
}

/// Adds `now` when the schema declares it as a timestamp and the context lacks it.
pub fn with_now(manifest: &Manifest, ctx: &mut Context, now: Option<&str>) -> Result<()> {
    if let Some(now) = now {
        if evaluator_core::time::parse_timestamp(now).is_none() {
            bail!("--now `{now}` is not an RFC 3339 timestamp");
        }
        ctx.insert("now".into(), Value::String(now.to_owned()));
    }
    manifest.fill_now(ctx, now_rfc3339);
    Ok(())
}

/// What `flagforge eval` prints.
pub fn eval(
    module: &Path,
    context: &str,
    flag: Option<&str>,
    explain: bool,
    now: Option<&str>,
) -> Result<Json> {
    let module = load_module(module)?;
    let mut ctx = parse_context(context)?;
    with_now(module.manifest(), &mut ctx, now)?;
    let float = |key: &str| module.manifest().flag(key).is_some_and(|f| f.float);
    Ok(match flag {
        Some(key) => module.evaluate(key, &ctx, explain).to_json(float(key)),
        None => Json::Object(
            module
                .evaluate_all(&ctx, explain)
                .iter()
                .map(|r| (r.key.clone(), r.to_json(float(&r.key))))
                .collect(),
        ),
    })
}
