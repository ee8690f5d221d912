//! Expressions: parse with `cel-parser`, type-check against the declared context schema, and
//! lower to the evaluator's [`Expr`]. Literal lists and member segments become sorted sets.

use std::collections::{BTreeSet, HashMap};

use cel_parser::{ArithmeticOp, Atom, Expression, Member, RelationOp, UnaryOp};
use evaluator_core::ir::{ArithOp, Cidr, CmpOp, Expr, Lit, SetIr, StrOp, Ty};
use evaluator_core::time;

/// Deepest expression nesting accepted (guards the compiler's and the evaluator's stacks).
pub(crate) const MAX_EXPR_DEPTH: usize = 64;

/// A failed expression, with an optional token to point at.
#[derive(Debug)]
pub(crate) struct ExprError {
    pub message: String,
    /// Text to locate inside the expression for the column.
    pub needle: Option<String>,
    /// Exact 0-based char offset inside the expression, when the parser gives one.
    pub offset: Option<usize>,
}

fn err(message: impl Into<String>, needle: Option<&str>) -> ExprError {
    ExprError {
        message: message.into(),
        needle: needle.map(str::to_owned),
        offset: None,
    }
}

/// How a segment is referenced from expressions.
#[derive(Debug, Clone)]
pub(crate) enum SegRef {
    /// A member list: index of its set and the element type.
    Members { set: u32, ty: Ty },
    /// A named condition: index into the segment table and the attributes it reads.
    Expr { index: u32, reads: BTreeSet<String> },
}

/// Tables shared by every expression of a ruleset.
#[derive(Debug, Default)]
pub(crate) struct Tables {
    pub sets: Vec<SetIr>,
    set_index: HashMap<String, u32>,
    pub patterns: Vec<String>,
    pub semvers: Vec<String>,
}

impl Tables {
    pub(crate) fn intern_set(&mut self, set: SetIr) -> u32 {
        let key = format!("{set:?}");
        if let Some(&i) = self.set_index.get(&key) {
            return i;
        }
        let i = self.sets.len() as u32;
        self.sets.push(set);
        self.set_index.insert(key, i);
        i
    }

    fn intern_pattern(&mut self, p: &str) -> u32 {
        match self.patterns.iter().position(|x| x == p) {
            Some(i) => i as u32,
            None => {
                self.patterns.push(p.to_owned());
                (self.patterns.len() - 1) as u32
            }
        }
    }

    fn intern_semver(&mut self, v: &str) -> Result<u32, ExprError> {
        semver::Version::parse(v).map_err(|e| {
            err(
                format!("`{v}` is not a semantic version (SemVer 2.0): {e}"),
                Some(v),
            )
        })?;
        Ok(match self.semvers.iter().position(|x| x == v) {
            Some(i) => i as u32,
            None => {
                self.semvers.push(v.to_owned());
                (self.semvers.len() - 1) as u32
            }
        })
    }
}

/// Names an expression may refer to.
pub(crate) struct Env<'a> {
    pub attrs: &'a HashMap<String, (u32, Ty)>,
    pub segments: &'a HashMap<String, SegRef>,
    pub tables: &'a mut Tables,
    pub reads: BTreeSet<String>,
    /// The element name and type bound inside `exists`/`all`.
    pub item: Option<(String, Ty)>,
}

/// Parses and lowers a boolean condition.
pub(crate) fn compile_condition(text: &str, env: &mut Env) -> Result<Expr, ExprError> {
    let ast = parse_contained(text)?.map_err(|e| {
        let offset = e
            .span
            .start
            .as_ref()
            .map(|l| l.absolute)
            .map(|abs| text.get(..abs).map_or(abs, |s| s.chars().count()));
        let mut message = format!("invalid expression: {}", e.msg.trim_end_matches('.'));
        let expected = friendly_expected(&e.expected);
        if !expected.is_empty() {
            message.push_str(&format!("; expected {expected}"));
        }
        ExprError {
            message,
            needle: None,
            offset,
        }
    })?;
    if too_deep(&ast, 0) {
        return Err(err(
            format!("expression is nested more than {MAX_EXPR_DEPTH} levels deep"),
            None,
        ));
    }
    let (e, ty) = env.lower(&ast)?;
    if ty != Ty::Bool {
        return Err(err(
            format!(
                "a condition must be a bool, but this expression is {}",
                ty.name()
            ),
            None,
        ));
    }
    Ok(e)
}

