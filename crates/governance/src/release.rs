//! Release planning, pure: what a publisher may build on, and what it publishes next.
//!
//! A publisher reads the modules topic and the audit topic, but acts only on records it has
//! verified (DESIGN: "an unverified record on a topic is counted and ignored, never built
//! upon"): [`Ledger::observe`] runs every modules record through the same check hosts run
//! ([`Envelope::from_record`]: size, decode, record key = ruleset, hash, author signature by a
//! trusted key) and, with a trust file, the policy a governed host applies; [`verified_audit`]
//! keeps only audit records whose envelope a trusted author signed. [`plan`] then decides
//! between "unchanged", "complete an interrupted publish" and "the next version", and
//! [`seal`] attaches approvals and runs the policy check. Kafka and the CLI only move bytes.

use std::collections::{BTreeMap, HashMap};

use flagforge_distribution::{
    decide, Decision, Draft, Envelope, KeyPair, Position, RejectReason, Signature, TrustedKeys,
};

use crate::audit::AuditRecord;
use crate::policy::{self, Refusal, Replaced};
use crate::{
    diff, encode_changes, forbidden_transitions, module_rules, Approval, Change,
    ForbiddenTransition, GovernanceError, Trust,
};

/// Why a release cannot be published; each variant says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// The audit log records a newer version that never reached the modules topic.
    #[error("the audit log records `{ruleset}` version {position} (sha256 {sha256}) but the modules topic never received it: a publish was interrupted; publish that module again to complete it")]
    Interrupted {
        /// Ruleset.
        ruleset: String,
        /// The recorded version.
        position: Position,
        /// The recorded module.
        sha256: String,
    },
    /// The module's compiled rules cannot be read.
    #[error("cannot read the module's compiled rules: {0}")]
    Unreadable(#[source] GovernanceError),
    /// Migration flags would move along transitions their journey forbids.
    #[error("refused: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Forbidden(Vec<ForbiddenTransition>),
    /// No version number is left in this epoch.
    #[error(
        "`{ruleset}` is at version {position}, the last one; nothing can be numbered above it"
    )]
    Exhausted {
        /// Ruleset.
        ruleset: String,
        /// The highest verified version.
        position: Position,
    },
    /// An approval does not fit this release.
    #[error("{0}")]
    Approval(String),
    /// The trust policy refuses the release.
    #[error("refused by the trust policy:\n  {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    Policy(Vec<Refusal>),
    /// The envelope would exceed the record limit.
    #[error("the envelope is {size} bytes; the limit is {limit} bytes")]
    TooLarge {
        /// Encoded size (or the module's size alone, when that is already over).
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Another publisher's record took this version, and hosts serve that one.
    #[error("lost a race: another publisher released version {position} of `{ruleset}` (sha256 {sha256}) right after this one, and hosts serve that; rebuild on top of it and publish again")]
    LostRace {
        /// Ruleset.
        ruleset: String,
        /// The contested version.
        position: Position,
        /// The winner's module.
        sha256: String,
    },
}

/// What the verified records of the modules topic say about one ruleset.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// The envelope hosts serve (the newest verified one by the hosts' ordering rule; with a
    /// trust file, the newest that also passes its policy).
    pub latest: Option<Envelope>,
    /// The highest verified position, served or not: a new version goes above it.
    pub highest: Option<Position>,
}

/// The publisher's verified view of the modules topic, fed records in log order.
#[derive(Debug, Clone)]
pub struct Ledger {
    trusted: TrustedKeys,
    trust: Option<Trust>,
    rulesets: HashMap<String, History>,
    ignored: BTreeMap<&'static str, u64>,
    unknown_keys: BTreeMap<String, (String, Position)>,
}

impl Ledger {
    /// A ledger trusting `trusted` (with a trust file: its authors, and its policy).
    #[must_use]
    pub fn new(trusted: TrustedKeys, trust: Option<Trust>) -> Ledger {
        let trusted = trust.as_ref().map_or(trusted, Trust::authors);
        Ledger {
            trusted,
            trust,
            rulesets: HashMap::new(),
            ignored: BTreeMap::new(),
            unknown_keys: BTreeMap::new(),
        }
    }

