//! The publish policy, checked identically by `flagforge publish` (before producing) and by
//! every host (on receipt): an envelope must carry its change list; the list must be the diff
//! between the module it replaces and this one (recomputed when the host holds that module);
//! the author must be a trusted author scoped to every changed flag's owner; each changed flag
//! needs as many approvals as its kind requires, from other keys with the approver role and
//! the same scope; and migration states may only move along allowed transitions.
//!
//! What a host cannot check: a host that does not hold the replaced module (a fresh start from
//! the compacted topic, or a host that missed versions) cannot recompute the diff's old side.
//! It checks that every change names the flag as the new module declares it (kind, owner), that
//! retired flags are gone, that author and approvers signed exactly this change list over
//! exactly this predecessor, and the policy on that list. It then relies on those signatures
//! for the claim that no other flag changed.

use std::collections::{BTreeMap, BTreeSet};

use flagforge_distribution::Envelope;
use flagforge_model::ir::RulesetIr;

use crate::approval::{decode_changes, envelope_statement};
use crate::trust::{Role, Trust};
use crate::{diff, forbidden_transitions, module_rules, Change};

/// One reason an envelope is refused, with a metric label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Stable label (`missing_approval`, `out_of_scope`, …).
    pub kind: &'static str,
    /// What is missing or wrong, for people.
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} [{}]", self.message, self.kind)
    }
}

fn refuse(kind: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        kind,
        message: message.into(),
    }
}

/// What a passed check established.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The change list (from the envelope; equal to the recomputed diff when `recomputed`).
    pub changes: Vec<Change>,
    /// Key ids of the valid approvals.
    pub approvers: Vec<String>,
    /// True when the diff was recomputed from the replaced module, false when only its new
    /// side could be checked.
    pub recomputed: bool,
}

/// The module an envelope replaces, as a host or the publisher holds it.
#[derive(Debug, Clone, Copy)]
pub struct Replaced<'a> {
    /// Its sha256 (hex).
    pub sha256: &'a str,
    /// Its bytes.
    pub module: &'a [u8],
}

/// Checks `env` against the policy of `trust`. `replaced` is the module the checker serves (or
/// the publisher found on the topic) for this ruleset, if any. Returns every refusal.
pub fn check(
    trust: &Trust,
    env: &Envelope,
    replaced: Option<Replaced<'_>>,
) -> Result<Checked, Vec<Refusal>> {
    let new = module_rules(&env.module).map_err(|e| {
        vec![refuse(
            "unreadable_rules",
            format!("cannot read the module's rules: {e}"),
        )]
    })?;
    let Some(bytes) = env.changes.as_deref() else {
        return Err(vec![refuse(
            "ungoverned",
            "the envelope carries no change list; this host only accepts governed publishes (flagforge publish --trust)",
        )]);
    };
    let changes = decode_changes(bytes).map_err(|e| {
        vec![refuse(
            "bad_changes",
            format!("the change list does not decode: {e}"),
        )]
    })?;
    let mut refusals = Vec::new();
    let recomputed = match (replaced, env.previous.as_deref()) {
        (Some(r), Some(prev)) if r.sha256 == prev => {
            match module_rules(r.module) {
                Ok(old) => compare(&diff(Some(&old), &new), &changes, &mut refusals),
                Err(e) => refusals.push(refuse(
                    "unreadable_rules",
                    format!("cannot read the replaced module's rules: {e}"),
                )),
            }
            true
        }
        (_, None) => {
            compare(&diff(None, &new), &changes, &mut refusals);
            true
        }
        _ => {
            new_side(&changes, &new, &mut refusals);
            false
        }
    };
    let approvers = signers(trust, env, &mut refusals);
    scope_and_approvals(trust, env, &changes, &approvers, &mut refusals);
    for t in forbidden_transitions(&changes, &new) {
        refusals.push(refuse("forbidden_transition", t.to_string()));
    }
    if refusals.is_empty() {
        Ok(Checked {
            changes,
            approvers,
            recomputed,
        })
    } else {
        Err(refusals)
    }
}

fn compare(actual: &[Change], claimed: &[Change], refusals: &mut Vec<Refusal>) {
    if actual != claimed {
        let names = |v: &[Change]| -> BTreeSet<String> { v.iter().map(Change::summary).collect() };
        let (a, c) = (names(actual), names(claimed));
        let missing: Vec<&String> = a.difference(&c).collect();
        let extra: Vec<&String> = c.difference(&a).collect();
        refusals.push(refuse(
            "diff_mismatch",
            format!(
                "the envelope's change list is not the diff from the replaced module: not listed {missing:?}; listed but not a change {extra:?}"
            ),
        ));
    }
}

