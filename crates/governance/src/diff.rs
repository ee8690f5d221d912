//! The semantic diff between two compiled rulesets: domain events per flag, computed from the
//! compiled rules (so reformatting or reordering a file is no change), and the migration
//! journeys those events take.

use std::collections::{BTreeMap, BTreeSet};

use flagforge_model::ir::{FlagIr, RulesetIr};
use flagforge_protocol::FlagKind;
use serde::{Deserialize, Serialize};

use crate::render::{self, RuleView};

/// The flag an event is about, as the newer version declares it (the older one for
/// [`Change::FlagRetired`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagRef {
    /// Flag key.
    pub key: String,
    /// Kind.
    pub kind: FlagKind,
    /// Owning team.
    pub owner: String,
}

/// One rule's change: the old and the new rule (`None` when added or removed), each as
/// `rule N: when … serve …`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleDelta {
    /// The rule before.
    pub old: Option<String>,
    /// The rule after.
    pub new: Option<String>,
}

/// A domain event of a diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event")]
pub enum Change {
    /// A flag that did not exist.
    FlagDefined {
        /// The flag.
        flag: FlagRef,
    },
    /// A flag that no longer exists.
    FlagRetired {
        /// The flag (as it was).
        flag: FlagRef,
    },
    /// Rules added, removed or changed (old vs new, in order).
    FlagRulesChanged {
        /// The flag.
        flag: FlagRef,
        /// Each rule that changed.
        rules: Vec<RuleDelta>,
    },
    /// The default variant of a non-migration flag.
    FlagDefaultChanged {
        /// The flag.
        flag: FlagRef,
        /// Default before.
        from: String,
        /// Default after.
        to: String,
    },
    /// Migration states served to some traffic moved: the default, a rule whose serve
    /// changed, or a new rule (traffic it takes was served the old default).
    FlagStateChanged {
        /// The flag.
        flag: FlagRef,
        /// `default` or `rule N: when …`.
        scope: String,
        /// States served there before.
        from: Vec<String>,
        /// States served there after.
        to: Vec<String>,
    },
    /// Membership of a set (member segment or literal list) used by a rule.
    FlagTargetingChanged {
        /// The flag.
        flag: FlagRef,
        /// `rule N: when …`.
        rule: String,
        /// Members added.
        added: Vec<String>,
        /// Members removed.
        removed: Vec<String>,
    },
    /// A declared property other than the rules: owner, expires, description, kind, variants,
    /// on_error, enabled, schedule, prerequisites, propagation, expose, states, transitions,
    /// retirement, dependents, docs.
    FlagMetadataChanged {
        /// The flag.
        flag: FlagRef,
        /// Which property.
        field: String,
        /// Before.
        from: Option<String>,
        /// After.
        to: Option<String>,
    },
}

impl Change {
    /// The event's name (`FlagDefined`, …).
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Change::FlagDefined { .. } => "FlagDefined",
            Change::FlagRetired { .. } => "FlagRetired",
            Change::FlagRulesChanged { .. } => "FlagRulesChanged",
            Change::FlagDefaultChanged { .. } => "FlagDefaultChanged",
            Change::FlagStateChanged { .. } => "FlagStateChanged",
            Change::FlagTargetingChanged { .. } => "FlagTargetingChanged",
            Change::FlagMetadataChanged { .. } => "FlagMetadataChanged",
        }
    }

    /// The flag it is about.
    #[must_use]
    pub fn flag(&self) -> &FlagRef {
        match self {
            Change::FlagDefined { flag }
            | Change::FlagRetired { flag }
            | Change::FlagRulesChanged { flag, .. }
            | Change::FlagDefaultChanged { flag, .. }
            | Change::FlagStateChanged { flag, .. }
            | Change::FlagTargetingChanged { flag, .. }
            | Change::FlagMetadataChanged { flag, .. } => flag,
        }
    }

    /// One line for people.
    #[must_use]
    pub fn summary(&self) -> String {
        let f = self.flag();
        let head = format!(
            "{} {} ({}, {})",
            self.name(),
            f.key,
            f.kind.as_str(),
            f.owner
        );
        let list = |v: &[String]| v.join(" | ");
        match self {
            Change::FlagDefined { .. } | Change::FlagRetired { .. } => head,
            Change::FlagRulesChanged { rules, .. } => {
                let mut s = head;
                for r in rules {
                    s.push_str(&format!(
                        "\n    - {}\n    + {}",
                        r.old.as_deref().unwrap_or("(none)"),
                        r.new.as_deref().unwrap_or("(none)")
                    ));
                }
                s
            }
            Change::FlagDefaultChanged { from, to, .. } => format!("{head}: {from} → {to}"),
            Change::FlagStateChanged {
                scope, from, to, ..
            } => format!("{head}: {scope}: {} → {}", list(from), list(to)),
            Change::FlagTargetingChanged {
                rule,
                added,
                removed,
                ..
            } => format!(
                "{head}: {rule}: +[{}] -[{}]",
                added.join(", "),
                removed.join(", ")
            ),
            Change::FlagMetadataChanged {
                field, from, to, ..
            } => format!(
                "{head}: {field}: {} → {}",
                from.as_deref().unwrap_or("(none)"),
                to.as_deref().unwrap_or("(none)")
            ),
        }
    }
}

