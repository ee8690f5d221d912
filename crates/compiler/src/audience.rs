//! Audience builds (`flagforge build --audience browser`): a module holding only the flags
//! marked `expose: [browser]`, for code that runs where anyone can read the bytes.
//!
//! From the full compiled ruleset it keeps the exposed flags (their prerequisites must be
//! exposed too), replaces every membership set (member-list segments and literal `in` lists)
//! by keyed SipHash-2-4 digests — so tenant ids or emails cannot be read from the bytes —
//! empties the sets, segments, patterns and versions that only hidden flags use, and cuts rule
//! sources in explanations down to `file:line`. Evaluation of the kept flags is unchanged.
//! Not hidden: string literals compared directly in conditions (`tenant == "acme"`), attribute
//! names, flag metadata. A digest does not stop guessing: whoever can enumerate candidate
//! members (e.g. a list of emails) can test them against the module, as the module itself does.

use std::collections::BTreeSet;

use evaluator_core::ir::{Expr, Lit, RulesetIr, SegmentIr, SetIr};
use sha2::{Digest, Sha256};

/// Why an audience build is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AudienceError {
    /// The audience name is not usable.
    #[error("audience `{0}` must be lowercase letters, digits and `-` (e.g. `browser`)")]
    BadName(String),
    /// No flag is exposed to the audience.
    #[error("no flag of ruleset `{ruleset}` is exposed to `{audience}`; mark flags with `expose: [{audience}]`")]
    Empty {
        /// Ruleset.
        ruleset: String,
        /// Audience.
        audience: String,
    },
    /// An exposed flag depends on a flag that is not exposed.
    #[error("flag `{flag}` is exposed to `{audience}` but its prerequisite `{prerequisite}` is not; expose both or neither")]
    HiddenPrerequisite {
        /// The exposed flag.
        flag: String,
        /// Its hidden prerequisite.
        prerequisite: String,
        /// Audience.
        audience: String,
    },
}

/// Audience names: lowercase ASCII letters, digits and `-`, starting with a letter.
#[must_use]
pub fn valid_name(a: &str) -> bool {
    a.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && a.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// What the kept flags use.
#[derive(Default)]
struct Used {
    sets: BTreeSet<u32>,
    segments: BTreeSet<u32>,
    patterns: BTreeSet<u32>,
    semvers: BTreeSet<u32>,
}

fn walk(e: &Expr, ir: &RulesetIr, used: &mut Used) {
    let mut stack = vec![e];
    while let Some(e) = stack.pop() {
        match e {
            Expr::Lit(Lit::Semver(i)) => {
                used.semvers.insert(*i);
            }
            Expr::InSet(_, s) => {
                used.sets.insert(*s);
            }
            Expr::Matches(_, p) => {
                used.patterns.insert(*p);
            }
            // A segment's condition is walked once, where it is first used.
            Expr::Segment(s) if used.segments.insert(*s) => {
                if let Some(seg) = ir.segments.get(*s as usize) {
                    stack.push(&seg.when);
                }
            }
            _ => {}
        }
        e.push_children(&mut stack);
    }
}

/// The audience build of a compiled ruleset, named `{ruleset}.{audience}`.
pub fn restrict(ir: &RulesetIr, audience: &str) -> Result<RulesetIr, AudienceError> {
    if !valid_name(audience) {
        return Err(AudienceError::BadName(audience.to_owned()));
    }
    let exposed = |i: usize| ir.flags[i].expose.iter().any(|a| a == audience);
    let kept: Vec<usize> = (0..ir.flags.len()).filter(|&i| exposed(i)).collect();
    if kept.is_empty() {
        return Err(AudienceError::Empty {
            ruleset: ir.name.clone(),
            audience: audience.to_owned(),
        });
    }
    let new_index = |old: u32| kept.iter().position(|&k| k == old as usize);
    let mut used = Used::default();
    let mut flags = Vec::with_capacity(kept.len());
    for &i in &kept {
        let mut f = ir.flags[i].clone();
        for p in &mut f.prerequisites {
            p.flag = new_index(p.flag).ok_or_else(|| AudienceError::HiddenPrerequisite {
                flag: f.key.clone(),
                prerequisite: ir.flags[p.flag as usize].key.clone(),
                audience: audience.to_owned(),
            })? as u32;
        }
        for r in &mut f.rules {
            if let Some(w) = &r.when {
                walk(w, ir, &mut used);
            }
            // `file:line` only: the condition text may hold the very members hidden below.
            r.source = r
                .source
                .splitn(3, ':')
                .take(2)
                .collect::<Vec<_>>()
                .join(":");
        }
        let keep_names: BTreeSet<&str> = kept.iter().map(|&k| ir.flags[k].key.as_str()).collect();
        f.lifecycle
            .dependents
            .retain(|d| keep_names.contains(d.as_str()));
        flags.push(f);
    }

    // The digest key depends on the full ruleset's content: deterministic builds, and no table
    // of digests carries over from one module to another.
    let digest = Sha256::new()
        .chain_update(b"flagforge audience set key v1\0")
        .chain_update(audience.as_bytes())
        .chain_update([0])
        .chain_update(ir.encode())
        .finalize();
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&digest[i..i + 8]);
        u64::from_le_bytes(b)
    };
    let key = (word(0), word(8));

    let sets = ir
        .sets
        .iter()
        .enumerate()
        .map(|(i, set)| {
            let mut digests: Vec<u64> = if used.sets.contains(&(i as u32)) {
                match set {
                    SetIr::Strings(xs) => xs.iter().map(|s| SetIr::digest_str(key, s)).collect(),
                    SetIr::Ints(xs) => xs.iter().map(|n| SetIr::digest_int(key, *n)).collect(),
                    SetIr::Hashed { .. } => Vec::new(),
                }
            } else {
                Vec::new()
            };
            digests.sort_unstable();
            digests.dedup();
            SetIr::Hashed { key, digests }
        })
        .collect();
    let segments = ir
        .segments
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if used.segments.contains(&(i as u32)) {
                s.clone()
            } else {
                SegmentIr {
                    name: String::new(),
                    when: Expr::Lit(Lit::Bool(false)),
                }
            }
        })
        .collect();
    let keep_or = |items: &[String], used: &BTreeSet<u32>, blank: &str| -> Vec<String> {
        items
            .iter()
            .enumerate()
            .map(|(i, p)| {
                if used.contains(&(i as u32)) {
                    p.clone()
                } else {
                    blank.to_owned()
                }
            })
            .collect()
    };
    Ok(RulesetIr {
        format: ir.format,
        name: format!("{}.{audience}", ir.name),
        compiler: ir.compiler.clone(),
        schema: ir.schema.clone(),
        sets,
        patterns: keep_or(&ir.patterns, &used.patterns, ""),
        semvers: keep_or(&ir.semvers, &used.semvers, "0.0.0"),
        segments,
        flags,
        targeting: ir.targeting,
    })
}
