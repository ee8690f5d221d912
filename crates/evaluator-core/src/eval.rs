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

use flagforge_protocol::abi::Record;
use flagforge_protocol::{
    abi, Context, ErrorCode, Explanation, FlagInfo, Lifecycle, Manifest, Reason, Resolution, Step,
    Value, VariantInfo,
};
use regex_lite::Regex;
use semver::Version;

use crate::bind::{bind, Needs, Slot, Slots, V};
use crate::ir::{
    Action, ArithOp, AttrIr, CmpOp, Expr, FlagIr, Lit, RulesetIr, SetIr, StrOp, IR_FORMAT,
};
use crate::wire::bind_positional;
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
    /// Flag indices sorted by key length, then key.
    order: Vec<u32>,
    /// The slot `targetingKey` fills when the context leaves it unset (`targeting_key:` names
    /// another attribute); `None` when the targeting key attribute is `targetingKey` itself.
    alias: Option<usize>,
    /// Per flag: which schema slots its evaluation can read (its rules, segments, rollouts,
    /// schedule and prerequisites, transitively). Only those are bound for a one-flag call.
    needs: Vec<Needs>,
}

/// Records an explanation step; the arguments are evaluated only when explaining.
macro_rules! note {
    ($steps:expr, $check:expr, $source:expr, $outcome:expr $(,)?) => {
        if let Some(s) = $steps.as_mut() {
            s.push(Step {
                check: String::from($check),
                source: $source,
                outcome: String::from($outcome),
            });
        }
    };
}

