//! Downstream use of a carried decision context: carried answers win, flags not carried are
//! evaluated locally, a rejected context makes every lookup answer the flag's failure policy,
//! and a local answer that differs from a carried one is counted as a decision mismatch.

use std::collections::BTreeMap;
use std::sync::Mutex;

use flagforge_distribution::TrustedKeys;
use flagforge_protocol::{Context, ErrorCode, Reason, Resolution};
use wasm_host::LoadedModule;

use crate::{DecisionContext, DecisionError};

/// Where an answer came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// From the verified decision context (reason `CACHED`).
    Carried,
    /// Evaluated here: the flag was not carried, or no context came with the work.
    Local,
    /// The carried context was refused (its [`DecisionError::kind`]); the flag's `on_error`
    /// variant was served with reason `ERROR`.
    Rejected(&'static str),
}

/// An answer and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// The answer.
    pub resolution: Resolution,
    /// Where it came from.
    pub source: Source,
}

/// Decision mismatches per flag: a carried answer differed from what this service's module
/// answers now (e.g. a newer module arrived mid-flight). The carried answer was used.
#[derive(Debug, Default)]
pub struct Mismatches {
    counts: Mutex<BTreeMap<String, u64>>,
}

impl Mismatches {
    /// Counts one mismatch for `flag`.
    pub fn record(&self, flag: &str) {
        if let Ok(mut c) = self.counts.lock() {
            *c.entry(flag.to_owned()).or_default() += 1;
        }
    }

    /// Mismatches so far, per flag.
    #[must_use]
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Mismatches so far for one flag.
    #[must_use]
    pub fn count(&self, flag: &str) -> u64 {
        self.counts().get(flag).copied().unwrap_or(0)
    }
}

/// Flag lookups for one unit of work (a request, an event) that may carry a decision context.
pub struct Lookup<'a> {
    module: &'a LoadedModule,
    carried: Result<Option<DecisionContext>, DecisionError>,
    mismatches: &'a Mismatches,
    compare: bool,
}

impl<'a> Lookup<'a> {
    /// Verifies the carried header (if any) against `trusted` at `now_ms`. With `compare`,
    /// carried flags are also evaluated locally and differences counted in `mismatches`.
    pub fn new(
        module: &'a LoadedModule,
        header: Option<&str>,
        trusted: &TrustedKeys,
        now_ms: i64,
        mismatches: &'a Mismatches,
        compare: bool,
    ) -> Lookup<'a> {
        let carried = match header {
            None => Ok(None),
            Some(h) => DecisionContext::verify(h, trusted, now_ms).map(Some),
        };
        Lookup {
            module,
            carried,
            mismatches,
            compare,
        }
    }

    /// The verified context, if one came and passed.
    #[must_use]
    pub fn context(&self) -> Option<&DecisionContext> {
        self.carried.as_ref().ok().and_then(Option::as_ref)
    }

    /// Why the carried context was refused, if it was.
    #[must_use]
    pub fn rejection(&self) -> Option<&DecisionError> {
        self.carried.as_ref().err()
    }

    /// The answer for `flag`: carried if the context holds it, otherwise evaluated here.
    #[must_use]
    pub fn resolve(&self, flag: &str, context: &Context) -> Resolved {
        if let Ok(Some(dc)) = &self.carried {
            if let Some(subject) = &dc.subject {
                if crate::Subject::of(&subject.attribute, context).as_ref() != Some(subject) {
                    let e = DecisionError::SubjectMismatch(subject.attribute.clone());
                    return Resolved {
                        resolution: self.module.manifest().fallback(
                            flag,
                            ErrorCode::InvalidContext,
                            format!("decision context rejected: {e}"),
                        ),
                        source: Source::Rejected(e.kind()),
                    };
                }
            }
        }
        match &self.carried {
            Err(e) => Resolved {
                resolution: self.module.manifest().fallback(
                    flag,
                    ErrorCode::InvalidContext,
                    format!("decision context rejected: {e}"),
                ),
                source: Source::Rejected(e.kind()),
            },
            Ok(Some(dc)) if dc.decisions.contains_key(flag) => {
                let c = &dc.decisions[flag];
                if self.compare {
                    let local = self.module.evaluate(flag, context, false);
                    if local.value != c.value || local.variant != c.variant {
                        self.mismatches.record(flag);
                    }
                }
                Resolved {
                    resolution: Resolution {
                        key: flag.to_owned(),
                        value: c.value.clone(),
                        variant: c.variant.clone(),
                        reason: Reason::Cached,
                        error_code: None,
                        error_message: None,
                        explain: None,
                        // Static per flag: the serving module's, as on a local answer.
                        metadata: self
                            .module
                            .manifest()
                            .flag(flag)
                            .map(|f| f.metadata.clone())
                            .unwrap_or_default(),
                    },
                    source: Source::Carried,
                }
            }
            Ok(_) => Resolved {
                resolution: self.module.evaluate(flag, context, false),
                source: Source::Local,
            },
        }
    }
}
