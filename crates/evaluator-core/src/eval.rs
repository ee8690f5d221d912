//! Evaluation: a loaded [`Ruleset`] answers flags for a context.
//!
//! Semantics (also in `docs/rule-language.md`):
//! - a missing (or null) attribute makes the comparison that reads it *unknown*; `&&` is false
//!   if any side is false, `||` true if any side is true, otherwise unknown propagates; a rule
//!   whose condition is unknown does not match and evaluation moves to the next rule;
//! - an attribute present with the wrong type fails the flag with `TYPE_MISMATCH`, and the flag
//!   serves its `on_error` variant with reason `ERROR`;
//! - a rollout whose bucketing attribute is missing falls through to the next rule.

use std::cmp::Ordering;

use flagforge_protocol::{
    abi, value::decode_context, Context, ErrorCode, Explanation, FlagInfo, Lifecycle, Manifest,
    Reason, Resolution, Step, Value, VariantInfo,
};
use regex_lite::Regex;
use semver::Version;

use crate::bind::{bind, Parsed, Slot, V};
use crate::ir::{
    Action, ArithOp, AttrIr, CmpOp, Expr, FlagIr, Lit, RulesetIr, SetIr, StrOp, IR_FORMAT,
};
use crate::{bucket, LoadError};

/// Evaluation options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Attach an [`Explanation`] to each result.
    pub explain: bool,
}

impl Options {
    /// Decodes the ABI option bits.
    #[must_use]
    pub fn from_bits(bits: u32) -> Options {
        Options {
            explain: bits & abi::OPT_EXPLAIN != 0,
        }
    }
}

/// Compiled rules, decoded and prepared (regexes compiled, versions parsed, keys indexed).
#[derive(Debug)]
pub struct Ruleset {
    ir: RulesetIr,
    regexes: Vec<Regex>,
    semvers: Vec<Version>,
    /// Flag indices sorted by key.
    order: Vec<u32>,
}

#[derive(Debug)]
struct EvalError {
    code: ErrorCode,
    message: String,
}

impl EvalError {
    fn general(message: impl Into<String>) -> EvalError {
        EvalError {
            code: ErrorCode::General,
            message: message.into(),
        }
    }
}

type Out<'a> = Result<Option<V<'a>>, EvalError>;

/// Prerequisite chains longer than this are refused (the compiler rejects cycles; this guards
/// hand-crafted rules).
const MAX_PREREQUISITE_DEPTH: usize = 64;

impl Ruleset {
    /// Decodes compiled rules (the bytes embedded in a module).
    pub fn decode(bytes: &[u8]) -> Result<Ruleset, LoadError> {
        let ir: RulesetIr =
            postcard::from_bytes(bytes).map_err(|e| LoadError::Malformed(e.to_string()))?;
        Ruleset::from_ir(ir)
    }