/// What evaluating one flag decided, before it is rendered as a result.
struct Decision {
    index: usize,
    /// (reason, variant index, deciding rule) or the failure.
    outcome: Result<(Reason, u32, Option<u32>), EvalError>,
    steps: Option<Vec<Step>>,
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
        Ruleset::from_ir(RulesetIr::decode(bytes)?)
    }

    /// Prepares compiled rules for evaluation, checking every index they hold.
    pub fn from_ir(ir: RulesetIr) -> Result<Ruleset, LoadError> {
        if ir.format != IR_FORMAT {
            return Err(flagforge_model::DecodeError::Format {
                found: ir.format,
                expected: IR_FORMAT,
            }
            .into());
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
        let alias = ir.targeting.map(|slot| slot as usize);
        let mut order: Vec<u32> = (0..ir.flags.len() as u32).collect();
        order.sort_by(|&a, &b| short_first(key_of(&ir, a), key_of(&ir, b)));
        let mut rules = Ruleset {
            ir,
            regexes,
            semvers,
            order,
            alias,
            needs: Vec::new(),
        };
        rules.check_indices()?;
        rules.needs = (0..rules.ir.flags.len())
            .map(|i| rules.slots_needed(i))
            .collect();
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
                    Expr::Attr(i) | Expr::Has(i) | Expr::InAttr(_, i) => {
                        dangling("attribute", *i, ir.schema.len())?;
                    }
                    Expr::InSet(_, s) => dangling("set", *s, ir.sets.len())?,
                    Expr::Matches(_, p) => dangling("pattern", *p, self.regexes.len())?,
                    Expr::Segment(s) => dangling("segment", *s, ir.segments.len())?,
                    _ => {}
                }
                e.push_children(&mut stack);
            }
            Ok(())
        };
        for s in &ir.segments {
            check_expr(&s.when)?;
        }
        if let Some(t) = ir.targeting {
            dangling("attribute", t, ir.schema.len())?;
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

    /// The schema slots flag `index` can read, following segments and prerequisites.
    fn slots_needed(&self, index: usize) -> Needs {
        let ir = &self.ir;
        let mut mask = vec![false; ir.schema.len()];
        let mut mark = |i: u32| {
            if let Some(m) = mask.get_mut(i as usize) {
                *m = true;
            }
        };
        let mut flags = vec![index];
        let mut seen_flags = vec![false; ir.flags.len()];
        let mut seen_segments = vec![false; ir.segments.len()];
        while let Some(fi) = flags.pop() {
            let (Some(f), Some(seen)) = (ir.flags.get(fi), seen_flags.get_mut(fi)) else {
                continue;
            };
            if std::mem::replace(seen, true) {
                continue;
            }
            if let Some(n) = f.now_slot.filter(|_| !f.schedule.is_empty()) {
                mark(n);
            }
            flags.extend(f.prerequisites.iter().map(|p| p.flag as usize));
            let mut exprs: Vec<&Expr> = Vec::new();
            for r in &f.rules {
                exprs.extend(r.when.iter());
                if let Action::Rollout(ro) = &r.action {
                    mark(ro.by);
                }
            }
            while let Some(e) = exprs.pop() {
                match e {
                    Expr::Lit(_) => {}
                    Expr::Attr(i) | Expr::Has(i) => mark(*i),
                    Expr::Not(a) => exprs.push(a),
                    Expr::And(xs) | Expr::Or(xs) => exprs.extend(xs.iter()),
                    Expr::Cmp(_, a, b) | Expr::Str(_, a, b) | Expr::Arith(_, a, b) => {
                        exprs.push(a);
                        exprs.push(b);
                    }
                    Expr::InSet(a, _)
                    | Expr::Matches(a, _)
                    | Expr::Case(_, a)
                    | Expr::Size(a)
                    | Expr::InCidr(a, _) => exprs.push(a),
                    Expr::Item => {}
                    Expr::List(xs) => exprs.extend(xs.iter()),
                    Expr::Each { list, body, .. } => {
                        exprs.push(list);
                        exprs.push(body);
                    }
                    Expr::InList(a, xs) => {
                        exprs.push(a);
                        exprs.extend(xs.iter());
                    }
                    Expr::InAttr(a, i) => {
                        mark(*i);
                        exprs.push(a);
                    }
                    Expr::Segment(s) => {
                        let s = *s as usize;
                        if let (Some(seen), Some(seg)) =
                            (seen_segments.get_mut(s), ir.segments.get(s))
                        {
                            if !std::mem::replace(seen, true) {
                                exprs.push(&seg.when);
                            }
                        }
                    }
                    Expr::Cond(c, a, b) => {
                        exprs.push(c);
                        exprs.push(a);
                        exprs.push(b);
                    }
                }
            }
        }
        let count = mask.iter().filter(|m| **m).count();
        Needs { mask, count }
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
            targeting_key: ir
                .targeting
                .and_then(|slot| ir.schema.get(slot as usize))
                .map_or_else(
                    || flagforge_protocol::TARGETING_KEY.to_owned(),
                    |a| a.name.clone(),
                ),
        }
    }

    fn find(&self, key: &str) -> Option<usize> {
        self.order
            .binary_search_by(|&i| short_first(key_of(&self.ir, i), key))
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
        let slots = bind(&self.ir.schema, self.alias, ctx, self.needs.get(index));
        self.resolution(&self.decision(index, &slots, opts))
    }

    /// Evaluates every flag, in declaration order.
    #[must_use]
    pub fn evaluate_all(&self, ctx: &Context, opts: Options) -> Vec<Resolution> {
        let slots = bind(&self.ir.schema, self.alias, ctx, None);
        (0..self.ir.flags.len())
            .map(|i| self.resolution(&self.decision(i, &slots, opts)))
            .collect()
    }

    /// The ABI entry point for one flag: flag number `index` (its position in the manifest)
    /// and a positional context in, one result record appended to `out`
    /// ([`flagforge_protocol::abi::Record`]). Never fails: bad input becomes a record with
    /// reason `ERROR`.
    pub fn evaluate_record(&self, index: u32, ctx: &[u8], options: u32, out: &mut Vec<u8>) {
        let opts = Options::from_bits(options);
        let index = index as usize;
        if index >= self.ir.flags.len() {
            let message = format!(
                "flag number {index} is not defined in ruleset `{}`",
                self.ir.name
            );
            Record {
                reason: Reason::Error,
                error: Some(ErrorCode::FlagNotFound),
                variant: None,
                message: &message,
                explain: &[],
            }
            .write(out);
            return;
        }
        let decision = match bind_positional(&self.ir.schema, ctx, self.needs.get(index)) {
            Ok(slots) => self.decision(index, &slots, opts),
            Err(e) => self.parse_failure(index, &e.0),
        };
        self.write(&decision, out);
    }

    /// The ABI entry point for all flags: one record per flag, in declaration order.
    pub fn evaluate_all_records(&self, ctx: &[u8], options: u32, out: &mut Vec<u8>) {
        let opts = Options::from_bits(options);
        let n = self.ir.flags.len();
        match bind_positional(&self.ir.schema, ctx, None) {
            Ok(slots) => (0..n).for_each(|i| self.write(&self.decision(i, &slots, opts), out)),
            Err(e) => (0..n).for_each(|i| self.write(&self.parse_failure(i, &e.0), out)),
        }
    }

    fn parse_failure(&self, index: usize, message: &str) -> Decision {
        Decision {
            index,
            outcome: Err(EvalError {
                code: ErrorCode::ParseError,
                message: format!("context: {message}"),
            }),
            steps: None,
        }
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

    fn decision(&self, index: usize, slots: &Slots, opts: Options) -> Decision {
        let mut steps = opts.explain.then(Vec::new);
        let outcome = self.decide(index, slots, &mut steps, 0);
        Decision {
            index,
            outcome,
            steps,
        }
    }

    /// The served variant's name and value, borrowed from the rules.
    fn served(&self, d: &Decision) -> (Option<&str>, &Value) {
        static NULL: Value = Value::Null;
        self.served_index(d)
            .and_then(|v| self.ir.flags.get(d.index)?.variants.get(v as usize))
            .map_or((None, &NULL), |(n, val)| (Some(n.as_str()), val))
    }

    /// The index of the served variant: the decided one, or the flag's `on_error`.
    fn served_index(&self, d: &Decision) -> Option<u32> {
        let flag = self.ir.flags.get(d.index)?;
        Some(match &d.outcome {
            Ok((_, v, _)) => *v,
            Err(_) => flag.on_error,
        })
    }

    fn explanation(d: &Decision) -> Option<Explanation> {
        d.steps.as_ref().map(|steps| Explanation {
            rule: d.outcome.as_ref().ok().and_then(|(_, _, rule)| *rule),
            steps: steps.clone(),
        })
    }

    fn resolution(&self, d: &Decision) -> Resolution {
        let (variant, value) = self.served(d);
        let key = self.ir.flags.get(d.index).map_or("", |f| f.key.as_str());
        let (reason, error_code, error_message) = match &d.outcome {
            Ok((reason, _, _)) => (*reason, None, None),
            Err(e) => (Reason::Error, Some(e.code), Some(e.message.clone())),
        };
        Resolution {
            key: key.to_owned(),
            value: value.clone(),
            variant: variant.map(str::to_owned),
            reason,
            error_code,
            error_message,
            explain: Self::explanation(d),
            metadata: self
                .ir
                .flags
                .get(d.index)
                .map(|f| f.metadata.clone())
                .unwrap_or_default(),
        }
    }

    /// Writes a decision as a result record: indices instead of values (the host holds them
    /// in the manifest), the explanation encoded only when asked for.
    fn write(&self, d: &Decision, out: &mut Vec<u8>) {
        let explain = Self::explanation(d)
            .and_then(|e| flagforge_protocol::encode(&e).ok())
            .unwrap_or_default();
        Record {
            reason: match &d.outcome {
                Ok((reason, _, _)) => *reason,
                Err(_) => Reason::Error,
            },
            error: d.outcome.as_ref().err().map(|e| e.code),
            variant: self.served_index(d).and_then(|v| u16::try_from(v).ok()),
            message: d.outcome.as_ref().err().map_or("", |e| e.message.as_str()),
            explain: &explain,
        }
        .write(out);
    }

    /// Returns (reason, variant index, deciding rule).
    fn decide(
        &self,
        index: usize,
        slots: &Slots,
        steps: &mut Option<Vec<Step>>,
        depth: usize,
    ) -> Result<(Reason, u32, Option<u32>), EvalError> {
        let flag = self
            .ir
            .flags
            .get(index)
            .ok_or_else(|| EvalError::general("no such flag"))?;
        if !flag.enabled {
            note!(steps, "enabled", None, "flag is disabled");
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
            note!(
                steps,
                "schedule",
                None,
                if open {
                    "inside a window"
                } else {
                    "outside every window"
                },
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
            let (_, served, _) = self
                .decide(p.flag as usize, slots, &mut None, depth + 1)
                .map_err(|e| EvalError {
                    code: e.code,
                    message: format!("prerequisite `{pre_key}`: {}", e.message),
                })?;
            let ok = p.variants.contains(&served);
            let served_name = self
                .ir
                .flags
                .get(p.flag as usize)
                .and_then(|f| f.variants.get(served as usize))
                .map_or("", |(n, _)| n.as_str());
            note!(
                steps,
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
            match matched {
                Some(true) => {}
                Some(false) => {
                    note!(
                        steps,
                        format!("rule {i}"),
                        Some(rule.source.clone()),
                        "not matched"
                    );
                    continue;
                }
                None => {
                    note!(
                        steps,
                        format!("rule {i}"),
                        Some(rule.source.clone()),
                        "not matched (missing attribute)",
                    );
                    continue;
                }
            }
            match &rule.action {
                Action::Serve(v) => {
                    note!(
                        steps,
                        format!("rule {i}"),
                        Some(rule.source.clone()),
                        "matched"
                    );
                    return Ok((Reason::TargetingMatch, *v, Some(i as u32)));
                }
                Action::Rollout(ro) => {
                    let value = match slots.get(ro.by as usize) {
                        Some(Slot::Val(V::Str(s))) => bucket::Key::Str(s),
                        Some(Slot::Val(V::Int(n))) => bucket::Key::Int(*n),
                        Some(Slot::Invalid(msg)) => {
                            return Err(EvalError {
                                code: ErrorCode::TypeMismatch,
                                message: msg.clone(),
                            })
                        }
                        _ => {
                            note!(
                                steps,
                                format!("rule {i}"),
                                Some(rule.source.clone()),
                                "matched, but the bucketing attribute is missing",
                            );
                            continue;
                        }
                    };
                    let weights = ro.buckets.iter().map(|(_, w)| *w);
                    let Some((pick, b, total)) =
                        bucket::pick(ro.bucketing, &ro.seed, value, weights)
                    else {
                        return Err(EvalError::general("rollout has no weight"));
                    };
                    let v = ro
                        .buckets
                        .get(pick)
                        .map(|(v, _)| *v)
                        .ok_or_else(|| EvalError::general("rollout bucket out of range"))?;
                    note!(
                        steps,
                        format!("rule {i}"),
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

    fn slot<'a>(&self, slots: &'a Slots<'a>, i: u32) -> Out<'a> {
        match slots.get(i as usize) {
            Some(Slot::Val(v)) => Ok(Some(v.clone())),
            Some(Slot::Semver(v)) => Ok(Some(V::Semver(v))),
            Some(Slot::List(items)) => Ok(Some(V::List(items))),
            // `None`: a slot a sparse binding does not hold (absent); indices were checked
            // against the schema when the rules were loaded.
            Some(Slot::Missing) | None => Ok(None),
            Some(Slot::Invalid(msg)) => Err(EvalError {
                code: ErrorCode::TypeMismatch,
                message: msg.clone(),
            }),
        }
    }

    fn eval<'a>(&'a self, e: &'a Expr, slots: &'a Slots<'a>) -> Out<'a> {
        self.eval_with(e, slots, None)
    }

    /// Evaluates `e`; `item` is the element bound by an enclosing `exists`/`all`.
    fn eval_with<'a>(
        &'a self,
        e: &'a Expr,
        slots: &'a Slots<'a>,
        item: Option<&'a V<'a>>,
    ) -> Out<'a> {
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
            Expr::Not(a) => match self.eval_with(a, slots, item)? {
                Some(V::Bool(b)) => V::Bool(!b),
                None => return Ok(None),
                Some(_) => return Err(EvalError::general("`!` needs a boolean")),
            },
            Expr::And(xs) => return self.junction(xs, slots, item, false),
            Expr::Or(xs) => return self.junction(xs, slots, item, true),
            Expr::Cmp(op, a, b) => {
                if let Expr::List(xs) = b.as_ref() {
                    return self.list_equality(*op, a, xs, slots, item);
                }
                let (Some(a), Some(b)) = (
                    self.eval_with(a, slots, item)?,
                    self.eval_with(b, slots, item)?,
                ) else {
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
                let Some(a) = self.eval_with(a, slots, item)? else {
                    return Ok(None);
                };
                let set = self
                    .ir
                    .sets
                    .get(*s as usize)
                    .ok_or_else(|| EvalError::general("set out of range"))?;
                V::Bool(match (set, &a) {
                    (SetIr::Strings(items), V::Str(_) | V::Text(_)) => {
                        let x = a.text().unwrap_or_default();
                        items.binary_search_by(|i| i.as_str().cmp(x)).is_ok()
                    }
                    (SetIr::Ints(items), V::Int(x)) => items.binary_search(x).is_ok(),
                    (SetIr::Ints(items), V::Float(_)) => items
                        .iter()
                        .any(|i| compare(&V::Int(*i), &a) == Some(Ordering::Equal)),
                    (SetIr::Hashed { key, digests }, V::Str(_) | V::Text(_)) => {
                        let x = a.text().unwrap_or_default();
                        digests.binary_search(&SetIr::digest_str(*key, x)).is_ok()
                    }
                    (SetIr::Hashed { key, digests }, V::Int(x)) => {
                        digests.binary_search(&SetIr::digest_int(*key, *x)).is_ok()
                    }
                    // An integral float beyond ±2^53 equals the integer it holds (as `compare`).
                    (SetIr::Hashed { key, digests }, V::Float(f))
                        if f.fract() == 0.0 && f.abs() < 9.223_372_036_854_775e18 =>
                    {
                        digests
                            .binary_search(&SetIr::digest_int(*key, *f as i64))
                            .is_ok()
                    }
                    _ => false,
                })
            }
            Expr::InList(a, xs) => {
                let Some(a) = self.eval_with(a, slots, item)? else {
                    return Ok(None);
                };
                let mut unknown = false;
                for x in xs {
                    match self.eval_with(x, slots, item)? {
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
                let (Some(a), Some(list)) =
                    (self.eval_with(a, slots, item)?, self.slot(slots, *i)?)
                else {
                    return Ok(None);
                };
                let V::List(items) = list else {
                    return Err(EvalError::general("`in` needs a list"));
                };
                V::Bool(
                    items
                        .iter()
                        .any(|item| compare(&a, item) == Some(Ordering::Equal)),
                )
            }
            Expr::Str(op, a, b) => {
                let (Some(a), Some(b)) = (
                    self.eval_with(a, slots, item)?,
                    self.eval_with(b, slots, item)?,
                ) else {
                    return Ok(None);
                };
                let (Some(a), Some(b)) = (a.text(), b.text()) else {
                    return Err(EvalError::general("string function on a non-string"));
                };
                V::Bool(match op {
                    StrOp::StartsWith => a.starts_with(b),
                    StrOp::EndsWith => a.ends_with(b),
                    StrOp::Contains => a.contains(b),
                })
            }
            Expr::Matches(a, p) => {
                let Some(a) = self.eval_with(a, slots, item)? else {
                    return Ok(None);
                };
                let Some(a) = a.text() else {
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
                return self.eval_with(&seg.when, slots, None);
            }
            Expr::Arith(op, a, b) => {
                let (Some(a), Some(b)) = (
                    self.eval_with(a, slots, item)?,
                    self.eval_with(b, slots, item)?,
                ) else {
                    return Ok(None);
                };
                arith(*op, &a, &b).ok_or_else(|| EvalError::general("arithmetic overflow"))?
            }
            Expr::Cond(c, a, b) => match self.eval_with(c, slots, item)? {
                Some(V::Bool(true)) => return self.eval_with(a, slots, item),
                Some(V::Bool(false)) => return self.eval_with(b, slots, item),
                None => return Ok(None),
                Some(_) => return Err(EvalError::general("condition is not boolean")),
            },
            Expr::Case(upper, a) => {
                let Some(a) = self.eval_with(a, slots, item)? else {
                    return Ok(None);
                };
                let Some(s) = a.text() else {
                    return Err(EvalError::general("`lowerAscii` on a non-string"));
                };
                V::Text(if *upper {
                    s.to_ascii_uppercase()
                } else {
                    s.to_ascii_lowercase()
                })
            }
            Expr::Size(a) => match self.eval_with(a, slots, item)? {
                None => return Ok(None),
                Some(V::List(items)) => V::Int(i64::try_from(items.len()).unwrap_or(i64::MAX)),
                Some(v) => {
                    let Some(s) = v.text() else {
                        return Err(EvalError::general("`size` of a non-string"));
                    };
                    V::Int(i64::try_from(s.chars().count()).unwrap_or(i64::MAX))
                }
            },
            Expr::Item => item
                .cloned()
                .ok_or_else(|| EvalError::general("element outside `exists`/`all`"))?,
            Expr::List(_) => {
                return Err(EvalError::general("a list literal outside `==`/`!=`"));
            }
            Expr::Each { all, list, body } => {
                let Some(list) = self.eval_with(list, slots, item)? else {
                    return Ok(None);
                };
                let V::List(items) = list else {
                    return Err(EvalError::general("`exists`/`all` needs a list"));
                };
                // `exists` is an `||` over the elements and `all` an `&&`: a deciding element
                // wins, otherwise an unknown one makes the whole unknown.
                let mut unknown = false;
                for x in items {
                    match self.eval_with(body, slots, Some(x))? {
                        Some(V::Bool(b)) if b != *all => return Ok(Some(V::Bool(b))),
                        Some(V::Bool(_)) => {}
                        None => unknown = true,
                        Some(_) => return Err(EvalError::general("condition is not boolean")),
                    }
                }
                if unknown {
                    return Ok(None);
                }
                V::Bool(*all)
            }
            Expr::InCidr(a, ranges) => {
                let Some(a) = self.eval_with(a, slots, item)? else {
                    return Ok(None);
                };
                let Some(s) = a.text() else {
                    return Err(EvalError::general("`ip` of a non-string"));
                };
                let ip: core::net::IpAddr = s.parse().map_err(|_| EvalError {
                    code: ErrorCode::TypeMismatch,
                    message: format!("`{}` is not an IP address", excerpt(s)),
                })?;
                V::Bool(ranges.iter().any(|r| r.contains(ip)))
            }
        }))
    }

    /// `list == [..]` (`!=` with `op` `Ne`): the same length and each element equal, in order,
    /// compared against the literal's elements in place. Lists are compared for equality only
    /// (the compiler refuses ordering); an unknown operand or element makes it unknown.
    fn list_equality<'a>(
        &'a self,
        op: CmpOp,
        list: &'a Expr,
        xs: &'a [Expr],
        slots: &'a Slots<'a>,
        item: Option<&'a V<'a>>,
    ) -> Out<'a> {
        let items = match self.eval_with(list, slots, item)? {
            Some(V::List(items)) => Some(items),
            None => None,
            Some(_) => return Err(EvalError::general("operands cannot be compared")),
        };
        let mut unknown = items.is_none();
        let mut equal = items.is_some_and(|l| l.len() == xs.len());
        for (i, x) in xs.iter().enumerate() {
            match self.eval_with(x, slots, item)? {
                None => unknown = true,
                Some(q) => {
                    equal = equal
                        && items
                            .and_then(|l| l.get(i))
                            .is_some_and(|p| compare(p, &q) == Some(Ordering::Equal));
                }
            }
        }
        if unknown {
            return Ok(None);
        }
        Ok(Some(V::Bool(equal == (op == CmpOp::Eq))))
    }

    /// `&&` (`absorbing = false`) and `||` (`absorbing = true`) with CEL's commutative handling
    /// of unknowns: an absorbing operand decides; otherwise an error, then unknown, wins.
    fn junction<'a>(
        &'a self,
        xs: &'a [Expr],
        slots: &'a Slots<'a>,
        item: Option<&'a V<'a>>,
        absorbing: bool,
    ) -> Out<'a> {
        let mut unknown = false;
        let mut error = None;
        for x in xs {
            match self.eval_with(x, slots, item) {
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

/// Orders keys by length, then bytes: most comparisons end on the length, without a
/// `memcmp` call (a byte loop inside the module).
fn short_first(a: &str, b: &str) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

fn key_of(ir: &RulesetIr, i: u32) -> &str {
    ir.flags.get(i as usize).map_or("", |f| f.key.as_str())
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
        propagation: f.propagation,
        expose: f.expose.clone(),
        lifecycle: Lifecycle {
            retirement: f.lifecycle.retirement.clone(),
            dependents: f.lifecycle.dependents.clone(),
            docs: f.lifecycle.docs.clone(),
        },
        metadata: f.metadata.clone(),
        float: f.floats,
    }
}

/// At most 64 characters of a context string, for messages.
fn excerpt(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// Orders two values of compatible types; `None` if the types cannot be compared.
fn compare(a: &V, b: &V) -> Option<Ordering> {
    Some(match (a, b) {
        (V::Int(x), V::Int(y)) => x.cmp(y),
        (V::Int(x), V::Float(y)) => (*x as f64).partial_cmp(y)?,
        (V::Float(x), V::Int(y)) => x.partial_cmp(&(*y as f64))?,
        (V::Float(x), V::Float(y)) => x.partial_cmp(y)?,
        (V::Str(_) | V::Text(_), V::Str(_) | V::Text(_)) => a.text()?.cmp(b.text()?),
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
    use flagforge_runtime::{options, Runtime};

    /// What every host does, with this evaluator in place of the module: canonical context
    /// bytes translated to the positional context, one record, expanded from the manifest.
    fn via_runtime(rules: &Ruleset, key: &str, canonical: &[u8], explain: bool) -> Resolution {
        let rt = Runtime::new(rules.manifest(), usize::MAX);
        let prepared = rt.prepare_canonical(key, canonical, explain);
        rt.answer(key, prepared, |flag, context| {
            let mut out = Vec::new();
            rules.evaluate_record(flag, context, options(explain), &mut out);
            rt.finish(flag, &out)
        })
    }

    fn via_runtime_all(rules: &Ruleset, canonical: &[u8], explain: bool) -> Vec<Resolution> {
        let rt = Runtime::new(rules.manifest(), usize::MAX);
        rt.answer_all(rt.translate(None, canonical), |context| {
            let mut out = Vec::new();
            rules.evaluate_all_records(context, options(explain), &mut out);
            rt.finish_all(&out)
        })
    }

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
    fn the_record_path_matches_the_native_path() {
        let rules = Ruleset::from_ir(RulesetIr::example()).unwrap();
        let mut contexts = vec![Context::new()];
        for v in [
            Value::from("FR"),
            Value::from("DE"),
            Value::Int(3),
            Value::Null,
        ] {
            let mut c = Context::new();
            c.insert("market".into(), v);
            contexts.push(c);
        }
        for ctx in &contexts {
            for explain in [false, true] {
                let bytes = flagforge_protocol::value::encode_context(ctx).unwrap();
                let owned = rules.evaluate("NewCheckout", ctx, Options { explain });
                assert_eq!(
                    owned,
                    via_runtime(&rules, "NewCheckout", &bytes, explain),
                    "{ctx:?}"
                );
                let all = rules.evaluate_all(ctx, Options { explain });
                assert_eq!(all, via_runtime_all(&rules, &bytes, explain), "{ctx:?}");
            }
        }
    }

    #[test]
    fn trailing_bytes_and_duplicate_keys_are_parse_errors() {
        let rules = Ruleset::from_ir(RulesetIr::example()).unwrap();
        // {"market": "FR"} followed by a stray byte.
        let mut bytes = vec![0x81, 0xa6];
        bytes.extend_from_slice(b"market");
        bytes.extend_from_slice(&[0xa2, b'F', b'R', 0x00]);
        let r = via_runtime(&rules, "NewCheckout", &bytes, false);
        assert_eq!(r.error_code, Some(ErrorCode::ParseError));
        // {"market": "FR", "market": "DE"}
        let mut dup = vec![0x82];
        for v in [b"FR", b"DE"] {
            dup.push(0xa6);
            dup.extend_from_slice(b"market");
            dup.extend_from_slice(&[0xa2, v[0], v[1]]);
        }
        let r = via_runtime(&rules, "NewCheckout", &dup, false);
        assert_eq!(r.error_code, Some(ErrorCode::ParseError));
        assert!(r.error_message.unwrap().contains("duplicate key `market`"));
    }

    #[test]
    fn garbage_positional_contexts_are_error_records() {
        let rules = Ruleset::from_ir(RulesetIr::example()).unwrap();
        let m = rules.manifest();
        for (bytes, why) in [
            (&[0xc1, 0xff][..], "context must be a map"),
            (
                &[0x81, 0xa1, b'a', 0x01],
                "map keys must be attribute slots",
            ),
            (&[0x81, 0x07, 0x01], "attribute slot 7 is not declared"),
            (
                &[0x82, 0x00, 0xc0, 0x00, 0xc0],
                "attribute slot 0 is out of order or repeated",
            ),
            (&[0x80, 0x00], "trailing bytes after the value"),
        ] {
            let mut out = Vec::new();
            rules.evaluate_record(0, bytes, 0, &mut out);
            let r = m.expand_one(0, &out).unwrap();
            assert_eq!(r.error_code, Some(ErrorCode::ParseError), "{bytes:02x?}");
            assert_eq!(r.variant.as_deref(), Some("off"));
            assert_eq!(
                r.error_message.as_deref(),
                Some(format!("context: {why}").as_str())
            );
        }
        let mut out = Vec::new();
        rules.evaluate_record(9, &[0x80], 0, &mut out);
        let (record, rest) = flagforge_protocol::abi::Record::read(&out).unwrap();
        assert!(rest.is_empty());
        assert_eq!(record.error, Some(ErrorCode::FlagNotFound));
        assert_eq!(record.variant, None);
    }

    /// A map of string pairs in the given (possibly non-canonical) key order.
    fn string_map(pairs: &[(&str, Option<&str>)]) -> Vec<u8> {
        let mut out = Vec::new();
        rmp::encode::write_map_len(&mut out, pairs.len() as u32).unwrap();
        for (k, v) in pairs {
            rmp::encode::write_str(&mut out, k).unwrap();
            match v {
                Some(v) => rmp::encode::write_str(&mut out, v).unwrap(),
                None => rmp::encode::write_nil(&mut out).unwrap(),
            }
        }
        out
    }

    #[test]
    fn targeting_key_fills_its_attribute_only_when_the_context_leaves_it_unset() {
        // `market` stands for `targetingKey`; with 40 more attributes the binding is sparse.
        for extra in [0, 40] {
            let mut ir = RulesetIr::example();
            ir.targeting = Some(0);
            for i in 0..extra {
                ir.schema.push(crate::ir::AttrIr {
                    name: format!("z{i:02}"),
                    ty: crate::ir::Ty::String,
                });
            }
            let rules = Ruleset::from_ir(ir).unwrap();
            assert_eq!(rules.manifest().targeting_key, "market");
            let variant = |pairs: &[(&str, Option<&str>)]| {
                let bytes = string_map(pairs);
                let r = via_runtime(&rules, "NewCheckout", &bytes, false);
                let all = via_runtime_all(&rules, &bytes, false);
                assert_eq!(all[0], r, "{pairs:?}");
                // The native path agrees.
                let ctx: Context = pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.map_or(Value::Null, Value::from)))
                    .collect();
                assert_eq!(rules.evaluate("NewCheckout", &ctx, Options::default()), r);
                r.variant.unwrap()
            };
            let tk = flagforge_protocol::TARGETING_KEY;
            assert_eq!(variant(&[(tk, Some("FR"))]), "on", "alone ({extra})");
            assert_eq!(variant(&[("market", Some("DE")), (tk, Some("FR"))]), "off");
            assert_eq!(
                variant(&[(tk, Some("FR")), ("market", Some("DE"))]),
                "off",
                "after"
            );
            assert_eq!(
                variant(&[(tk, Some("DE")), ("market", Some("FR"))]),
                "on",
                "after"
            );
            assert_eq!(variant(&[("market", None), (tk, Some("FR"))]), "on", "null");
            assert_eq!(
                variant(&[(tk, Some("FR")), ("market", None)]),
                "on",
                "null after"
            );
            let dup = string_map(&[(tk, Some("FR")), (tk, Some("FR"))]);
            let r = via_runtime(&rules, "NewCheckout", &dup, false);
            assert_eq!(r.error_code, Some(ErrorCode::ParseError));
        }
    }
}