/// Runs cel-parser, turning its panics into an error. cel-parser 0.8.1 calls `unwrap()` in its
/// generated grammar actions, so some malformed literals (a bad string escape such as `"\q"`,
/// an integer that overflows) panic instead of returning an error; the mutation test in
/// `crates/compiler/tests/all/robustness.rs` found them. A rule file must never crash the
/// compiler, so the panic is contained here and reported at the expression.
fn parse_contained(text: &str) -> Result<Result<Expression, cel_parser::ParseError>, ExprError> {
    std::panic::catch_unwind(|| cel_parser::parse(text)).map_err(|_| {
        err(
            "invalid expression: a string escape or number literal cannot be read (check backslashes and very large numbers)",
            None,
        )
    })
}

fn too_deep(e: &Expression, depth: usize) -> bool {
    if depth > MAX_EXPR_DEPTH {
        return true;
    }
    let d = depth + 1;
    match e {
        Expression::Arithmetic(a, _, b)
        | Expression::Relation(a, _, b)
        | Expression::Or(a, b)
        | Expression::And(a, b) => too_deep(a, d) || too_deep(b, d),
        Expression::Ternary(a, b, c) => too_deep(a, d) || too_deep(b, d) || too_deep(c, d),
        Expression::Unary(_, a) => too_deep(a, d),
        Expression::Member(a, m) => {
            too_deep(a, d)
                || match m.as_ref() {
                    Member::Index(i) => too_deep(i, d),
                    Member::Fields(fs) => fs.iter().any(|(_, f)| too_deep(f, d)),
                    Member::Attribute(_) => false,
                }
        }
        Expression::FunctionCall(f, t, args) => {
            too_deep(f, d)
                || t.as_ref().is_some_and(|t| too_deep(t, d))
                || args.iter().any(|a| too_deep(a, d))
        }
        Expression::List(xs) => xs.iter().any(|x| too_deep(x, d)),
        Expression::Map(kv) => kv.iter().any(|(k, v)| too_deep(k, d) || too_deep(v, d)),
        Expression::Atom(_) | Expression::Ident(_) => false,
    }
}

/// Turns the parser's token patterns into words a rule author reads.
fn friendly_expected(expected: &[String]) -> String {
    let mut out: Vec<String> = Vec::new();
    for e in expected {
        let word = if e.starts_with("r#") {
            if e.contains("[bB]") || e.contains("[rR]") || e.contains("[uU]") || e.contains("[xX]")
            {
                continue;
            } else if e.contains("'([^'") || e.contains("\\\"([^") {
                "a string".to_owned()
            } else if e.contains("[0-9]") {
                "a number".to_owned()
            } else if e.contains("[_a-zA-Z]") {
                "an attribute name".to_owned()
            } else {
                continue;
            }
        } else {
            format!("`{}`", e.trim_matches('"'))
        };
        if !out.contains(&word) {
            out.push(word);
        }
    }
    match out.len() {
        0 => String::new(),
        1 => out.remove(0),
        _ => format!("one of {}", out.join(", ")),
    }
}

fn numeric(t: Ty) -> bool {
    matches!(t, Ty::Int | Ty::Number)
}

fn describe(e: &Expression) -> String {
    match e {
        Expression::Ident(n) => format!("`{n}`"),
        Expression::Atom(Atom::String(s)) => format!("\"{s}\""),
        Expression::Atom(Atom::Int(i)) => i.to_string(),
        Expression::Atom(Atom::Float(f)) => f.to_string(),
        Expression::Atom(Atom::Bool(b)) => b.to_string(),
        _ => "this operand".into(),
    }
}

fn needle_of(e: &Expression) -> Option<String> {
    match e {
        Expression::Ident(n) => Some(n.to_string()),
        Expression::Atom(Atom::String(s)) => Some(s.to_string()),
        Expression::FunctionCall(f, _, _) => match f.as_ref() {
            Expression::Ident(n) => Some(n.to_string()),
            _ => None,
        },
        Expression::Member(t, _) => needle_of(t),
        _ => None,
    }
}