fn flag_ref(f: &FlagIr) -> FlagRef {
    FlagRef {
        key: f.key.clone(),
        kind: f.kind,
        owner: f.owner.clone(),
    }
}

/// Pairs rules by condition with a longest common subsequence (order is significant: rules
/// are tried in order). Returns (old index, new index) pairs, ascending.
fn pair(old: &[RuleView], new: &[RuleView]) -> Vec<(usize, usize)> {
    let (n, m) = (old.len(), new.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if old[i].cond_key == new[j].cond_key {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < n && j < m {
        if old[i].cond_key == new[j].cond_key {
            out.push((i, j));
            i += 1;
            j += 1;
        } else if lcs[i + 1][j] >= lcs[i][j + 1] {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

fn labelled(i: usize, r: &RuleView) -> String {
    format!("rule {}: {}", i + 1, r.text())
}

fn metadata(
    old_ir: &RulesetIr,
    old: &FlagIr,
    new_ir: &RulesetIr,
    new: &FlagIr,
) -> Vec<(String, Option<String>, Option<String>)> {
    let opt = |s: &Option<String>| s.clone();
    let list = |v: &[String]| (!v.is_empty()).then(|| v.join(", "));
    let transitions = |f: &FlagIr| {
        let pairs: Vec<String> = f
            .transitions
            .iter()
            .map(|(a, b)| {
                format!(
                    "{}→{}",
                    render::variant_name(f, *a),
                    render::variant_name(f, *b)
                )
            })
            .collect();
        list(&pairs)
    };
    let metadata = |f: &FlagIr| {
        let pairs: Vec<String> = f
            .metadata
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.to_json()))
            .collect();
        list(&pairs)
    };
    let fields: Vec<(&str, Option<String>, Option<String>)> = vec![
        (
            "kind",
            Some(old.kind.as_str().into()),
            Some(new.kind.as_str().into()),
        ),
        ("owner", Some(old.owner.clone()), Some(new.owner.clone())),
        ("expires", opt(&old.expires), opt(&new.expires)),
        ("description", opt(&old.description), opt(&new.description)),
        ("states", list(&old.states), list(&new.states)),
        ("transitions", transitions(old), transitions(new)),
        (
            "variants",
            Some(render::variants(old)),
            Some(render::variants(new)),
        ),
        (
            "on_error",
            Some(render::variant_name(old, old.on_error)),
            Some(render::variant_name(new, new.on_error)),
        ),
        (
            "enabled",
            Some(old.enabled.to_string()),
            Some(new.enabled.to_string()),
        ),
        (
            "schedule",
            Some(render::schedule(&old.schedule)).filter(|s| !s.is_empty()),
            Some(render::schedule(&new.schedule)).filter(|s| !s.is_empty()),
        ),
        (
            "prerequisites",
            Some(render::prerequisites(old_ir, old)).filter(|s| !s.is_empty()),
            Some(render::prerequisites(new_ir, new)).filter(|s| !s.is_empty()),
        ),
        (
            "propagation",
            Some(old.propagation.as_str().into()),
            Some(new.propagation.as_str().into()),
        ),
        ("expose", list(&old.expose), list(&new.expose)),
        (
            "retirement",
            opt(&old.lifecycle.retirement),
            opt(&new.lifecycle.retirement),
        ),
        (
            "dependents",
            list(&old.lifecycle.dependents),
            list(&new.lifecycle.dependents),
        ),
        ("docs", opt(&old.lifecycle.docs), opt(&new.lifecycle.docs)),
        ("metadata", metadata(old), metadata(new)),
    ];
    fields
        .into_iter()
        .filter(|(_, a, b)| a != b)
        .map(|(f, a, b)| (f.to_owned(), a, b))
        .collect()
}

fn flag_changes(
    old_ir: &RulesetIr,
    old: &FlagIr,
    new_ir: &RulesetIr,
    new: &FlagIr,
    out: &mut Vec<Change>,
) {
    let f = flag_ref(new);
    let migration = new.kind == FlagKind::Migration && old.kind == FlagKind::Migration;
    for (field, from, to) in metadata(old_ir, old, new_ir, new) {
        out.push(Change::FlagMetadataChanged {
            flag: f.clone(),
            field,
            from,
            to,
        });
    }
    let (d_old, d_new) = (
        render::variant_name(old, old.default),
        render::variant_name(new, new.default),
    );
    if d_old != d_new {
        out.push(if migration {
            Change::FlagStateChanged {
                flag: f.clone(),
                scope: "default".into(),
                from: vec![d_old.clone()],
                to: vec![d_new],
            }
        } else {
            Change::FlagDefaultChanged {
                flag: f.clone(),
                from: d_old.clone(),
                to: d_new,
            }
        });
    }
    let ov: Vec<RuleView> = old
        .rules
        .iter()
        .map(|r| render::rule(old_ir, old, r))
        .collect();
    let nv: Vec<RuleView> = new
        .rules
        .iter()
        .map(|r| render::rule(new_ir, new, r))
        .collect();
    let pairs = pair(&ov, &nv);
    let mut deltas = Vec::new();
    let mut states = Vec::new();
    let mut targeting = Vec::new();
    // Between two paired rules, unpaired old and new rules are shown side by side (a rule
    // whose condition changed), the rest as removed or added.
    let mut gaps: Vec<(Vec<usize>, Vec<usize>)> = Vec::new();
    let (mut i0, mut j0) = (0, 0);
    for &(i, j) in pairs.iter().chain(std::iter::once(&(ov.len(), nv.len()))) {
        gaps.push(((i0..i).collect(), (j0..j).collect()));
        (i0, j0) = (i + 1, j + 1);
    }
    for (olds, news) in gaps {
        for k in 0..olds.len().max(news.len()) {
            let (o, n) = (olds.get(k), news.get(k));
            deltas.push(RuleDelta {
                old: o.map(|&i| labelled(i, &ov[i])),
                new: n.map(|&j| labelled(j, &nv[j])),
            });
            if let (Some(&j), true) = (n, migration) {
                states.push(Change::FlagStateChanged {
                    flag: f.clone(),
                    scope: format!("new {}", labelled(j, &nv[j])),
                    from: vec![d_old.clone()],
                    to: nv[j].serves.clone(),
                });
            }
        }
    }
    for &(i, j) in &pairs {
        let (a, b) = (&ov[i], &nv[j]);
        if a.action != b.action {
            let served_moved = {
                let sa: BTreeSet<&String> = a.serves.iter().collect();
                let sb: BTreeSet<&String> = b.serves.iter().collect();
                sa != sb
            };
            if migration && served_moved {
                states.push(Change::FlagStateChanged {
                    flag: f.clone(),
                    scope: labelled(j, b),
                    from: a.serves.clone(),
                    to: b.serves.clone(),
                });
            } else {
                deltas.push(RuleDelta {
                    old: Some(labelled(i, a)),
                    new: Some(labelled(j, b)),
                });
            }
        }
        for (sa, sb) in a.sets.iter().zip(&b.sets) {
            if sa != sb {
                let (ma, mb): (BTreeSet<&String>, BTreeSet<&String>) =
                    (sa.iter().collect(), sb.iter().collect());
                targeting.push(Change::FlagTargetingChanged {
                    flag: f.clone(),
                    rule: labelled(j, b),
                    added: mb.difference(&ma).map(|s| (*s).clone()).collect(),
                    removed: ma.difference(&mb).map(|s| (*s).clone()).collect(),
                });
            }
        }
    }
    if !deltas.is_empty() {
        out.push(Change::FlagRulesChanged {
            flag: f.clone(),
            rules: deltas,
        });
    }
    out.extend(states);
    out.extend(targeting);
}

/// The domain events that turn `old` into `new` (`old = None`: everything is defined). Flags
/// are visited in the new version's order, then retired flags in the old one's.
#[must_use]
pub fn diff(old: Option<&RulesetIr>, new: &RulesetIr) -> Vec<Change> {
    let mut out = Vec::new();
    let old_flags: BTreeMap<&str, &FlagIr> = old
        .map(|o| o.flags.iter().map(|f| (f.key.as_str(), f)).collect())
        .unwrap_or_default();
    for f in &new.flags {
        match (old, old_flags.get(f.key.as_str())) {
            (Some(old_ir), Some(of)) => flag_changes(old_ir, of, new, f, &mut out),
            _ => out.push(Change::FlagDefined { flag: flag_ref(f) }),
        }
    }
    if let Some(old_ir) = old {
        let new_keys: BTreeSet<&str> = new.flags.iter().map(|f| f.key.as_str()).collect();
        for f in old_ir
            .flags
            .iter()
            .filter(|f| !new_keys.contains(f.key.as_str()))
        {
            out.push(Change::FlagRetired { flag: flag_ref(f) });
        }
    }
    out
}

/// A move between migration states that the flag's journey does not allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForbiddenTransition {
    /// Flag key.
    pub flag: String,
    /// Where (`default`, `rule N: …`).
    pub scope: String,
    /// From state.
    pub from: String,
    /// To state.
    pub to: String,
    /// States `from` may move to.
    pub allowed: Vec<String>,
}

impl std::fmt::Display for ForbiddenTransition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} → {} is not an allowed transition ({}: {}; allowed from {}: {})",
            self.flag,
            self.from,
            self.to,
            self.scope,
            self.from,
            self.from,
            if self.allowed.is_empty() {
                "nothing".to_owned()
            } else {
                self.allowed.join(", ")
            }
        )
    }
}