    /// Takes one record of the modules topic (in log order). Records that do not verify are
    /// counted by reason and otherwise ignored.
    pub fn observe(&mut self, key: Option<&[u8]>, bytes: &[u8]) -> Result<(), RejectReason> {
        let env = match Envelope::from_record(key, bytes, &self.trusted) {
            Ok(env) => env,
            Err(e) => {
                *self.ignored.entry(e.kind()).or_default() += 1;
                if let (RejectReason::UnknownKey(id), Ok(env)) = (&e, Envelope::decode(bytes)) {
                    let at = env.position();
                    let entry = self
                        .unknown_keys
                        .entry(env.ruleset.clone())
                        .or_insert_with(|| (id.clone(), at));
                    if at > entry.1 {
                        *entry = (id.clone(), at);
                    }
                }
                return Err(e);
            }
        };
        let history = self.rulesets.entry(env.ruleset.clone()).or_default();
        let at = env.position();
        history.highest = Some(history.highest.map_or(at, |h| h.max(at)));
        let current = history.latest.as_ref();
        let ordered =
            decide(current.map(|c| (c.position(), c.sha256.as_str())), &env) == Decision::Accept;
        let admitted = self.trust.as_ref().is_none_or(|trust| {
            policy::check(
                trust,
                &env,
                current.map(|c| Replaced {
                    sha256: &c.sha256,
                    module: &c.module,
                }),
            )
            .is_ok()
        });
        if ordered && admitted {
            history.latest = Some(env);
        }
        Ok(())
    }

    /// What the verified records say about `ruleset`.
    #[must_use]
    pub fn history(&self, ruleset: &str) -> History {
        self.rulesets.get(ruleset).cloned().unwrap_or_default()
    }

    /// Records ignored so far, by reason.
    #[must_use]
    pub fn ignored(&self) -> &BTreeMap<&'static str, u64> {
        &self.ignored
    }

    /// The highest version of `ruleset` signed by a key this publisher does not trust, and
    /// that key: hosts trusting it would serve it, so the publisher says so.
    #[must_use]
    pub fn untrusted_newer(&self, ruleset: &str) -> Option<(&str, Position)> {
        let (key, at) = self.unknown_keys.get(ruleset)?;
        let known = self.rulesets.get(ruleset).and_then(|h| h.highest);
        (known.is_none_or(|k| *at > k)).then_some((key.as_str(), *at))
    }

    /// The keys this ledger verifies against.
    #[must_use]
    pub fn trusted(&self) -> &TrustedKeys {
        &self.trusted
    }

    /// The trust file, if governed.
    #[must_use]
    pub fn trust(&self) -> Option<&Trust> {
        self.trust.as_ref()
    }
}

/// The audit records whose envelope was signed by a trusted author, with their bytes (the
/// chain links records by their bytes), in log order. Everything else (garbage, unsigned or
/// forged records) is returned as a count: it is never built upon.
#[must_use]
pub fn verified_audit(
    records: &[Vec<u8>],
    trusted: &TrustedKeys,
) -> (Vec<(Vec<u8>, AuditRecord)>, usize) {
    let mut out = Vec::new();
    let mut ignored = 0;
    for bytes in records {
        match AuditRecord::decode(bytes) {
            Ok(r) if r.envelope.verify_author(trusted).is_ok() => out.push((bytes.clone(), r)),
            _ => ignored += 1,
        }
    }
    (out, ignored)
}

/// The newest audit record of `ruleset` above what the modules topic serves: a publish
/// interrupted between its two writes (audit record first, then the module).
#[must_use]
pub fn interrupted<'a>(
    records: &'a [AuditRecord],
    ruleset: &str,
    served: Option<Position>,
) -> Option<&'a AuditRecord> {
    records
        .iter()
        .rev()
        .find(|r| r.envelope.ruleset == ruleset && served.is_none_or(|s| r.envelope.position() > s))
}

/// A module to release.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Ruleset name.
    pub ruleset: &'a str,
    /// Module bytes.
    pub module: &'a [u8],
    /// Its sha256 (hex).
    pub sha256: &'a str,
    /// The publisher's clock (Unix milliseconds): the epoch of a new numbering.
    pub now_ms: u64,
    /// When (RFC 3339).
    pub created_at: &'a str,
    /// Why.
    pub reason: Option<&'a str>,
    /// Change reference.
    pub change: Option<&'a str>,
}