impl Env<'_> {
    fn lower(&mut self, e: &Expression) -> Result<(Expr, Ty), ExprError> {
        match e {
            Expression::Atom(a) => lit(a).map(|(l, t)| (Expr::Lit(l), t)),
            Expression::Ident(name) => {
                if let Some((_, ty)) = self.item.as_ref().filter(|(n, _)| n == name.as_str()) {
                    return Ok((Expr::Item, *ty));
                }
                let (slot, ty) = self.attr(name)?;
                Ok((Expr::Attr(slot), ty))
            }
            Expression::And(..) | Expression::Or(..) => {
                let is_and = matches!(e, Expression::And(..));
                let mut parts = Vec::new();
                flatten(e, is_and, &mut parts);
                let mut out = Vec::with_capacity(parts.len());
                for p in parts {
                    let (x, t) = self.lower(p)?;
                    if t != Ty::Bool {
                        return Err(err(
                            format!(
                                "`{}` needs bool operands, but {} is {}",
                                if is_and { "&&" } else { "||" },
                                describe(p),
                                t.name()
                            ),
                            needle_of(p).as_deref(),
                        ));
                    }
                    out.push(x);
                }
                Ok((
                    if is_and {
                        Expr::And(out)
                    } else {
                        Expr::Or(out)
                    },
                    Ty::Bool,
                ))
            }
            Expression::Unary(op, a) => {
                let (x, t) = self.lower(a)?;
                match op {
                    UnaryOp::Not if t == Ty::Bool => Ok((Expr::Not(Box::new(x)), Ty::Bool)),
                    UnaryOp::DoubleNot if t == Ty::Bool => Ok((x, t)),
                    UnaryOp::Not | UnaryOp::DoubleNot => Err(err(
                        format!("`!` needs a bool, but {} is {}", describe(a), t.name()),
                        needle_of(a).as_deref(),
                    )),
                    UnaryOp::Minus | UnaryOp::DoubleMinus => {
                        let negate = matches!(op, UnaryOp::Minus);
                        match (x, negate) {
                            (x, false) => Ok((x, t)),
                            (Expr::Lit(Lit::Int(i)), true) => Ok((Expr::Lit(Lit::Int(-i)), t)),
                            (Expr::Lit(Lit::Float(f)), true) => Ok((Expr::Lit(Lit::Float(-f)), t)),
                            (Expr::Lit(Lit::Duration(d)), true) => {
                                Ok((Expr::Lit(Lit::Duration(-d)), t))
                            }
                            _ => Err(err(
                                "unary `-` applies only to number and duration literals",
                                None,
                            )),
                        }
                    }
                }
            }
            Expression::Ternary(c, a, b) => {
                let (c2, tc) = self.lower(c)?;
                if tc != Ty::Bool {
                    return Err(err(
                        "the condition of `? :` must be a bool",
                        needle_of(c).as_deref(),
                    ));
                }
                let (a2, ta) = self.lower(a)?;
                let (b2, tb) = self.lower(b)?;
                let t = unify(ta, tb).ok_or_else(|| {
                    err(
                        format!(
                            "the branches of `? :` have different types: {} and {}",
                            ta.name(),
                            tb.name()
                        ),
                        None,
                    )
                })?;
                Ok((Expr::Cond(Box::new(c2), Box::new(a2), Box::new(b2)), t))
            }
            Expression::Arithmetic(a, op, b) => self.arith(a, op, b),
            Expression::Relation(a, op, b) => {
                let op = match op {
                    RelationOp::In => return self.membership(a, b),
                    RelationOp::Equals => CmpOp::Eq,
                    RelationOp::NotEquals => CmpOp::Ne,
                    RelationOp::LessThan => CmpOp::Lt,
                    RelationOp::LessThanEq => CmpOp::Le,
                    RelationOp::GreaterThan => CmpOp::Gt,
                    RelationOp::GreaterThanEq => CmpOp::Ge,
                };
                self.compare(a, op, b)
            }
            Expression::FunctionCall(f, target, args) => self.call(f, target.as_deref(), args),
            Expression::Member(t, _) => Err(err(
                "field access is not supported: declare each attribute at the top of `context`",
                needle_of(t).as_deref(),
            )),
            Expression::List(_) => Err(err(
                "a list literal may only appear on the right of `in`, or compared with a list by `==` or `!=`",
                None,
            )),
            Expression::Map(_) => Err(err("map literals are not supported in conditions", None)),
        }
    }

    fn attr(&mut self, name: &str) -> Result<(u32, Ty), ExprError> {
        match self.attrs.get(name) {
            Some(&(slot, ty)) => {
                self.reads.insert(name.to_owned());
                Ok((slot, ty))
            }
            None => {
                let mut known: Vec<&str> = self.attrs.keys().map(String::as_str).collect();
                known.sort_unstable();
                Err(err(
                    format!(
                        "unknown attribute `{name}`; declare it under `context` (declared: {})",
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                    Some(name),
                ))
            }
        }
    }

    fn compare(
        &mut self,
        a: &Expression,
        op: CmpOp,
        b: &Expression,
    ) -> Result<(Expr, Ty), ExprError> {
        if matches!(a, Expression::List(_)) || matches!(b, Expression::List(_)) {
            return self.list_equality(a, op, b);
        }
        let (mut ea, mut ta) = self.lower(a)?;
        let (mut eb, mut tb) = self.lower(b)?;
        if ta == Ty::String {
            if let Some(x) = self.coerce(&ea, tb)? {
                ea = x;
                ta = tb;
            }
        }
        if tb == Ty::String {
            if let Some(x) = self.coerce(&eb, ta)? {
                eb = x;
                tb = ta;
            }
        }
        let ok = (numeric(ta) && numeric(tb)) || (ta == tb && ta.element().is_none());
        if !ok {
            return Err(err(
                format!(
                    "cannot compare {} ({}) with {} ({})",
                    describe(a),
                    ta.name(),
                    describe(b),
                    tb.name()
                ),
                needle_of(b).or_else(|| needle_of(a)).as_deref(),
            ));
        }
        if ta == Ty::Bool && !matches!(op, CmpOp::Eq | CmpOp::Ne) {
            return Err(err(
                "booleans can only be compared with `==` and `!=`",
                needle_of(a).as_deref(),
            ));
        }
        Ok((Expr::Cmp(op, Box::new(ea), Box::new(eb)), Ty::Bool))
    }

    /// `list == [..]` and `list != [..]`: element by element, in order.
    fn list_equality(
        &mut self,
        a: &Expression,
        op: CmpOp,
        b: &Expression,
    ) -> Result<(Expr, Ty), ExprError> {
        if !matches!(op, CmpOp::Eq | CmpOp::Ne) {
            return Err(err("lists can only be compared with `==` and `!=`", None));
        }
        let (list, other) = match (a, b) {
            (Expression::List(items), other) | (other, Expression::List(items)) => (items, other),
            _ => return Err(err("expected a list literal", None)),
        };
        if matches!(other, Expression::List(_)) {
            return Err(err("compare a list attribute with a list literal", None));
        }
        let (eo, to) = self.lower(other)?;
        let Some(elem) = to.element() else {
            return Err(err(
                format!(
                    "a list literal is compared with a list, but {} is {}",
                    describe(other),
                    to.name()
                ),
                needle_of(other).as_deref(),
            ));
        };
        let mut items = Vec::with_capacity(list.len());
        for item in list {
            let (x, t) = self.lower(item)?;
            if !(t == elem || numeric(t) && numeric(elem)) {
                return Err(err(
                    format!(
                        "list element {} is {}, but {} holds {} elements",
                        describe(item),
                        t.name(),
                        describe(other),
                        elem.name()
                    ),
                    needle_of(item).as_deref(),
                ));
            }
            items.push(x);
        }
        Ok((
            Expr::Cmp(op, Box::new(eo), Box::new(Expr::List(items))),
            Ty::Bool,
        ))
    }

    /// Turns a string literal into a semver, timestamp or duration literal when the other
    /// operand has that type.
    fn coerce(&mut self, e: &Expr, want: Ty) -> Result<Option<Expr>, ExprError> {
        let Expr::Lit(Lit::Str(s)) = e else {
            return Ok(None);
        };
        Ok(Some(match want {
            Ty::Semver => Expr::Lit(Lit::Semver(self.tables.intern_semver(s)?)),
            Ty::Timestamp => Expr::Lit(Lit::Time(parse_ts(s)?)),
            Ty::Duration => Expr::Lit(Lit::Duration(parse_dur(s)?)),
            _ => return Ok(None),
        }))
    }

    fn membership(&mut self, a: &Expression, b: &Expression) -> Result<(Expr, Ty), ExprError> {
        if let Expression::FunctionCall(f, None, ranges) = b {
            if matches!(f.as_ref(), Expression::Ident(n) if n.as_str() == "cidr") {
                return self.in_cidr(a, ranges);
            }
        }
        let (ea, ta) = self.lower(a)?;
        match b {
            Expression::List(items) => {
                let all_strings: Option<Vec<String>> = items
                    .iter()
                    .map(|i| match i {
                        Expression::Atom(Atom::String(s)) => Some(s.to_string()),
                        _ => None,
                    })
                    .collect();
                let all_ints: Option<Vec<i64>> = items
                    .iter()
                    .map(|i| match i {
                        Expression::Atom(Atom::Int(n)) => Some(*n),
                        Expression::Unary(UnaryOp::Minus, x) => match x.as_ref() {
                            Expression::Atom(Atom::Int(n)) => Some(-n),
                            _ => None,
                        },
                        _ => None,
                    })
                    .collect();
                match (ta, all_strings, all_ints) {
                    (Ty::String, Some(mut strings), _) => {
                        strings.sort_unstable();
                        strings.dedup();
                        let set = self.tables.intern_set(SetIr::Strings(strings));
                        Ok((Expr::InSet(Box::new(ea), set), Ty::Bool))
                    }
                    (Ty::Int | Ty::Number, _, Some(mut ints)) => {
                        ints.sort_unstable();
                        ints.dedup();
                        let set = self.tables.intern_set(SetIr::Ints(ints));
                        Ok((Expr::InSet(Box::new(ea), set), Ty::Bool))
                    }
                    _ => {
                        let mut out = Vec::with_capacity(items.len());
                        for item in items {
                            let (mut x, mut t) = self.lower(item)?;
                            if t == Ty::String {
                                if let Some(c) = self.coerce(&x, ta)? {
                                    x = c;
                                    t = ta;
                                }
                            }
                            if !(t == ta || numeric(t) && numeric(ta)) {
                                return Err(err(
                                    format!("list element {} is {}, but {} is {}", describe(item), t.name(), describe(a), ta.name()),
                                    needle_of(item).as_deref(),
                                ));
                            }
                            out.push(x);
                        }
                        Ok((Expr::InList(Box::new(ea), out), Ty::Bool))
                    }
                }
            }
            Expression::FunctionCall(f, None, args) if matches!(f.as_ref(), Expression::Ident(n) if n.as_str() == "segment") => {
                let name = segment_name(args)?;
                match self.segments.get(&name) {
                    Some(SegRef::Members { set, ty }) => {
                        // As with a literal list: a `number` attribute may be tested against
                        // integer members (an integral value is a member).
                        if !(ta == *ty || (numeric(ta) && *ty == Ty::Int)) {
                            return Err(err(
                                format!("segment `{name}` holds {} members, but {} is {}", ty.name(), describe(a), ta.name()),
                                Some(&name),
                            ));
                        }
                        Ok((Expr::InSet(Box::new(ea), *set), Ty::Bool))
                    }
                    Some(SegRef::Expr { .. }) => Err(err(
                        format!("segment `{name}` is a condition, not a member list; use `segment(\"{name}\")` on its own"),
                        Some(&name),
                    )),
                    None => Err(self.unknown_segment(&name)),
                }
            }
            Expression::Ident(name) => {
                let (slot, tl) = self.attr(name)?;
                let Some(elem) = tl.element() else {
                    return Err(err(format!("`in` needs a list on its right, but `{name}` is {}", tl.name()), Some(name)));
                };
                if !(elem == ta || numeric(elem) && numeric(ta)) {
                    return Err(err(format!("`{name}` holds {} elements, but {} is {}", elem.name(), describe(a), ta.name()), Some(name)));
                }
                Ok((Expr::InAttr(Box::new(ea), slot), Ty::Bool))
            }
            _ => Err(err(
                "`in` expects a list literal, `segment(\"name\")` of a member segment, or a list attribute",
                needle_of(b).as_deref(),
            )),
        }
    }

    /// `ip(addr) in cidr("10.0.0.0/8", "2001:db8::/32", …)`.
    fn in_cidr(&mut self, a: &Expression, ranges: &[Expression]) -> Result<(Expr, Ty), ExprError> {
        let usage = "write `ip(attribute) in cidr(\"10.0.0.0/8\", …)`";
        let Expression::FunctionCall(f, None, args) = a else {
            return Err(err(
                format!("`cidr` tests an IP address: {usage}"),
                Some("cidr"),
            ));
        };
        let (Expression::Ident(name), [addr]) = (f.as_ref(), args.as_slice()) else {
            return Err(err(
                format!("`cidr` tests an IP address: {usage}"),
                Some("cidr"),
            ));
        };
        if name.as_str() != "ip" {
            return Err(err(
                format!("`cidr` tests an IP address: {usage}"),
                Some(name),
            ));
        }
        let (e, _) = self.operand(
            addr,
            |t| t == Ty::String,
            "`ip` reads an address from a string",
        )?;
        if ranges.is_empty() {
            return Err(err(
                format!("`cidr` needs at least one range: {usage}"),
                Some("cidr"),
            ));
        }
        let mut out = Vec::with_capacity(ranges.len());
        for r in ranges {
            let Expression::Atom(Atom::String(text)) = r else {
                return Err(err(
                    format!("`cidr` takes string literals: {usage}"),
                    Some("cidr"),
                ));
            };
            out.push(parse_cidr(text)?);
        }
        Ok((Expr::InCidr(Box::new(e), out), Ty::Bool))
    }

    /// Lowers `x`, which must have a type `accepts`: otherwise "{what}, but `x` is TYPE".
    fn operand(
        &mut self,
        x: &Expression,
        accepts: impl Fn(Ty) -> bool,
        what: &str,
    ) -> Result<(Expr, Ty), ExprError> {
        let (e, t) = self.lower(x)?;
        if accepts(t) {
            Ok((e, t))
        } else {
            Err(err(
                format!("{what}, but {} is {}", describe(x), t.name()),
                needle_of(x).as_deref(),
            ))
        }
    }

    fn unknown_segment(&self, name: &str) -> ExprError {
        let mut known: Vec<&str> = self.segments.keys().map(String::as_str).collect();
        known.sort_unstable();
        err(
            format!(
                "unknown segment `{name}` (defined: {})",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ),
            Some(name),
        )
    }

    fn arith(
        &mut self,
        a: &Expression,
        op: &ArithmeticOp,
        b: &Expression,
    ) -> Result<(Expr, Ty), ExprError> {
        let aop = match op {
            ArithmeticOp::Add => ArithOp::Add,
            ArithmeticOp::Subtract => ArithOp::Sub,
            _ => return Err(err("only `+` and `-` are supported", None)),
        };
        let (mut ea, mut ta) = self.lower(a)?;
        let (mut eb, mut tb) = self.lower(b)?;
        if ta == Ty::String {
            if let Some(x) = self.coerce(
                &ea,
                if tb == Ty::Duration {
                    Ty::Timestamp
                } else {
                    tb
                },
            )? {
                ea = x;
                ta = if tb == Ty::Duration {
                    Ty::Timestamp
                } else {
                    tb
                };
            }
        }
        if tb == Ty::String && matches!(ta, Ty::Timestamp | Ty::Duration) {
            if let Some(x) = self.coerce(&eb, Ty::Duration)? {
                eb = x;
                tb = Ty::Duration;
            }
        }
        let t = match (ta, tb, aop) {
            (Ty::Int, Ty::Int, _) => Ty::Int,
            (x, y, _) if numeric(x) && numeric(y) => Ty::Number,
            (Ty::Timestamp, Ty::Duration, _) => Ty::Timestamp,
            (Ty::Timestamp, Ty::Timestamp, ArithOp::Sub) => Ty::Duration,
            (Ty::Duration, Ty::Duration, _) => Ty::Duration,
            _ => {
                return Err(err(
                    format!(
                        "cannot apply `{}` to {} and {}",
                        if aop == ArithOp::Add { "+" } else { "-" },
                        ta.name(),
                        tb.name()
                    ),
                    needle_of(a).as_deref(),
                ))
            }
        };
        Ok((Expr::Arith(aop, Box::new(ea), Box::new(eb)), t))
    }

    fn call(
        &mut self,
        f: &Expression,
        target: Option<&Expression>,
        args: &[Expression],
    ) -> Result<(Expr, Ty), ExprError> {
        let Expression::Ident(name) = f else {
            return Err(err("expected a function name", None));
        };
        let name = name.as_str();
        match (name, target) {
            ("has", None) => match args {
                [Expression::Ident(attr)] => {
                    let (slot, _) = self.attr(attr)?;
                    Ok((Expr::Has(slot), Ty::Bool))
                }
                [Expression::Member(_, m)] => match m.as_ref() {
                    Member::Attribute(attr) => {
                        let (slot, _) = self.attr(attr)?;
                        Ok((Expr::Has(slot), Ty::Bool))
                    }
                    _ => Err(err("`has` takes an attribute name: `has(tier)`", Some("has"))),
                },
                _ => Err(err("`has` takes an attribute name: `has(tier)`", Some("has"))),
            },
            ("segment", None) => {
                let seg = segment_name(args)?;
                match self.segments.get(&seg) {
                    Some(SegRef::Expr { index, reads }) => {
                        self.reads.extend(reads.iter().cloned());
                        Ok((Expr::Segment(*index), Ty::Bool))
                    }
                    Some(SegRef::Members { .. }) => Err(err(
                        format!("segment `{seg}` is a member list; test membership with `attribute in segment(\"{seg}\")`"),
                        Some(&seg),
                    )),
                    None => Err(self.unknown_segment(&seg)),
                }
            }
            ("semver" | "timestamp" | "duration", None) => {
                let [Expression::Atom(Atom::String(s))] = args else {
                    return Err(err(format!("`{name}` takes one string literal"), Some(name)));
                };
                Ok(match name {
                    "semver" => (Expr::Lit(Lit::Semver(self.tables.intern_semver(s)?)), Ty::Semver),
                    "timestamp" => (Expr::Lit(Lit::Time(parse_ts(s)?)), Ty::Timestamp),
                    _ => (Expr::Lit(Lit::Duration(parse_dur(s)?)), Ty::Duration),
                })
            }
            ("exists" | "all", Some(t)) => {
                let usage = format!("`{name}` binds a name to each element: `roles.{name}(r, r.startsWith(\"adm\"))`");
                let [Expression::Ident(var), body] = args else {
                    return Err(err(usage, Some(name)));
                };
                if self.item.is_some() {
                    return Err(err(format!("`{name}` inside `exists`/`all` is not supported"), Some(name)));
                }
                let (el, tl) = self.lower(t)?;
                let Some(elem) = tl.element() else {
                    return Err(err(format!("`{name}` applies to a list, but {} is {}", describe(t), tl.name()), needle_of(t).as_deref()));
                };
                self.item = Some((var.to_string(), elem));
                let lowered = self.lower(body);
                self.item = None;
                let (eb, tb) = lowered?;
                if tb != Ty::Bool {
                    return Err(err(format!("the condition of `{name}` must be a bool, but it is {}", tb.name()), needle_of(body).as_deref()));
                }
                Ok((Expr::Each { all: name == "all", list: Box::new(el), body: Box::new(eb) }, Ty::Bool))
            }
            ("lowerAscii" | "upperAscii", Some(t)) => {
                let (et, _) = self.operand(t, |t| t == Ty::String, &format!("`{name}` applies to strings"))?;
                if !args.is_empty() {
                    return Err(err(format!("`{name}` takes no argument: `s.{name}()`"), Some(name)));
                }
                Ok((Expr::Case(name == "upperAscii", Box::new(et)), Ty::String))
            }
            ("size", _) => {
                let x = match (target, args) {
                    (Some(t), []) | (None, [t]) => t,
                    _ => return Err(err("`size` takes one string or list: `size(x)` or `x.size()`", Some(name))),
                };
                let (ex, _) = self.operand(x, |t| t == Ty::String || t.element().is_some(), "`size` applies to strings and lists")?;
                Ok((Expr::Size(Box::new(ex)), Ty::Int))
            }
            ("ip" | "cidr", _) => Err(err(
                "IP ranges are tested as `ip(attribute) in cidr(\"10.0.0.0/8\", …)`",
                Some(name),
            )),
            ("startsWith" | "endsWith" | "contains" | "matches", Some(t)) => {
                let (et, _) = self.operand(t, |t| t == Ty::String, &format!("`{name}` applies to strings"))?;
                let [arg] = args else {
                    return Err(err(format!("`{name}` takes one argument"), Some(name)));
                };
                if name == "matches" {
                    let Expression::Atom(Atom::String(p)) = arg else {
                        return Err(err("`matches` takes a string literal pattern", Some(name)));
                    };
                    regex_lite::Regex::new(p).map_err(|e| err(format!("invalid pattern: {e}"), Some(p)))?;
                    let idx = self.tables.intern_pattern(p);
                    return Ok((Expr::Matches(Box::new(et), idx), Ty::Bool));
                }
                let (ea, ta) = self.lower(arg)?;
                if ta != Ty::String {
                    return Err(err(format!("`{name}` takes a string, but {} is {}", describe(arg), ta.name()), needle_of(arg).as_deref()));
                }
                let op = match name {
                    "startsWith" => StrOp::StartsWith,
                    "endsWith" => StrOp::EndsWith,
                    _ => StrOp::Contains,
                };
                Ok((Expr::Str(op, Box::new(et), Box::new(ea)), Ty::Bool))
            }
            _ => Err(err(
                format!(
                    "unknown function `{name}`; available: has(attr), segment(\"name\"), semver(\"…\"), timestamp(\"…\"), duration(\"…\"), s.startsWith(x), s.endsWith(x), s.contains(x), s.matches(\"re\"), s.lowerAscii(), s.upperAscii(), size(x), ip(x) in cidr(\"…\"), list.exists(x, cond), list.all(x, cond)"
                ),
                Some(name),
            )),
        }
    }
}