fn new_side(changes: &[Change], new: &RulesetIr, refusals: &mut Vec<Refusal>) {
    for c in changes {
        let f = c.flag();
        let declared = new.flags.iter().find(|x| x.key == f.key);
        let ok = match (c, declared) {
            (Change::FlagRetired { .. }, d) => d.is_none(),
            (_, Some(d)) => d.kind == f.kind && d.owner == f.owner,
            (_, None) => false,
        };
        if !ok {
            refusals.push(refuse(
                "diff_mismatch",
                format!(
                    "the change list says `{}`, which this module contradicts",
                    c.summary()
                ),
            ));
        }
    }
}

/// Checks the author and every approval signature; returns the valid approvers' key ids.
fn signers(trust: &Trust, env: &Envelope, refusals: &mut Vec<Refusal>) -> Vec<String> {
    match trust.member(&env.author) {
        None => refusals.push(refuse(
            "unknown_author",
            format!("author key {} is not in the trust file", env.author),
        )),
        Some(m) if !m.roles.contains(&Role::Author) => refusals.push(refuse(
            "not_an_author",
            format!("{} ({}) may not author changes", m.identity, env.author),
        )),
        Some(_) => {}
    }
    let statement = envelope_statement(env);
    let mut approvers = Vec::new();
    for sig in env.signatures.iter().filter(|s| s.role == "approver") {
        let Some(m) = trust.member(&sig.key_id) else {
            refusals.push(refuse(
                "bad_approval",
                format!(
                    "approval by key {} which is not in the trust file",
                    sig.key_id
                ),
            ));
            continue;
        };
        if !m.roles.contains(&Role::Approver) {
            refusals.push(refuse(
                "bad_approval",
                format!("{} ({}) may not approve", m.identity, sig.key_id),
            ));
        } else if sig.key_id == env.author {
            refusals.push(refuse(
                "bad_approval",
                format!("{} approved their own change", m.identity),
            ));
        } else if !m.key.verify(&statement, &sig.signature) {
            refusals.push(refuse(
                "bad_approval",
                format!(
                    "the approval by {} ({}) does not verify for this module and diff",
                    m.identity, sig.key_id
                ),
            ));
        } else if !approvers.contains(&sig.key_id) {
            approvers.push(sig.key_id.clone());
        }
    }
    approvers
}

fn scope_and_approvals(
    trust: &Trust,
    env: &Envelope,
    changes: &[Change],
    approvers: &[String],
    refusals: &mut Vec<Refusal>,
) {
    // Per flag: every owner and kind it had or has in this change.
    let mut flags: BTreeMap<&str, (BTreeSet<String>, BTreeSet<&'static str>)> = BTreeMap::new();
    for c in changes {
        let f = c.flag();
        let entry = flags.entry(f.key.as_str()).or_default();
        entry.0.insert(f.owner.clone());
        entry.1.insert(f.kind.as_str());
        if let Change::FlagMetadataChanged { field, from, .. } = c {
            match (field.as_str(), from) {
                ("owner", Some(o)) => {
                    entry.0.insert(o.clone());
                }
                ("kind", Some(k)) => {
                    if let Some(kind) = flagforge_protocol::FlagKind::ALL
                        .into_iter()
                        .map(flagforge_protocol::FlagKind::as_str)
                        .find(|x| x == k)
                    {
                        entry.1.insert(kind);
                    }
                }
                _ => {}
            }
        }
    }
    let author = trust.member(&env.author);
    for (flag, (owners, kinds)) in flags {
        let owners_text = owners.iter().cloned().collect::<Vec<_>>().join(", ");
        if let Some(a) = author {
            for o in owners.iter().filter(|o| !a.covers(o)) {
                refusals.push(refuse(
                    "out_of_scope",
                    format!(
                        "{} ({}) may not change {flag}, owned by {o} (the key may change flags of: {})",
                        a.identity,
                        env.author,
                        a.owners.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        let (needed, kind) = kinds
            .iter()
            .map(|k| (trust.approvals_needed_for(k), *k))
            .max()
            .unwrap_or((0, "release"));
        let valid = approvers
            .iter()
            .filter(|id| {
                trust
                    .member(id)
                    .is_some_and(|m| owners.iter().all(|o| m.covers(o)))
            })
            .count() as u32;
        if valid < needed {
            refusals.push(refuse(
                "missing_approval",
                format!(
                    "{flag} ({} flag of {owners_text}) needs {needed} approval(s) by an approver for {owners_text} other than the author; it has {valid}",
                    kind
                ),
            ));
        }
    }
}
