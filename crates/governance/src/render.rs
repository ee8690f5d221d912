//! Compiled rules as canonical text: names instead of slot and table indices, one spelling per
//! meaning. Two rules render to the same key exactly when they are the same rule, however their
//! files were formatted; the display text is what a reviewer reads in a diff.

use flagforge_model::ir::{
    Action, ArithOp, Bucketing, Cidr, CmpOp, Expr, FlagIr, Lit, RuleIr, RulesetIr, SetIr, StrOp,
    Window,
};
use flagforge_protocol::time::format_timestamp;

/// One rule, rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuleView {
    /// The condition with each membership set as a placeholder: rules are paired across
    /// versions by this key, so a rule whose only change is set membership stays paired.
    pub cond_key: String,
    /// The condition with sets summarised, for people.
    pub cond_text: String,
    /// The membership sets the condition uses, in order of appearance (their members).
    pub sets: Vec<Vec<String>>,
    /// The action (`serve X`, `rollout {..} by attr`).
    pub action: String,
    /// Variant (state) names the rule can serve.
    pub serves: Vec<String>,
}

impl RuleView {
    /// `when COND serve X` (or `always serve X`).
    pub fn text(&self) -> String {
        if self.cond_text.is_empty() {
            format!("always {}", self.action)
        } else {
            format!("when {} {}", self.cond_text, self.action)
        }
    }
}

/// The members of a set, as text.
pub(crate) fn members(set: &SetIr) -> Vec<String> {
    match set {
        SetIr::Strings(v) => v.clone(),
        SetIr::Ints(v) => v.iter().map(i64::to_string).collect(),
        SetIr::Hashed { digests, .. } => digests.iter().map(|d| format!("#{d:016x}")).collect(),
    }
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

struct Renderer<'a> {
    ir: &'a RulesetIr,
    sets: Vec<Vec<String>>,
}

impl Renderer<'_> {
    fn attr(&self, slot: u32) -> String {
        self.ir
            .schema
            .get(slot as usize)
            .map_or_else(|| format!("<attribute {slot}>"), |a| a.name.clone())
    }

    fn lit(&self, lit: &Lit) -> String {
        match lit {
            Lit::Bool(b) => b.to_string(),
            Lit::Int(i) => i.to_string(),
            Lit::Float(f) => format!("{f:?}"),
            Lit::Str(s) => quote(s),
            Lit::Semver(i) => format!(
                "semver({})",
                quote(self.ir.semvers.get(*i as usize).map_or("?", String::as_str))
            ),
            Lit::Time(ns) => format!("timestamp({})", quote(&format_timestamp(*ns))),
            Lit::Duration(ns) => format!("duration(\"{ns}ns\")"),
        }
    }

    /// Renders `e`; `key` selects the pairing key (sets as placeholders) or the display text
    /// (sets summarised). Sets are collected on the key pass.
    fn expr(&mut self, e: &Expr, key: bool) -> String {
        let bin = |r: &mut Self, a: &Expr, op: &str, b: &Expr| {
            format!("{} {op} {}", r.operand(a, key), r.operand(b, key))
        };
        match e {
            Expr::Lit(l) => self.lit(l),
            Expr::Attr(i) => self.attr(*i),
            Expr::Has(i) => format!("has({})", self.attr(*i)),
            Expr::Not(a) => format!("!{}", self.operand(a, key)),
            Expr::And(xs) | Expr::Or(xs) => {
                let op = if matches!(e, Expr::And(_)) {
                    " && "
                } else {
                    " || "
                };
                xs.iter()
                    .map(|x| self.operand(x, key))
                    .collect::<Vec<_>>()
                    .join(op)
            }
            Expr::Cmp(op, a, b) => {
                let op = match op {
                    CmpOp::Eq => "==",
                    CmpOp::Ne => "!=",
                    CmpOp::Lt => "<",
                    CmpOp::Le => "<=",
                    CmpOp::Gt => ">",
                    CmpOp::Ge => ">=",
                };
                bin(self, a, op, b)
            }
            Expr::InSet(a, set) => {
                let m = self
                    .ir
                    .sets
                    .get(*set as usize)
                    .map(members)
                    .unwrap_or_default();
                let shown = if key {
                    self.sets.push(m);
                    "{set}".to_owned()
                } else if m.len() <= 4 {
                    format!(
                        "[{}]",
                        m.iter().map(|s| quote(s)).collect::<Vec<_>>().join(", ")
                    )
                } else {
                    format!("[{} members]", m.len())
                };
                format!("{} in {shown}", self.operand(a, key))
            }
            Expr::InList(a, xs) => {
                let items: Vec<String> = xs.iter().map(|x| self.expr(x, key)).collect();
                format!("{} in [{}]", self.operand(a, key), items.join(", "))
            }
            Expr::InAttr(a, slot) => format!("{} in {}", self.operand(a, key), self.attr(*slot)),
            Expr::Str(op, a, b) => {
                let name = match op {
                    StrOp::StartsWith => "startsWith",
                    StrOp::EndsWith => "endsWith",
                    StrOp::Contains => "contains",
                };
                format!("{}.{name}({})", self.operand(a, key), self.expr(b, key))
            }
            Expr::Matches(a, p) => format!(
                "{}.matches({})",
                self.operand(a, key),
                quote(
                    self.ir
                        .patterns
                        .get(*p as usize)
                        .map_or("?", String::as_str)
                )
            ),
            Expr::Segment(i) => match self.ir.segments.get(*i as usize) {
                // An expression segment is part of every rule that uses it: its definition is
                // rendered inline, so changing it changes those rules.
                Some(s) => {
                    let body = self.expr(&s.when, key);
                    format!("segment({} := {body})", quote(&s.name))
                }
                None => format!("segment(<{i}>)"),
            },
            Expr::Arith(op, a, b) => bin(
                self,
                a,
                match op {
                    ArithOp::Add => "+",
                    ArithOp::Sub => "-",
                },
                b,
            ),
            Expr::Cond(c, a, b) => format!(
                "{} ? {} : {}",
                self.operand(c, key),
                self.operand(a, key),
                self.operand(b, key)
            ),
            Expr::Case(upper, a) => format!(
                "{}.{}()",
                self.operand(a, key),
                if *upper { "upperAscii" } else { "lowerAscii" }
            ),
            Expr::Size(a) => format!("size({})", self.expr(a, key)),
            Expr::List(xs) => {
                let items: Vec<String> = xs.iter().map(|x| self.expr(x, key)).collect();
                format!("[{}]", items.join(", "))
            }
            // The element's name is not kept: renaming it is no change.
            Expr::Each { all, list, body } => format!(
                "{}.{}(it, {})",
                self.operand(list, key),
                if *all { "all" } else { "exists" },
                self.expr(body, key)
            ),
            Expr::Item => "it".to_owned(),
            Expr::InCidr(a, ranges) => {
                let ranges: Vec<String> = ranges.iter().map(|r| quote(&cidr(r))).collect();
                format!("ip({}) in cidr({})", self.expr(a, key), ranges.join(", "))
            }
        }
    }

    /// A sub-expression, parenthesised unless it is atomic.
    fn operand(&mut self, e: &Expr, key: bool) -> String {
        let s = self.expr(e, key);
        match e {
            Expr::Lit(_)
            | Expr::Attr(_)
            | Expr::Has(_)
            | Expr::Segment(_)
            | Expr::Matches(..)
            | Expr::Str(..)
            | Expr::Case(..)
            | Expr::Size(_)
            | Expr::List(_)
            | Expr::Each { .. }
            | Expr::Item => s,
            _ => format!("({s})"),
        }
    }
}

