//! The trust file: which keys exist, who holds them, what each may do (author, approve) and
//! whose flags (owners) each may change, and how many approvals each flag kind needs. Read by
//! `flagforge publish`, `flagforge approve`, `flagforge audit verify` and every host.
//!
//! ```yaml
//! keys:
//!   - identity: alice@shop.example
//!     key: flagforge-ed25519-public:…      # `flagforge keygen` writes it to flagforge.pub
//!     roles: [author]                       # author, approver
//!     owners: [pricing-team]                # flag owners this key may change; "*" for any
//! approvals:                                # approvers needed besides the author, per kind
//!   policy: 1                               # (defaults: policy and migration 1, others 0)
//!   migration: 1
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use flagforge_distribution::{PublicKey, TrustedKeys};
use flagforge_protocol::FlagKind;
use marked_yaml::{LoaderOptions, Spanned};
use serde::Deserialize;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sign envelopes as their author.
    Author,
    /// Sign approvals of someone else's change.
    Approver,
}

/// One key in the trust file.
#[derive(Debug, Clone)]
pub struct Member {
    /// Who holds it (an e-mail address, a team, a service).
    pub identity: String,
    /// The public key.
    pub key: PublicKey,
    /// Its roles.
    pub roles: BTreeSet<Role>,
    /// Flag owners it may change (`*`: any).
    pub owners: BTreeSet<String>,
}

impl Member {
    /// Whether the key may change flags owned by `owner`.
    #[must_use]
    pub fn covers(&self, owner: &str) -> bool {
        self.owners.contains("*") || self.owners.contains(owner)
    }
}

/// A parsed trust file.
#[derive(Debug, Clone)]
pub struct Trust {
    members: BTreeMap<String, Member>,
    approvals: BTreeMap<&'static str, u32>,
}

/// A trust file that cannot be used: `file:line:col: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{col}: {message}")]
pub struct TrustError {
    /// File name as given.
    pub file: String,
    /// Line (1-based; 1 when the whole file is at fault).
    pub line: usize,
    /// Column (1-based).
    pub col: usize,
    /// What is wrong.
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIr {
    keys: Vec<Spanned<KeyIr>>,
    #[serde(default)]
    approvals: std::collections::HashMap<Spanned<String>, u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyIr {
    identity: String,
    key: Spanned<String>,
    roles: Spanned<Vec<Spanned<String>>>,
    owners: Spanned<Vec<String>>,
}

fn kind_of(name: &str) -> Option<&'static str> {
    FlagKind::ALL
        .iter()
        .map(|k| k.as_str())
        .find(|k| *k == name)
}

impl Trust {
    /// Reads and checks a trust file.
    pub fn read(path: &Path) -> Result<Trust, TrustError> {
        let text = std::fs::read_to_string(path).map_err(|e| TrustError {
            file: path.display().to_string(),
            line: 1,
            col: 1,
            message: format!("cannot read the trust file: {e}"),
        })?;
        Trust::parse(&path.display().to_string(), &text)
    }

    /// Parses trust file text (`file` names it in errors).
    pub fn parse(file: &str, text: &str) -> Result<Trust, TrustError> {
        let at = |span: Option<&marked_yaml::Marker>, message: String| TrustError {
            file: file.to_owned(),
            line: span.map_or(1, marked_yaml::Marker::line),
            col: span.map_or(1, marked_yaml::Marker::column),
            message,
        };
        let options = LoaderOptions::default()
            .error_on_duplicate_keys(true)
            .prevent_coercion(false);
        let ir: FileIr =
            marked_yaml::from_yaml_with_options(0, text, options).map_err(|e| match e {
                marked_yaml::FromYamlError::FromNode(n) => {
                    at(n.start_mark().as_ref(), n.to_string())
                }
                marked_yaml::FromYamlError::ParseYaml(p) => at(None, p.to_string()),
            })?;
        let mut members = BTreeMap::new();
        for k in &ir.keys {
            let span = k.span().start();
            let key = PublicKey::from_text(k.key.trim())
                .map_err(|e| at(k.key.span().start(), format!("`key`: {e}")))?;
            let mut roles = BTreeSet::new();
            for r in k.roles.iter() {
                roles.insert(match r.as_str() {
                    "author" => Role::Author,
                    "approver" => Role::Approver,
                    other => {
                        return Err(at(
                            r.span().start(),
                            format!("unknown role `{other}` (roles: author, approver)"),
                        ))
                    }
                });
            }
            if roles.is_empty() {
                return Err(at(
                    k.roles.span().start(),
                    format!("key of `{}` has no role", k.identity),
                ));
            }
            if k.owners.is_empty() {
                return Err(at(
                    k.owners.span().start(),
                    format!(
                        "key of `{}` changes no owner's flags: list `owners` (or \"*\")",
                        k.identity
                    ),
                ));
            }
            let id = key.id().to_owned();
            let member = Member {
                identity: k.identity.clone(),
                key,
                roles,
                owners: k.owners.iter().cloned().collect(),
            };
            if members.insert(id.clone(), member).is_some() {
                return Err(at(span, format!("key {id} is listed twice")));
            }
        }
        let mut approvals: BTreeMap<&'static str, u32> = [("policy", 1), ("migration", 1)]
            .into_iter()
            .chain(["release", "experiment", "ops"].map(|k| (k, 0)))
            .collect();
        for (kind, n) in &ir.approvals {
            let k = kind_of(kind).ok_or_else(|| {
                at(
                    kind.span().start(),
                    format!("unknown flag kind `{}` (kinds: release, experiment, ops, migration, policy)", kind.as_str()),
                )
            })?;
            approvals.insert(k, *n);
        }
        Ok(Trust { members, approvals })
    }

    /// The member holding key `id`.
    #[must_use]
    pub fn member(&self, id: &str) -> Option<&Member> {
        self.members.get(id)
    }

    /// Every member.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// Approvals (besides the author) a change to a flag of `kind` needs.
    #[must_use]
    pub fn approvals_needed(&self, kind: FlagKind) -> u32 {
        self.approvals.get(kind.as_str()).copied().unwrap_or(0)
    }

    /// Approvals needed for a kind by its spelling in rule files (`policy`, …).
    #[must_use]
    pub fn approvals_needed_for(&self, kind: &str) -> u32 {
        self.approvals.get(kind).copied().unwrap_or(0)
    }

    /// The keys that may author envelopes (what envelope verification trusts).
    #[must_use]
    pub fn authors(&self) -> TrustedKeys {
        TrustedKeys::new(
            self.members
                .values()
                .filter(|m| m.roles.contains(&Role::Author))
                .map(|m| m.key.clone()),
        )
    }

    /// A name for a key id: its identity, or the id when unknown.
    #[must_use]
    pub fn identity(&self, id: &str) -> String {
        self.members
            .get(id)
            .map_or_else(|| format!("unknown key {id}"), |m| m.identity.clone())
    }
}
