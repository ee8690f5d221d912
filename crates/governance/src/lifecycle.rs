//! Lifecycle report (`flagforge stale`): flags past their expiry, flags expiring soon, flags
//! that serve one value whatever the context (fully rolled out: retirement candidates), and
//! flags no other flag depends on.

use std::collections::BTreeSet;

use flagforge_model::ir::{Action, RulesetIr};
use flagforge_protocol::time::date_start;
use serde::Serialize;

use crate::render;

const DAY_NS: i64 = 86_400 * 1_000_000_000;

/// A flag with an expiry date, and how far that date is from the report's day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Expiry {
    /// Flag key.
    pub flag: String,
    /// Kind.
    pub kind: String,
    /// Owning team.
    pub owner: String,
    /// `YYYY-MM-DD`.
    pub expires: String,
    /// Days from the report's day to the expiry (negative: overdue).
    pub days_left: i64,
}

/// A flag that serves one variant whatever the context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RolledOut {
    /// Flag key.
    pub flag: String,
    /// Owning team.
    pub owner: String,
    /// The one variant it serves.
    pub serves: String,
}

/// A flag no other flag lists as a prerequisite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unreferenced {
    /// Flag key.
    pub flag: String,
    /// Owning team.
    pub owner: String,
    /// Services the flag declares as reading it (`dependents`); empty: none declared.
    pub dependents: Vec<String>,
}

/// The report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StaleReport {
    /// Ruleset name.
    pub ruleset: String,
    /// The day the report is for.
    pub today: String,
    /// The look-ahead for `expiring`, in days.
    pub within_days: i64,
    /// Expired before `today`.
    pub expired: Vec<Expiry>,
    /// Expiring on `today` or within `within_days` after it.
    pub expiring: Vec<Expiry>,
    /// Serving one variant whatever the context: retirement candidates.
    pub fully_rolled_out: Vec<RolledOut>,
    /// No other flag depends on them.
    pub unreferenced: Vec<Unreferenced>,
}

/// Builds the report for `today` (`YYYY-MM-DD`); `None` if `today` is not a date.
#[must_use]
pub fn stale(ir: &RulesetIr, today: &str, within_days: i64) -> Option<StaleReport> {
    let now = date_start(today)?;
    let mut report = StaleReport {
        ruleset: ir.name.clone(),
        today: today.to_owned(),
        within_days,
        expired: Vec::new(),
        expiring: Vec::new(),
        fully_rolled_out: Vec::new(),
        unreferenced: Vec::new(),
    };
    let referenced: BTreeSet<u32> = ir
        .flags
        .iter()
        .flat_map(|f| f.prerequisites.iter().map(|p| p.flag))
        .collect();
    for (i, f) in ir.flags.iter().enumerate() {
        if let Some((exp, at)) = f.expires.as_ref().and_then(|e| Some((e, date_start(e)?))) {
            let e = Expiry {
                flag: f.key.clone(),
                kind: f.kind.as_str().to_owned(),
                owner: f.owner.clone(),
                expires: exp.clone(),
                days_left: (at - now).div_euclid(DAY_NS),
            };
            if e.days_left < 0 {
                report.expired.push(e);
            } else if e.days_left <= within_days {
                report.expiring.push(e);
            }
        }
        // Every variant the flag can serve: its default, and what each rule serves (a
        // disabled flag serves only its default).
        let mut serves: BTreeSet<u32> = BTreeSet::from([f.default]);
        if f.enabled {
            for r in &f.rules {
                match &r.action {
                    Action::Serve(v) => {
                        serves.insert(*v);
                    }
                    Action::Rollout(ro) => {
                        serves.extend(ro.buckets.iter().filter(|(_, w)| *w > 0).map(|(v, _)| *v));
                    }
                }
            }
        }
        if let (1, Some(v)) = (serves.len(), serves.first()) {
            report.fully_rolled_out.push(RolledOut {
                flag: f.key.clone(),
                owner: f.owner.clone(),
                serves: render::variant_name(f, *v),
            });
        }
        if !referenced.contains(&(i as u32)) {
            report.unreferenced.push(Unreferenced {
                flag: f.key.clone(),
                owner: f.owner.clone(),
                dependents: f.lifecycle.dependents.clone(),
            });
        }
    }
    Some(report)
}