/// A range as written: `10.0.0.0/8`, `2001:db8::/32`.
fn cidr(r: &Cidr) -> String {
    let addr = if r.v6 {
        core::net::Ipv6Addr::from(r.addr).to_string()
    } else {
        core::net::Ipv4Addr::from(u32::try_from(r.addr).unwrap_or(0)).to_string()
    };
    format!("{addr}/{}", r.prefix)
}

/// A flag's variant name by index.
pub(crate) fn variant_name(flag: &FlagIr, i: u32) -> String {
    flag.variants
        .get(i as usize)
        .map_or_else(|| format!("<variant {i}>"), |(n, _)| n.clone())
}

/// Renders one rule of `flag`.
pub(crate) fn rule(ir: &RulesetIr, flag: &FlagIr, rule: &RuleIr) -> RuleView {
    let mut r = Renderer {
        ir,
        sets: Vec::new(),
    };
    let (cond_key, cond_text) = match &rule.when {
        Some(e) => (r.expr(e, true), r.expr(e, false)),
        None => (String::new(), String::new()),
    };
    let (action, serves) = match &rule.action {
        Action::Serve(v) => (
            format!("serve {}", variant_name(flag, *v)),
            vec![variant_name(flag, *v)],
        ),
        Action::Rollout(ro) => {
            let buckets: Vec<String> = ro
                .buckets
                .iter()
                .map(|(v, w)| format!("{}: {w}", variant_name(flag, *v)))
                .collect();
            let seed = if ro.seed == flag.key {
                String::new()
            } else {
                format!(" seed {}", quote(&ro.seed))
            };
            // A change of algorithm re-buckets users, so the diff must show it.
            let seed = match ro.bucketing {
                Bucketing::FlagdV2 => seed,
                Bucketing::FlagdV3 { pair: true } => format!("{seed} bucketing flagd-v3 pair"),
                other => format!("{seed} bucketing {}", other.name()),
            };
            let serves = ro
                .buckets
                .iter()
                .filter(|(_, w)| *w > 0)
                .map(|(v, _)| variant_name(flag, *v))
                .collect();
            (
                format!(
                    "rollout {{{}}} by {}{seed}",
                    buckets.join(", "),
                    r.attr(ro.by)
                ),
                serves,
            )
        }
    };
    RuleView {
        cond_key,
        cond_text,
        sets: r.sets,
        action,
        serves,
    }
}

/// Variants as `name=value` text.
pub(crate) fn variants(flag: &FlagIr) -> String {
    flag.variants
        .iter()
        .map(|(n, v)| {
            let json = serde_json::to_string(&v.to_json()).unwrap_or_default();
            format!("{n}={json}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Schedule windows as text.
pub(crate) fn schedule(windows: &[Window]) -> String {
    windows
        .iter()
        .map(|w| {
            let end = |t: Option<i64>| t.map_or_else(|| "…".to_owned(), format_timestamp);
            format!("[{}, {})", end(w.from), end(w.until))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Prerequisites as text (`FLAG in [variants]`).
pub(crate) fn prerequisites(ir: &RulesetIr, flag: &FlagIr) -> String {
    flag.prerequisites
        .iter()
        .map(|p| match ir.flags.get(p.flag as usize) {
            Some(pf) => format!(
                "{} in [{}]",
                pf.key,
                p.variants
                    .iter()
                    .map(|v| variant_name(pf, *v))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => format!("<flag {}>", p.flag),
        })
        .collect::<Vec<_>>()
        .join(", ")
}