/// The moves a migration flag allows: its declared `transitions`, or each state to its
/// neighbours (forward or back) when none are declared.
#[must_use]
pub fn allowed_transitions(flag: &FlagIr) -> BTreeSet<(String, String)> {
    let name = |i: u32| render::variant_name(flag, i);
    if flag.transitions.is_empty() {
        flag.states
            .windows(2)
            .flat_map(|w| [(w[0].clone(), w[1].clone()), (w[1].clone(), w[0].clone())])
            .collect()
    } else {
        flag.transitions
            .iter()
            .map(|(a, b)| (name(*a), name(*b)))
            .collect()
    }
}

/// Checks every [`Change::FlagStateChanged`] against the journey the *new* version declares:
/// each state served after must be a state served there before, or reachable from one of them
/// in one allowed move.
#[must_use]
pub fn forbidden_transitions(changes: &[Change], new: &RulesetIr) -> Vec<ForbiddenTransition> {
    let mut out = Vec::new();
    for c in changes {
        let Change::FlagStateChanged {
            flag,
            scope,
            from,
            to,
        } = c
        else {
            continue;
        };
        let Some(f) = new.flags.iter().find(|f| f.key == flag.key) else {
            continue;
        };
        let allowed = allowed_transitions(f);
        for t in to.iter().filter(|t| !from.contains(t)) {
            if !from
                .iter()
                .any(|s| allowed.contains(&(s.clone(), t.clone())))
            {
                let source = from.first().cloned().unwrap_or_default();
                out.push(ForbiddenTransition {
                    flag: flag.key.clone(),
                    scope: scope.clone(),
                    from: from.join(" | "),
                    to: t.clone(),
                    allowed: allowed
                        .iter()
                        .filter(|(a, _)| *a == source)
                        .map(|(_, b)| b.clone())
                        .collect(),
                });
            }
        }
    }
    out
}