    /// Prepares compiled rules for evaluation, checking every index they hold.
    pub fn from_ir(ir: RulesetIr) -> Result<Ruleset, LoadError> {
        if ir.format != IR_FORMAT {
            return Err(LoadError::Format {
                found: ir.format,
                expected: IR_FORMAT,
            });
        }
        let regexes = ir
            .patterns
            .iter()
            .map(|p| {
                Regex::new(p).map_err(|e| LoadError::Invalid {
                    what: "pattern",
                    text: p.clone(),
                    message: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let semvers = ir
            .semvers
            .iter()
            .map(|s| {
                Version::parse(s).map_err(|e| LoadError::Invalid {
                    what: "version",
                    text: s.clone(),
                    message: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut order: Vec<u32> = (0..ir.flags.len() as u32).collect();
        order.sort_by(|&a, &b| key_of(&ir, a).cmp(key_of(&ir, b)));
        let rules = Ruleset {
            ir,
            regexes,
            semvers,
            order,
        };
        rules.check_indices()?;
        Ok(rules)
    }

    fn check_indices(&self) -> Result<(), LoadError> {
        let ir = &self.ir;
        let dangling = |what, index: u32, len: usize| {
            if (index as usize) < len {
                Ok(())
            } else {
                Err(LoadError::Dangling { what, index })
            }
        };
        let check_expr = |e: &Expr| -> Result<(), LoadError> {
            let mut stack = vec![e];
            while let Some(e) = stack.pop() {
                match e {
                    Expr::Lit(Lit::Semver(i)) => dangling("version", *i, self.semvers.len())?,
                    Expr::Lit(_) => {}
                    Expr::Attr(i) | Expr::Has(i) => dangling("attribute", *i, ir.schema.len())?,
                    Expr::Not(a) => stack.push(a),
                    Expr::And(xs) | Expr::Or(xs) => stack.extend(xs.iter()),
                    Expr::Cmp(_, a, b) | Expr::Str(_, a, b) | Expr::Arith(_, a, b) => {
                        stack.push(a);
                        stack.push(b);
                    }
                    Expr::InSet(a, s) => {
                        dangling("set", *s, ir.sets.len())?;
                        stack.push(a);
                    }
                    Expr::InList(a, xs) => {
                        stack.push(a);
                        stack.extend(xs.iter());
                    }
                    Expr::InAttr(a, i) => {
                        dangling("attribute", *i, ir.schema.len())?;
                        stack.push(a);
                    }
                    Expr::Matches(a, p) => {
                        dangling("pattern", *p, self.regexes.len())?;
                        stack.push(a);
                    }
                    Expr::Segment(s) => dangling("segment", *s, ir.segments.len())?,
                    Expr::Cond(c, a, b) => {
                        stack.push(c);
                        stack.push(a);
                        stack.push(b);
                    }
                }
            }
            Ok(())
        };
        for s in &ir.segments {
            check_expr(&s.when)?;
        }
        for f in &ir.flags {
            let nv = f.variants.len();
            dangling("variant", f.default, nv)?;
            dangling("variant", f.on_error, nv)?;
            if let Some(n) = f.now_slot {
                dangling("attribute", n, ir.schema.len())?;
            }
            for p in &f.prerequisites {
                dangling("flag", p.flag, ir.flags.len())?;
                let pv = ir
                    .flags
                    .get(p.flag as usize)
                    .map_or(0, |pf| pf.variants.len());
                for v in &p.variants {
                    dangling("variant", *v, pv)?;
                }
            }
            for r in &f.rules {
                if let Some(w) = &r.when {
                    check_expr(w)?;
                }
                match &r.action {
                    Action::Serve(v) => dangling("variant", *v, nv)?,
                    Action::Rollout(ro) => {
                        dangling("attribute", ro.by, ir.schema.len())?;
                        for (v, _) in &ro.buckets {
                            dangling("variant", *v, nv)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The compiled model.
    #[must_use]
    pub fn ir(&self) -> &RulesetIr {
        &self.ir
    }

    /// The manifest this ruleset reports.
    #[must_use]
    pub fn manifest(&self) -> Manifest {
        let ir = &self.ir;
        Manifest {
            abi_version: abi::ABI_VERSION,
            ruleset: ir.name.clone(),
            compiler: ir.compiler.clone(),
            context: ir
                .schema
                .iter()
                .map(|AttrIr { name, ty }| flagforge_protocol::AttrDecl {
                    name: name.clone(),
                    ty: ty.name().to_owned(),
                })
                .collect(),
            flags: ir.flags.iter().map(|f| flag_info(ir, f)).collect(),
        }
    }

    fn find(&self, key: &str) -> Option<usize> {
        self.order
            .binary_search_by(|&i| key_of(&self.ir, i).cmp(key))
            .ok()
            .and_then(|pos| self.order.get(pos))
            .map(|&i| i as usize)
    }

    /// Evaluates one flag.
    #[must_use]
    pub fn evaluate(&self, key: &str, ctx: &Context, opts: Options) -> Resolution {
        let Some(index) = self.find(key) else {
            return self.not_found(key);
        };
        let parsed = Parsed::new(&self.ir.schema, ctx);
        let slots = bind(&self.ir.schema, ctx, &parsed);
        self.resolve(index, &slots, opts, 0)
    }

    /// Evaluates every flag, in declaration order.
    #[must_use]
    pub fn evaluate_all(&self, ctx: &Context, opts: Options) -> Vec<Resolution> {
        let parsed = Parsed::new(&self.ir.schema, ctx);
        let slots = bind(&self.ir.schema, ctx, &parsed);
        (0..self.ir.flags.len())
            .map(|i| self.resolve(i, &slots, opts, 0))
            .collect()
    }

    /// The ABI entry point for one flag: MessagePack key and context in, result out.
    /// Never fails: bad input becomes a result with reason `ERROR`.
    #[must_use]
    pub fn evaluate_encoded(&self, key: &[u8], ctx: &[u8], options: u32) -> Vec<u8> {
        let opts = Options::from_bits(options);
        let res = match std::str::from_utf8(key) {
            Err(_) => Resolution::error(
                "",
                Value::Null,
                None,
                ErrorCode::FlagNotFound,
                "flag key is not valid UTF-8",
            ),
            Ok(key) => match decode_context(ctx) {
                Ok(ctx) => self.evaluate(key, &ctx, opts),
                Err(e) => match self.find(key) {
                    Some(i) => self.fail(i, ErrorCode::ParseError, format!("context: {e}")),
                    None => self.not_found(key),
                },
            },
        };
        flagforge_protocol::encode(&res).unwrap_or_default()
    }

    /// The ABI entry point for all flags.
    #[must_use]
    pub fn evaluate_all_encoded(&self, ctx: &[u8], options: u32) -> Vec<u8> {
        let opts = Options::from_bits(options);
        let results = match decode_context(ctx) {
            Ok(ctx) => self.evaluate_all(&ctx, opts),
            Err(e) => (0..self.ir.flags.len())
                .map(|i| self.fail(i, ErrorCode::ParseError, format!("context: {e}")))
                .collect(),
        };
        flagforge_protocol::encode(&results).unwrap_or_default()
    }

    fn not_found(&self, key: &str) -> Resolution {
        Resolution::error(
            key,
            Value::Null,
            None,
            ErrorCode::FlagNotFound,
            format!("flag `{key}` is not defined in ruleset `{}`", self.ir.name),
        )
    }

    fn fail(&self, index: usize, code: ErrorCode, message: String) -> Resolution {
        match self.ir.flags.get(index) {
            Some(f) => {
                let (name, value) = variant(f, f.on_error);
                Resolution::error(&f.key, value, name, code, message)
            }
            None => Resolution::error("", Value::Null, None, code, message),
        }
    }

    fn resolve(&self, index: usize, slots: &[Slot], opts: Options, depth: usize) -> Resolution {
        let mut steps = opts.explain.then(Vec::new);
        let outcome = self.decide(index, slots, &mut steps, depth);
        let Some(flag) = self.ir.flags.get(index) else {
            return Resolution::error("", Value::Null, None, ErrorCode::General, "no such flag");
        };
        let mut res = match outcome {
            Ok((reason, v, rule)) => {
                let (name, value) = variant(flag, v);
                let explain = steps.take().map(|steps| Explanation { rule, steps });
                Resolution {
                    key: flag.key.clone(),
                    value,
                    variant: name,
                    reason,
                    error_code: None,
                    error_message: None,
                    explain,
                }
            }
            Err(e) => self.fail(index, e.code, e.message),
        };
        if let Some(steps) = steps {
            res.explain = Some(Explanation { rule: None, steps });
        }
        res
    }

    /// Returns (reason, variant index, deciding rule).
    fn decide(
        &self,
        index: usize,
        slots: &[Slot],
        steps: &mut Option<Vec<Step>>,
        depth: usize,
    ) -> Result<(Reason, u32, Option<u32>), EvalError> {
        let flag = self
            .ir
            .flags
            .get(index)
            .ok_or_else(|| EvalError::general("no such flag"))?;
        let mut note = |check: String, source: Option<String>, outcome: String| {
            if let Some(s) = steps.as_mut() {
                s.push(Step {
                    check,
                    source,
                    outcome,
                });
            }
        };
        if !flag.enabled {
            note("enabled".into(), None, "flag is disabled".into());
            return Ok((Reason::Disabled, flag.default, None));
        }
        if !flag.schedule.is_empty() {
            let now = match flag.now_slot.and_then(|i| slots.get(i as usize)) {
                Some(Slot::Val(V::Time(t))) => *t,
                Some(Slot::Invalid(msg)) => {
                    return Err(EvalError {
                        code: ErrorCode::TypeMismatch,
                        message: msg.clone(),
                    })
                }
                _ => {
                    return Err(EvalError {
                        code: ErrorCode::InvalidContext,
                        message: "flag has a schedule but the context has no `now`".into(),
                    })
                }
            };
            let open = flag.schedule.iter().any(|w| {
                w.from.is_none_or(|from| now >= from) && w.until.is_none_or(|until| now < until)
            });
            note(
                "schedule".into(),
                None,
                if open {
                    "inside a window"
                } else {
                    "outside every window"
                }
                .into(),
            );
            if !open {
                return Ok((Reason::Disabled, flag.default, None));
            }
        }
        for p in &flag.prerequisites {
            if depth >= MAX_PREREQUISITE_DEPTH {
                return Err(EvalError::general("prerequisite chain is too deep"));
            }
            let pre_key = key_of(&self.ir, p.flag);
            let (reason, served, _) = self
                .decide(p.flag as usize, slots, &mut None, depth + 1)
                .map_err(|e| EvalError {
                    code: e.code,
                    message: format!("prerequisite `{pre_key}`: {}", e.message),
                })?;
            let _ = reason;
            let ok = p.variants.contains(&served);
            let served_name = self
                .ir
                .flags
                .get(p.flag as usize)
                .and_then(|f| f.variants.get(served as usize))
                .map_or("", |(n, _)| n.as_str());
            note(
                format!("prerequisite {pre_key}"),
                None,
                format!(
                    "served `{served_name}`: {}",
                    if ok { "met" } else { "not met" }
                ),
            );
            if !ok {
                return Ok((Reason::Default, flag.default, None));
            }
        }
        for (i, rule) in flag.rules.iter().enumerate() {
            let matched = match &rule.when {
                None => Some(true),
                Some(cond) => match self.eval(cond, slots)? {
                    Some(V::Bool(b)) => Some(b),
                    None => None,
                    Some(_) => return Err(EvalError::general("condition is not boolean")),
                },
            };
            let check = format!("rule {i}");
            match matched {
                Some(true) => {}
                Some(false) => {
                    note(check, Some(rule.source.clone()), "not matched".into());
                    continue;
                }
                None => {
                    note(
                        check,
                        Some(rule.source.clone()),
                        "not matched (missing attribute)".into(),
                    );
                    continue;
                }
            }
            match &rule.action {
                Action::Serve(v) => {
                    note(check, Some(rule.source.clone()), "matched".into());
                    return Ok((Reason::TargetingMatch, *v, Some(i as u32)));
                }
                Action::Rollout(ro) => {
                    let text;
                    let value: &str = match slots.get(ro.by as usize) {
                        Some(Slot::Val(V::Str(s))) => s,
                        Some(Slot::Val(V::Int(n))) => {
                            text = n.to_string();
                            &text
                        }
                        Some(Slot::Invalid(msg)) => {
                            return Err(EvalError {
                                code: ErrorCode::TypeMismatch,
                                message: msg.clone(),
                            })
                        }
                        _ => {
                            note(
                                check,
                                Some(rule.source.clone()),
                                "matched, but the bucketing attribute is missing".into(),
                            );
                            continue;
                        }
                    };
                    let weights = ro.buckets.iter().map(|(_, w)| *w);
                    let Some((pick, b, total)) = bucket::pick(&ro.seed, value, weights) else {
                        return Err(EvalError::general("rollout has no weight"));
                    };
                    let v = ro
                        .buckets
                        .get(pick)
                        .map(|(v, _)| *v)
                        .ok_or_else(|| EvalError::general("rollout bucket out of range"))?;
                    note(
                        check,
                        Some(rule.source.clone()),
                        format!("matched, bucket {b} of {total}"),
                    );
                    return Ok((Reason::Split, v, Some(i as u32)));
                }
            }
        }
        let reason = if is_static(flag) {
            Reason::Static
        } else {
            Reason::Default
        };
        Ok((reason, flag.default, None))
    }

    fn slot<'a>(&self, slots: &'a [Slot<'a>], i: u32) -> Out<'a> {
        match slots.get(i as usize) {
            Some(Slot::Val(v)) => Ok(Some(v.clone())),
            Some(Slot::Missing) => Ok(None),
            Some(Slot::Invalid(msg)) => Err(EvalError {
                code: ErrorCode::TypeMismatch,
                message: msg.clone(),
            }),
            None => Err(EvalError::general("attribute out of range")),
        }
    }

    fn eval<'a>(&'a self, e: &'a Expr, slots: &'a [Slot<'a>]) -> Out<'a> {
        Ok(Some(match e {
            Expr::Lit(l) => match l {
                Lit::Bool(b) => V::Bool(*b),
                Lit::Int(i) => V::Int(*i),
                Lit::Float(f) => V::Float(*f),
                Lit::Str(s) => V::Str(s),
                Lit::Semver(i) => V::Semver(
                    self.semvers
                        .get(*i as usize)
                        .ok_or_else(|| EvalError::general("version out of range"))?,
                ),
                Lit::Time(t) => V::Time(*t),
                Lit::Duration(d) => V::Duration(*d),
            },
            Expr::Attr(i) => return self.slot(slots, *i),
            Expr::Has(i) => V::Bool(match slots.get(*i as usize) {
                Some(Slot::Missing) | None => false,
                Some(_) => true,
            }),
            Expr::Not(a) => match self.eval(a, slots)? {
                Some(V::Bool(b)) => V::Bool(!b),
                None => return Ok(None),
                Some(_) => return Err(EvalError::general("`!` needs a boolean")),
            },
            Expr::And(xs) => return self.junction(xs, slots, false),
            Expr::Or(xs) => return self.junction(xs, slots, true),
            Expr::Cmp(op, a, b) => {
                let (Some(a), Some(b)) = (self.eval(a, slots)?, self.eval(b, slots)?) else {
                    return Ok(None);
                };
                let ord = compare(&a, &b)
                    .ok_or_else(|| EvalError::general("operands cannot be compared"))?;
                V::Bool(match op {
                    CmpOp::Eq => ord == Ordering::Equal,
                    CmpOp::Ne => ord != Ordering::Equal,
                    CmpOp::Lt => ord == Ordering::Less,
                    CmpOp::Le => ord != Ordering::Greater,
                    CmpOp::Gt => ord == Ordering::Greater,
                    CmpOp::Ge => ord != Ordering::Less,
                })
            }
            Expr::InSet(a, s) => {
                let Some(a) = self.eval(a, slots)? else {
                    return Ok(None);
                };
                let set = self
                    .ir
                    .sets
                    .get(*s as usize)
                    .ok_or_else(|| EvalError::general("set out of range"))?;
                V::Bool(match (set, &a) {
                    (SetIr::Strings(items), V::Str(x)) => {
                        items.binary_search_by(|i| i.as_str().cmp(x)).is_ok()
                    }
                    (SetIr::Ints(items), V::Int(x)) => items.binary_search(x).is_ok(),
                    (SetIr::Ints(items), V::Float(_)) => items
                        .iter()
                        .any(|i| compare(&V::Int(*i), &a) == Some(Ordering::Equal)),
                    _ => false,
                })
            }
            Expr::InList(a, xs) => {
                let Some(a) = self.eval(a, slots)? else {
                    return Ok(None);
                };
                let mut unknown = false;
                for x in xs {
                    match self.eval(x, slots)? {
                        Some(x) if compare(&a, &x) == Some(Ordering::Equal) => {
                            return Ok(Some(V::Bool(true)))
                        }
                        Some(_) => {}
                        None => unknown = true,
                    }
                }
                if unknown {
                    return Ok(None);
                }
                V::Bool(false)
            }
            Expr::InAttr(a, i) => {
                let (Some(a), Some(list)) = (self.eval(a, slots)?, self.slot(slots, *i)?) else {
                    return Ok(None);
                };
                let V::List(items) = list else {
                    return Err(EvalError::general("`in` needs a list"));
                };
                V::Bool(items.iter().any(|item| {
                    let item = match item {
                        Value::String(s) => V::Str(s),
                        Value::Int(n) => V::Int(*n),
                        Value::Float(f) => V::Float(*f),
                        _ => return false,
                    };
                    compare(&a, &item) == Some(Ordering::Equal)
                }))
            }
            Expr::Str(op, a, b) => {
                let (Some(a), Some(b)) = (self.eval(a, slots)?, self.eval(b, slots)?) else {
                    return Ok(None);
                };
                let (V::Str(a), V::Str(b)) = (a, b) else {
                    return Err(EvalError::general("string function on a non-string"));
                };
                V::Bool(match op {
                    StrOp::StartsWith => a.starts_with(b),
                    StrOp::EndsWith => a.ends_with(b),
                    StrOp::Contains => a.contains(b),
                })
            }
            Expr::Matches(a, p) => {
                let Some(a) = self.eval(a, slots)? else {
                    return Ok(None);
                };
                let V::Str(a) = a else {
                    return Err(EvalError::general("`matches` on a non-string"));
                };
                let re = self
                    .regexes
                    .get(*p as usize)
                    .ok_or_else(|| EvalError::general("pattern out of range"))?;
                V::Bool(re.is_match(a))
            }
            Expr::Segment(s) => {
                let seg = self
                    .ir
                    .segments
                    .get(*s as usize)
                    .ok_or_else(|| EvalError::general("segment out of range"))?;
                return self.eval(&seg.when, slots);
            }
            Expr::Arith(op, a, b) => {
                let (Some(a), Some(b)) = (self.eval(a, slots)?, self.eval(b, slots)?) else {
                    return Ok(None);
                };
                arith(*op, &a, &b).ok_or_else(|| EvalError::general("arithmetic overflow"))?
            }
            Expr::Cond(c, a, b) => match self.eval(c, slots)? {
                Some(V::Bool(true)) => return self.eval(a, slots),
                Some(V::Bool(false)) => return self.eval(b, slots),
                None => return Ok(None),
                Some(_) => return Err(EvalError::general("condition is not boolean")),
            },
        }))
    }

    /// `&&` (`absorbing = false`) and `||` (`absorbing = true`) with CEL's commutative handling
    /// of unknowns: an absorbing operand decides; otherwise an error, then unknown, wins.
    fn junction<'a>(&'a self, xs: &'a [Expr], slots: &'a [Slot<'a>], absorbing: bool) -> Out<'a> {
        let mut unknown = false;
        let mut error = None;
        for x in xs {
            match self.eval(x, slots) {
                Ok(Some(V::Bool(b))) if b == absorbing => return Ok(Some(V::Bool(absorbing))),
                Ok(Some(V::Bool(_))) => {}
                Ok(None) => unknown = true,
                Ok(Some(_)) => return Err(EvalError::general("`&&`/`||` need booleans")),
                Err(e) => {
                    if error.is_none() {
                        error = Some(e);
                    }
                }
            }
        }
        if let Some(e) = error {
            return Err(e);
        }
        Ok(if unknown {
            None
        } else {
            Some(V::Bool(!absorbing))
        })
    }
}

fn key_of(ir: &RulesetIr, i: u32) -> &str {
    ir.flags.get(i as usize).map_or("", |f| f.key.as_str())
}

fn variant(flag: &FlagIr, v: u32) -> (Option<String>, Value) {
    flag.variants
        .get(v as usize)
        .map_or((None, Value::Null), |(n, val)| {
            (Some(n.clone()), val.clone())
        })
}

fn is_static(f: &FlagIr) -> bool {
    f.rules.is_empty() && f.schedule.is_empty() && f.prerequisites.is_empty() && f.enabled
}

fn flag_info(ir: &RulesetIr, f: &FlagIr) -> FlagInfo {
    let name = |i: u32| {
        f.variants
            .get(i as usize)
            .map_or(String::new(), |(n, _)| n.clone())
    };
    FlagInfo {
        key: f.key.clone(),
        kind: f.kind,
        owner: f.owner.clone(),
        description: f.description.clone(),
        expires: f.expires.clone(),
        variants: f
            .variants
            .iter()
            .map(|(n, v)| VariantInfo {
                name: n.clone(),
                value: v.clone(),
            })
            .collect(),
        default: name(f.default),
        on_error: name(f.on_error),
        states: f.states.clone(),
        prerequisites: f
            .prerequisites
            .iter()
            .map(|p| key_of(ir, p.flag).to_owned())
            .collect(),
        reads: f.reads.clone(),
        is_static: is_static(f),
        lifecycle: Lifecycle {
            retirement: f.lifecycle.retirement.clone(),
            dependents: f.lifecycle.dependents.clone(),
            docs: f.lifecycle.docs.clone(),
        },
    }
}

/// Orders two values of compatible types; `None` if the types cannot be compared.
fn compare(a: &V, b: &V) -> Option<Ordering> {
    Some(match (a, b) {
        (V::Int(x), V::Int(y)) => x.cmp(y),
        (V::Int(x), V::Float(y)) => (*x as f64).partial_cmp(y)?,
        (V::Float(x), V::Int(y)) => x.partial_cmp(&(*y as f64))?,
        (V::Float(x), V::Float(y)) => x.partial_cmp(y)?,
        (V::Str(x), V::Str(y)) => x.cmp(y),
        (V::Bool(x), V::Bool(y)) => x.cmp(y),
        // SemVer 2.0 precedence: build metadata is ignored, a pre-release sorts before its
        // release, pre-release identifiers compare numerically or lexically.
        (V::Semver(x), V::Semver(y)) => (x.major, x.minor, x.patch)
            .cmp(&(y.major, y.minor, y.patch))
            .then_with(|| x.pre.cmp(&y.pre)),
        (V::Time(x), V::Time(y)) | (V::Duration(x), V::Duration(y)) => x.cmp(y),
        _ => return None,
    })
}

fn arith<'a>(op: ArithOp, a: &V, b: &V) -> Option<V<'a>> {
    let sub = op == ArithOp::Sub;
    Some(match (a, b) {
        (V::Int(x), V::Int(y)) => V::Int(if sub {
            x.checked_sub(*y)?
        } else {
            x.checked_add(*y)?
        }),
        (V::Int(_) | V::Float(_), V::Int(_) | V::Float(_)) => {
            let x = num(a)?;
            let y = num(b)?;
            let r = if sub { x - y } else { x + y };
            if !r.is_finite() {
                return None;
            }
            V::Float(r)
        }
        (V::Time(t), V::Duration(d)) => V::Time(if sub {
            t.checked_sub(*d)?
        } else {
            t.checked_add(*d)?
        }),
        (V::Time(x), V::Time(y)) if sub => V::Duration(x.checked_sub(*y)?),
        (V::Duration(x), V::Duration(y)) => V::Duration(if sub {
            x.checked_sub(*y)?
        } else {
            x.checked_add(*y)?
        }),
        _ => return None,
    })
}

fn num(v: &V) -> Option<f64> {
    match v {
        V::Int(i) => Some(*i as f64),
        V::Float(f) => Some(*f),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::RulesetIr;

    #[test]
    fn unknown_flag_is_flag_not_found() {
        let rules = Ruleset::from_ir(RulesetIr::example()).unwrap();
        let r = rules.evaluate("Nope", &Context::new(), Options::default());
        assert_eq!(r.reason, Reason::Error);
        assert_eq!(r.error_code, Some(ErrorCode::FlagNotFound));
    }

    #[test]
    fn wrong_type_serves_on_error_with_type_mismatch() {
        let rules = Ruleset::from_ir(RulesetIr::example()).unwrap();
        let mut ctx = Context::new();
        ctx.insert("market".into(), Value::Int(3));
        let r = rules.evaluate("NewCheckout", &ctx, Options::default());
        assert_eq!(r.reason, Reason::Error);
        assert_eq!(r.error_code, Some(ErrorCode::TypeMismatch));
        assert_eq!(r.variant.as_deref(), Some("off"));
    }

    #[test]
    fn missing_attribute_falls_through_to_default() {
        let rules = Ruleset::from_ir(RulesetIr::example()).unwrap();
        let r = rules.evaluate("NewCheckout", &Context::new(), Options { explain: true });
        assert_eq!(r.reason, Reason::Default);
        let steps = r.explain.unwrap().steps;
        assert_eq!(steps[0].outcome, "not matched (missing attribute)");
    }

    #[test]
    fn dangling_index_is_refused_at_load() {
        let mut ir = RulesetIr::example();
        ir.flags[0].default = 9;
        assert!(matches!(
            Ruleset::from_ir(ir),
            Err(LoadError::Dangling {
                what: "variant",
                index: 9
            })
        ));
    }

    #[test]
    fn garbage_context_bytes_are_an_error_result() {
        let rules = Ruleset::from_ir(RulesetIr::example()).unwrap();
        let out = rules.evaluate_encoded(b"NewCheckout", &[0xc1, 0xff], 0);
        let r: Resolution = flagforge_protocol::decode(&out).unwrap();
        assert_eq!(r.error_code, Some(ErrorCode::ParseError));
        assert_eq!(r.variant.as_deref(), Some("off"));
    }
}