/// `"10.0.0.0/8"`, `"2001:db8::/32"`, or one address (`"10.1.2.3"`: a /32 or /128). Bits
/// past the prefix are cleared: `10.1.2.3/8` is `10.0.0.0/8`.
fn parse_cidr(text: &str) -> Result<Cidr, ExprError> {
    let bad = |why: &str| err(format!("`{text}` is not an IP range: {why}"), Some(text));
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    let ip: core::net::IpAddr = addr
        .parse()
        .map_err(|_| bad("expected e.g. 10.0.0.0/8 or 2001:db8::/32"))?;
    let (v6, bits, width) = Cidr::bits(ip);
    let prefix = match prefix {
        None => width,
        Some(p) => match p.parse::<u8>() {
            Ok(n) if n <= width && !p.starts_with('+') => n,
            _ => return Err(bad(&format!("the prefix must be 0 to {width}"))),
        },
    };
    let shift = u32::from(width - prefix);
    let addr = bits
        .checked_shr(shift)
        .unwrap_or(0)
        .checked_shl(shift)
        .unwrap_or(0);
    Ok(Cidr { v6, addr, prefix })
}

fn segment_name(args: &[Expression]) -> Result<String, ExprError> {
    match args {
        [Expression::Atom(Atom::String(s))] => Ok(s.to_string()),
        _ => Err(err(
            "`segment` takes the segment's name as a string: segment(\"pilot_tenants\")",
            Some("segment"),
        )),
    }
}