/// The flags whose answers can differ between two versions of a ruleset (all of `new`'s flags
/// when there is no `old`): every change of [`diff`] except descriptive properties (owner,
/// expiry, description, kind, propagation, audiences, journeys, lifecycle notes), closed over
/// prerequisites (a flag whose prerequisite changed can answer differently too). Sorted. What
/// OpenFeature providers announce as `flagsChanged`.
#[must_use]
pub fn flags_changed(old: Option<&RulesetIr>, new: &RulesetIr) -> Vec<String> {
    const DESCRIPTIVE: &[&str] = &[
        "owner",
        "expires",
        "description",
        "kind",
        "propagation",
        "expose",
        "transitions",
        "retirement",
        "dependents",
        "docs",
    ];
    let mut changed: BTreeSet<String> = diff(old, new)
        .iter()
        .filter(|c| {
            !matches!(c, Change::FlagMetadataChanged { field, .. } if DESCRIPTIVE.contains(&field.as_str()))
        })
        .map(|c| c.flag().key.clone())
        .collect();
    loop {
        let more: Vec<String> = new
            .flags
            .iter()
            .filter(|f| !changed.contains(&f.key))
            .filter(|f| {
                f.prerequisites.iter().any(|p| {
                    new.flags
                        .get(p.flag as usize)
                        .is_some_and(|pf| changed.contains(&pf.key))
                })
            })
            .map(|f| f.key.clone())
            .collect();
        if more.is_empty() {
            return changed.into_iter().collect();
        }
        changed.extend(more);
    }
}