/// What to publish.
#[derive(Debug, Clone)]
pub enum Plan {
    /// The topic already serves this module.
    Unchanged {
        /// Its version.
        position: Position,
    },
    /// Complete an interrupted publish: the envelope rebuilt from its audit record (the
    /// module is the request's, which hashes to the recorded sha256).
    Complete(Envelope),
    /// The next version.
    Next {
        /// The draft to sign (version, epoch, previous, changes filled in).
        draft: Draft,
        /// The semantic diff from the version it replaces.
        changes: Vec<Change>,
        /// True when no verified earlier version exists, so a new epoch starts.
        new_epoch: bool,
    },
}

/// Decides what publishing `request` means, from verified records only.
pub fn plan(
    request: Request<'_>,
    history: &History,
    audit: &[AuditRecord],
) -> Result<Plan, ReleaseError> {
    let latest = history.latest.as_ref();
    if let Some(p) = interrupted(audit, request.ruleset, latest.map(Envelope::position)) {
        if p.envelope.sha256 != request.sha256 {
            return Err(ReleaseError::Interrupted {
                ruleset: request.ruleset.to_owned(),
                position: p.envelope.position(),
                sha256: p.envelope.sha256.clone(),
            });
        }
        let mut envelope = p.envelope.clone();
        envelope.module = request.module.to_vec();
        return Ok(Plan::Complete(envelope));
    }
    if let Some(l) = latest.filter(|l| l.sha256 == request.sha256) {
        return Ok(Plan::Unchanged {
            position: l.position(),
        });
    }
    let new_rules = module_rules(request.module).map_err(ReleaseError::Unreadable)?;
    let old_rules = latest
        .map(|l| module_rules(&l.module))
        .transpose()
        .map_err(ReleaseError::Unreadable)?;
    let changes = diff(old_rules.as_ref(), &new_rules);
    let forbidden = forbidden_transitions(&changes, &new_rules);
    if !forbidden.is_empty() {
        return Err(ReleaseError::Forbidden(forbidden));
    }
    let (position, new_epoch) = match history.highest {
        Some(h) => {
            let version = h.version.checked_add(1).ok_or(ReleaseError::Exhausted {
                ruleset: request.ruleset.to_owned(),
                position: h,
            })?;
            (
                Position {
                    epoch: h.epoch,
                    version,
                },
                false,
            )
        }
        None => (
            Position {
                epoch: request.now_ms,
                version: 1,
            },
            true,
        ),
    };
    let draft = Draft {
        ruleset: request.ruleset.to_owned(),
        version: position.version,
        module: request.module.to_vec(),
        created_at: request.created_at.to_owned(),
        reason: request.reason.map(str::to_owned),
        change: request.change.map(str::to_owned),
        previous: latest.map(|l| l.sha256.clone()),
        changes: Some(encode_changes(&changes)),
        epoch: Some(position.epoch),
    };
    Ok(Plan::Next {
        draft,
        changes,
        new_epoch,
    })
}

/// Signs a planned draft, attaches the approvals, checks the trust policy against the version
/// it replaces, and bounds the encoded size. Returns the envelope and its bytes.
pub fn seal(
    draft: Draft,
    key: &KeyPair,
    approvals: &[Approval],
    trust: Option<&Trust>,
    replaced: Option<&Envelope>,
    limit: usize,
) -> Result<(Envelope, Vec<u8>), ReleaseError> {
    if draft.module.len() > limit {
        return Err(ReleaseError::TooLarge {
            size: draft.module.len(),
            limit,
        });
    }
    let mut envelope = Envelope::sign(draft, key);
    for a in approvals {
        a.matches(&envelope).map_err(ReleaseError::Approval)?;
        let signature = a.signature_bytes().ok_or_else(|| {
            ReleaseError::Approval(format!(
                "approval by {}: the signature is not hex",
                a.key_id
            ))
        })?;
        envelope.signatures.push(Signature {
            key_id: a.key_id.clone(),
            role: "approver".into(),
            signature,
        });
    }
    if let Some(trust) = trust {
        let replaced = replaced.map(|l| Replaced {
            sha256: &l.sha256,
            module: &l.module,
        });
        policy::check(trust, &envelope, replaced).map_err(ReleaseError::Policy)?;
    }
    let bytes = envelope.encode();
    if bytes.len() > limit {
        return Err(ReleaseError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    Ok((envelope, bytes))
}