fn flatten<'e>(e: &'e Expression, is_and: bool, out: &mut Vec<&'e Expression>) {
    match (e, is_and) {
        (Expression::And(a, b), true) | (Expression::Or(a, b), false) => {
            flatten(a, is_and, out);
            flatten(b, is_and, out);
        }
        _ => out.push(e),
    }
}

fn unify(a: Ty, b: Ty) -> Option<Ty> {
    if a == b {
        Some(a)
    } else if numeric(a) && numeric(b) {
        Some(Ty::Number)
    } else {
        None
    }
}

fn lit(a: &Atom) -> Result<(Lit, Ty), ExprError> {
    Ok(match a {
        Atom::Int(i) => (Lit::Int(*i), Ty::Int),
        Atom::UInt(u) => (
            Lit::Int(
                i64::try_from(*u).map_err(|_| err(format!("integer {u} is out of range"), None))?,
            ),
            Ty::Int,
        ),
        Atom::Float(f) => (Lit::Float(*f), Ty::Number),
        Atom::String(s) => (Lit::Str(s.to_string()), Ty::String),
        Atom::Bool(b) => (Lit::Bool(*b), Ty::Bool),
        Atom::Null => {
            return Err(err(
                "`null` is not supported; use `!has(attr)` to test for absence",
                Some("null"),
            ))
        }
        Atom::Bytes(_) => return Err(err("byte literals are not supported", None)),
    })
}

pub(crate) fn parse_ts(s: &str) -> Result<i64, ExprError> {
    time::parse_timestamp(s).ok_or_else(|| {
        err(
            format!("`{s}` is not an RFC 3339 timestamp; expected e.g. 2026-11-25T10:00:00Z"),
            Some(s),
        )
    })
}

fn parse_dur(s: &str) -> Result<i64, ExprError> {
    time::parse_duration(s).ok_or_else(|| {
        err(
            format!("`{s}` is not a duration; expected e.g. 36h, 1h30m, 250ms"),
            Some(s),
        )
    })
}
