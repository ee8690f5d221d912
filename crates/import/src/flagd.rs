//! flagd flag definitions (`flags`, `$evaluators`, `metadata`; targeting in flagd's JSON Logic)
//! into one flagforge rule file.
//!
//! The translation keeps flagd's answers, including for contexts that leave attributes out:
//!
//! - `if` chains become ordered rules (a later rule applies only when no earlier one matched,
//!   which is JSON Logic's `else`, unknown attributes included). A branch that can produce no
//!   variant (an `if` without `else`, a `fractional` whose bucketing value is missing) is
//!   followed by a rule serving the default, as flagd does, unless nothing follows it.
//! - flagd compares a missing attribute as `null`: `==`, `<`, `in`, `starts_with`, … are
//!   false and `!=` is true. flagforge's conditions are three-valued (a missing attribute is
//!   *unknown*), which gives the same answer wherever no `!` is above the comparison; under a
//!   `!`, in `!=`, and in shared evaluators (which can be negated where they are used), the
//!   comparison is written with `has(…)` so that it is two-valued like flagd's.
//! - `fractional` keeps its buckets: flagd's implicit key (`flagKey` + `targetingKey`), an
//!   explicit `{"var": …}` and `{"cat": [{"var": "$flagd.flagKey"}, {"var": …}]}` map to
//!   `by:`/`seed:` and the rollout's `bucketing:` (v2 or v3), see docs/bucketing.md.
//! - `$evaluators` become named condition segments; `$ref` becomes `segment("name")`.
//!
//! Types are inferred from use (flagd has no context schema): an attribute compared with a
//! string is a `string`, with a number a `number`, used in `sem_ver` a `semver`; one used two
//! ways is refused.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde_json::{Map, Value};

use crate::{yaml, ImportError, Imported, Options};

/// flagd's `fractional` hashing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fractional {
    /// murmur3 of the UTF-8 text (flagd today).
    V2,
    /// murmur3 of the deterministic CBOR encoding (flagd's accepted v3 design).
    V3,
}

impl Fractional {
    fn bucketing(self) -> &'static str {
        match self {
            Fractional::V2 => "flagd-v2",
            Fractional::V3 => "flagd-v3",
        }
    }
}

/// A flag's metadata key that overrides `--fractional` for that flag (`"v2"` or `"v3"`); it is
/// not carried into the rule file's metadata.
pub const FRACTIONAL_METADATA: &str = "flagforge.fractional";

/// The attribute `$flagd.timestamp` becomes (a `timestamp`, supplied by the host).
const NOW: &str = "now";

/// How deep `$ref`s and nested operators may go.
const MAX_DEPTH: usize = 64;

/// Translates a flagd flag definitions document.
///
/// # Errors
/// Every part that cannot be translated exactly, each with its JSON path and the reason.
pub fn import(
    text: &str,
    opts: &Options,
    fractional: Fractional,
) -> Result<Imported, Vec<ImportError>> {
    let doc: Value = serde_json::from_str(text).map_err(|e| {
        vec![ImportError {
            path: format!("$ (line {}, column {})", e.line(), e.column()),
            reason: format!("not JSON: {e}"),
        }]
    })?;
    let mut errors = Vec::new();
    let Some(root) = doc.as_object() else {
        return Err(vec![err("$", "a flagd document is an object with `flags`")]);
    };
    for k in root.keys() {
        if !matches!(k.as_str(), "$schema" | "flags" | "$evaluators" | "metadata") {
            errors.push(err(
                &child("$", k),
                "unknown key (flagd documents have `flags`, `$evaluators`, `metadata`)",
            ));
        }
    }
    let empty = Map::new();
    let mut object = |key: &str, reason: &str| match root.get(key) {
        None => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => {
            errors.push(err(&child("$", key), reason));
            &empty
        }
    };
    let evaluators = object("$evaluators", "must be an object of named rules");
    let set_metadata = object("metadata", "must be an object");
    let Some(flags) = root.get("flags").and_then(Value::as_object) else {
        errors.push(err("$.flags", "missing, or not an object of flags"));
        return Err(errors);
    };

    let mut schema = Schema::default();
    let mut segments = Vec::new();
    for (name, rule) in evaluators {
        let path = child("$.$evaluators", name);
        if !valid_name(name) {
            errors.push(err(
                &path,
                "evaluator names become segment names: letters, digits, `-`, `_`, `.`",
            ));
            continue;
        }
        let mut tx = Tx {
            flag: None,
            evaluators,
            schema: &mut schema,
            depth: 0,
        };
        // Evaluators may be negated where they are used: written two-valued.
        match tx.cond(rule, &path, true) {
            Ok(c) => segments.push((name.clone(), c)),
            Err(e) => errors.push(e),
        }
    }

    let mut out_flags = Vec::new();
    let mut review = Vec::new();
    for (key, def) in flags {
        match flag(
            key,
            def,
            evaluators,
            set_metadata,
            &mut schema,
            opts,
            fractional,
        ) {
            Ok((text, notes)) => {
                out_flags.push(text);
                review.extend(notes);
            }
            Err(e) => errors.push(e),
        }
    }
    if let Err(e) = schema.conflicts() {
        errors.extend(e);
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    let mut y = String::new();
    let _ = writeln!(
        y,
        "# Imported from flagd flag definitions ({}) by `flagforge import flagd`.",
        opts.source
    );
    let _ = writeln!(
        y,
        "# flagd does not record kind, owner or expiry: lines marked `review` were defaulted."
    );
    let _ = writeln!(
        y,
        "# Attribute types were inferred from how the rules use them (docs/migrating-from-flagd.md)."
    );
    let _ = writeln!(y, "ruleset: {}", yaml::scalar(&opts.ruleset));
    let declared: Vec<_> = schema
        .types
        .iter()
        .filter(|(name, _)| name.as_str() != "targetingKey")
        .collect();
    if !declared.is_empty() {
        let _ = writeln!(y, "context:");
        for (name, (ty, _)) in declared {
            let note = if name == NOW {
                "   # $flagd.timestamp; supplied by the host"
            } else {
                ""
            };
            let _ = writeln!(y, "  {name}: {}{note}", ty.name());
        }
    }
    if !segments.is_empty() {
        let _ = writeln!(y, "segments:   # flagd's $evaluators");
        for (name, c) in &segments {
            let _ = writeln!(
                y,
                "  {}: {{ when: {} }}",
                yaml::scalar(name),
                yaml::condition(c)
            );
        }
    }
    let _ = writeln!(y, "flags:");
    for f in &out_flags {
        y.push_str(f);
    }
    Ok(Imported {
        yaml: y,
        flags: out_flags.len(),
        review,
    })
}

/// One flag's YAML and its review notes.
fn flag(
    key: &str,
    def: &Value,
    evaluators: &Map<String, Value>,
    set_metadata: &Map<String, Value>,
    schema: &mut Schema,
    opts: &Options,
    fractional: Fractional,
) -> Result<(String, Vec<String>), ImportError> {
    let path = child("$.flags", key);
    if !valid_name(key) {
        return Err(err(
            &path,
            "flagforge flag keys use letters, digits, `-`, `_` and `.`",
        ));
    }
    let Some(def) = def.as_object() else {
        return Err(err(&path, "a flag definition is an object"));
    };
    for k in def.keys() {
        if !matches!(
            k.as_str(),
            "state" | "variants" | "defaultVariant" | "targeting" | "metadata"
        ) {
            return Err(err(&child(&path, k), "unknown key in a flag definition"));
        }
    }
    let enabled = match def.get("state").and_then(Value::as_str) {
        Some("ENABLED") => true,
        Some("DISABLED") => false,
        _ => {
            return Err(err(
                &child(&path, "state"),
                "must be \"ENABLED\" or \"DISABLED\"",
            ))
        }
    };
    let Some(variants) = def.get("variants").and_then(Value::as_object) else {
        return Err(err(
            &child(&path, "variants"),
            "missing, or not an object of variants",
        ));
    };
    if variants.is_empty() {
        return Err(err(
            &child(&path, "variants"),
            "a flag needs at least one variant",
        ));
    }
    let kinds: BTreeSet<&str> = variants.values().map(value_kind).collect();
    if kinds.len() > 1 {
        return Err(err(
            &child(&path, "variants"),
            &format!(
                "variants of one flag must share a type (flagforge types every flag), found {}",
                kinds.into_iter().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    if variants.values().any(Value::is_null) {
        return Err(err(
            &child(&path, "variants"),
            "a variant value may not be null",
        ));
    }
    let default = match def.get("defaultVariant") {
        Some(Value::String(d)) if variants.contains_key(d) => d.clone(),
        Some(Value::String(d)) => {
            return Err(err(
                &child(&path, "defaultVariant"),
                &format!("`{d}` is not one of the flag's variants"),
            ))
        }
        _ => {
            return Err(err(
                &child(&path, "defaultVariant"),
                "flagforge flags always serve a variant: name the default variant \
                 (flagd's null default defers to the caller's code default, which a module cannot)",
            ))
        }
    };

    let mut metadata: Vec<(String, Value)> = set_metadata
        .iter()
        .filter(|(k, _)| {
            def.get("metadata")
                .is_none_or(|m| m.get(k.as_str()).is_none())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut fractional = fractional;
    if let Some(m) = def.get("metadata") {
        let Some(m) = m.as_object() else {
            return Err(err(&child(&path, "metadata"), "must be an object"));
        };
        for (k, v) in m {
            if k == FRACTIONAL_METADATA {
                fractional = match v.as_str() {
                    Some("v2") => Fractional::V2,
                    Some("v3") => Fractional::V3,
                    _ => {
                        return Err(err(
                            &child(&child(&path, "metadata"), k),
                            "must be \"v2\" or \"v3\"",
                        ))
                    }
                };
                continue;
            }
            metadata.push((k.clone(), v.clone()));
        }
    }
    for (k, v) in &metadata {
        if !matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
            return Err(err(
                &child(&child(&path, "metadata"), k),
                "flag metadata values are strings, numbers or booleans",
            ));
        }
    }

    let mut rules = Vec::new();
    let mut has_rollout = false;
    if let Some(t) = def.get("targeting") {
        let empty = t.as_object().is_some_and(Map::is_empty);
        if !empty {
            let mut tx = Tx {
                flag: Some(key),
                evaluators,
                schema,
                depth: 0,
            };
            tx.target(
                t,
                &child(&path, "targeting"),
                &[],
                variants,
                fractional,
                &mut rules,
            )?;
            // Falling off the end serves the default anyway.
            while rules
                .last()
                .is_some_and(|r: &Rule| matches!(r.act, Act::Default))
            {
                rules.pop();
            }
            has_rollout = rules.iter().any(|r| matches!(r.act, Act::Rollout { .. }));
        }
    }

    let mut notes = Vec::new();
    let boolean = variants.values().all(Value::is_boolean);
    let kind = if has_rollout && !boolean {
        "experiment"
    } else {
        "release"
    };
    let named = |key: &str| {
        metadata
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_str())
            .map(str::to_owned)
    };
    let owner = named("owner").or_else(|| named("team"));
    let mut y = String::new();
    let _ = writeln!(y, "  - key: {}", yaml::scalar(key));
    let _ = writeln!(y, "    kind: {kind}   # review: flagd has no kind");
    match &owner {
        Some(o) => {
            let _ = writeln!(y, "    owner: {}", yaml::scalar(o));
        }
        None => {
            let _ = writeln!(
                y,
                "    owner: {}   # review: no owner in flagd's metadata",
                yaml::scalar(&opts.owner)
            );
        }
    }
    let _ = writeln!(
        y,
        "    expires: {}   # review: flagd has no expiry",
        opts.expires
    );
    notes.push(format!(
        "{key}: kind `{kind}`{} and expires {} were defaulted",
        if owner.is_none() {
            format!(", owner `{}`", opts.owner)
        } else {
            String::new()
        },
        opts.expires
    ));
    let _ = writeln!(y, "    variants:");
    for (name, v) in variants {
        let _ = writeln!(y, "      {}: {}", yaml::scalar(name), yaml::value(v));
    }
    let _ = writeln!(y, "    default: {}", yaml::scalar(&default));
    if !enabled {
        let _ = writeln!(y, "    enabled: false   # flagd state DISABLED");
    }
    if !metadata.is_empty() {
        let _ = writeln!(y, "    metadata:");
        for (k, v) in &metadata {
            let _ = writeln!(y, "      {}: {}", yaml::scalar(k), yaml::value(v));
        }
    }
    if !rules.is_empty() {
        let _ = writeln!(y, "    rules:");
        for r in &rules {
            let when = match r.when.as_slice() {
                [one] => one.clone(),
                many => many
                    .iter()
                    .map(|c| wrap_and(c))
                    .collect::<Vec<_>>()
                    .join(" && "),
            };
            let lead = if when.is_empty() {
                "      - "
            } else {
                let _ = writeln!(y, "      - when: {}", yaml::condition(&when));
                "        "
            };
            match &r.act {
                Act::Serve(v) => {
                    let _ = writeln!(y, "{lead}serve: {}", yaml::scalar(v));
                }
                Act::Default => {
                    let _ = writeln!(
                        y,
                        "{lead}serve: {}   # flagd: no variant here, the default",
                        yaml::scalar(&default)
                    );
                }
                Act::Rollout {
                    buckets,
                    by,
                    seed,
                    bucketing,
                } => {
                    let b: Vec<String> = buckets
                        .iter()
                        .map(|(v, w)| format!("{}: {w}", yaml::scalar(v)))
                        .collect();
                    let _ = writeln!(y, "{lead}rollout: {{ {} }}", b.join(", "));
                    if let Some(by) = by {
                        let _ = writeln!(y, "        by: {by}");
                    }
                    if let Some(seed) = seed {
                        let _ = writeln!(y, "        seed: {}", yaml::quoted(seed));
                    }
                    let _ = writeln!(y, "        bucketing: {bucketing}");
                }
            }
        }
    }
    Ok((y, notes))
}

/// A translated rule: the conjunction it applies under and what it serves.
#[derive(Debug)]
struct Rule {
    when: Vec<String>,
    act: Act,
}

#[derive(Debug)]
enum Act {
    Serve(String),
    /// flagd serves the default variant here.
    Default,
    Rollout {
        buckets: Vec<(String, u64)>,
        by: Option<String>,
        seed: Option<String>,
        bucketing: &'static str,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    String,
    Number,
    Bool,
    Semver,
    Timestamp,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::String => "string",
            Ty::Number => "number",
            Ty::Bool => "bool",
            Ty::Semver => "semver",
            Ty::Timestamp => "timestamp",
        }
    }
}

/// The context schema, inferred from use.
#[derive(Default)]
struct Schema {
    /// The first use of each attribute fixes its type.
    types: BTreeMap<String, (Ty, String)>,
    /// Later uses of another type.
    clashes: Vec<ImportError>,
}

impl Schema {
    fn require(&mut self, attr: &str, ty: Ty, path: &str) {
        if attr == "targetingKey" && ty != Ty::String {
            self.clashes.push(err(
                path,
                &format!(
                    "`targetingKey` is a string (OpenFeature's targeting key) but is used as a {} here",
                    ty.name()
                ),
            ));
            return;
        }
        match self.types.get(attr) {
            Some((t, _)) if *t == ty => {}
            Some((t, first)) => self.clashes.push(err(
                path,
                &format!(
                    "`{attr}` is used as a {} here but as a {} at {first}; flagforge types \
                     each attribute once",
                    ty.name(),
                    t.name()
                ),
            )),
            None => {
                self.types.insert(attr.to_owned(), (ty, path.to_owned()));
            }
        }
    }

    fn conflicts(&mut self) -> Result<(), Vec<ImportError>> {
        if self.clashes.is_empty() {
            Ok(())
        } else {
            Err(std::mem::take(&mut self.clashes))
        }
    }
}

/// A comparison operand.
enum Term {
    Attr(String),
    Str(String),
    Num(serde_json::Number),
    Bool(bool),
}

struct Tx<'a> {
    /// The flag being translated (`None` in `$evaluators`, where `$flagd.flagKey` has no value).
    flag: Option<&'a str>,
    evaluators: &'a Map<String, Value>,
    schema: &'a mut Schema,
    depth: usize,
}

impl<'a> Tx<'a> {
    /// Rules for a targeting value: what it serves under `guard`.
    /// Returns whether every context satisfying `guard` gets a variant.
    fn target(
        &mut self,
        v: &Value,
        path: &str,
        guard: &[String],
        variants: &Map<String, Value>,
        fractional: Fractional,
        out: &mut Vec<Rule>,
    ) -> Result<bool, ImportError> {
        self.deeper(path)?;
        let covered = match v {
            Value::Null => {
                out.push(Rule {
                    when: guard.to_vec(),
                    act: Act::Default,
                });
                true
            }
            Value::String(s) => {
                out.push(Rule {
                    when: guard.to_vec(),
                    act: Act::Serve(variant(s, variants, path)?),
                });
                true
            }
            Value::Bool(b) => {
                out.push(Rule {
                    when: guard.to_vec(),
                    act: Act::Serve(variant(&b.to_string(), variants, path)?),
                });
                true
            }
            Value::Object(_) => {
                let (op, args) = op(v, path)?;
                let at = child(path, op);
                match op {
                    "if" => {
                        let args = list(args);
                        if args.len() < 2 {
                            return Err(err(&at, "`if` needs a condition and a result"));
                        }
                        let mut i = 0;
                        while i + 1 < args.len() {
                            let c = self.cond(args[i], &index(&at, i), false)?;
                            let mut g = guard.to_vec();
                            g.push(c);
                            let covered = self.target(
                                args[i + 1],
                                &index(&at, i + 1),
                                &g,
                                variants,
                                fractional,
                                out,
                            )?;
                            if !covered {
                                out.push(Rule {
                                    when: g,
                                    act: Act::Default,
                                });
                            }
                            i += 2;
                        }
                        match args.get(i) {
                            Some(e) => {
                                self.target(e, &index(&at, i), guard, variants, fractional, out)?
                            }
                            None => false,
                        }
                    }
                    "fractional" => {
                        let act = self.fractional(list(args), &at, variants, fractional)?;
                        out.push(Rule {
                            when: guard.to_vec(),
                            act,
                        });
                        false
                    }
                    "$ref" => {
                        let (name, rule) = self.reference(args, &at)?;
                        self.target(
                            rule,
                            &child("$.$evaluators", name),
                            guard,
                            variants,
                            fractional,
                            out,
                        )?
                    }
                    other => {
                        return Err(err(
                            &at,
                            &format!(
                                "targeting must produce a variant name; `{other}` produces a \
                                 condition (wrap it in `if`)"
                            ),
                        ))
                    }
                }
            }
            _ => return Err(err(
                path,
                "targeting must produce a variant name (a string), `null` or an `if`/`fractional`",
            )),
        };
        self.depth -= 1;
        Ok(covered)
    }

    fn deeper(&mut self, path: &str) -> Result<(), ImportError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(err(
                path,
                &format!("nested deeper than {MAX_DEPTH} (or a `$ref` cycle)"),
            ));
        }
        Ok(())
    }

    fn reference<'v>(
        &self,
        args: &'v Value,
        at: &str,
    ) -> Result<(&'v str, &'a Value), ImportError> {
        let name = args
            .as_str()
            .ok_or_else(|| err(at, "`$ref` names an evaluator"))?;
        let rule = self
            .evaluators
            .get(name)
            .ok_or_else(|| err(at, &format!("no evaluator `{name}` under $evaluators")))?;
        Ok((name, rule))
    }

    fn fractional(
        &mut self,
        args: Vec<&Value>,
        at: &str,
        variants: &Map<String, Value>,
        fractional: Fractional,
    ) -> Result<Act, ImportError> {
        let mut rest = args.as_slice();
        // flagd's implicit key: flagKey ++ targetingKey (v2), [flagKey, targetingKey] (v3).
        let (mut by, mut seed) = (None, None);
        if let Some((first, tail)) = rest.split_first() {
            if !first.is_array() {
                (by, seed) = self.bucket_by(first, &index(at, 0))?;
                rest = tail;
            }
        }
        let offset = args.len() - rest.len();
        let mut buckets = Vec::new();
        for (i, b) in rest.iter().enumerate() {
            let p = index(at, i + offset);
            let parts = b
                .as_array()
                .ok_or_else(|| err(&p, "a split is `[variant, weight]`"))?;
            let (name, weight) = match parts.as_slice() {
                [Value::String(n)] => (n, 1),
                [Value::String(n), w] => (
                    n,
                    w.as_u64()
                        .filter(|w| *w <= u64::from(u32::MAX))
                        .ok_or_else(|| err(&p, "a weight is a non-negative integer"))?,
                ),
                _ => return Err(err(&p, "a split is `[variant, weight]`")),
            };
            buckets.push((variant(name, variants, &p)?, weight));
        }
        let total: u64 = buckets.iter().map(|(_, w)| w).sum();
        if total == 0 || total > u64::from(u32::MAX) {
            return Err(err(at, "weights must add up to between 1 and 4294967295"));
        }
        match &by {
            Some(a) => self.schema.require(a, Ty::String, at),
            None => self.schema.require("targetingKey", Ty::String, at),
        }
        Ok(Act::Rollout {
            buckets,
            by,
            seed,
            bucketing: fractional.bucketing(),
        })
    }

    /// `by:` and `seed:` for an explicit bucketing expression.
    fn bucket_by(
        &mut self,
        v: &Value,
        at: &str,
    ) -> Result<(Option<String>, Option<String>), ImportError> {
        let refuse = || {
            err(
                at,
                "a bucketing value must be `{\"var\": ATTR}` or \
                 `{\"cat\": [{\"var\": \"$flagd.flagKey\"} or \"text\", {\"var\": ATTR}]}`",
            )
        };
        let (op, args) = op(v, at).map_err(|_| refuse())?;
        match op {
            "var" => Ok((
                Some(self.attr_name(args, &child(at, "var"))?),
                Some(String::new()),
            )),
            "cat" => match list(args).as_slice() {
                [prefix, var] => {
                    let seed = match prefix {
                        Value::String(s) => Some(s.clone()),
                        p if var_name(p) == Some("$flagd.flagKey") => None,
                        _ => return Err(refuse()),
                    };
                    let (op, a) = op_of(var).ok_or_else(refuse)?;
                    if op != "var" {
                        return Err(refuse());
                    }
                    Ok((Some(self.attr_name(a, &index(&child(at, "cat"), 1))?), seed))
                }
                _ => Err(refuse()),
            },
            _ => Err(refuse()),
        }
    }

    /// A condition. `neg`: whether an odd number of `!` is above it (or it is a shared
    /// evaluator), so a missing attribute must make it false rather than unknown.
    fn cond(&mut self, v: &Value, path: &str, neg: bool) -> Result<String, ImportError> {
        self.deeper(path)?;
        let text = match v {
            Value::Bool(b) => b.to_string(),
            Value::Object(_) => self.cond_op(v, path, neg)?,
            _ => {
                return Err(err(
                    path,
                    "a condition must be an operator, `true` or `false` (flagforge does not \
                     take JSON Logic's truthiness of strings and numbers)",
                ))
            }
        };
        self.depth -= 1;
        Ok(text)
    }

    fn cond_op(&mut self, v: &Value, path: &str, neg: bool) -> Result<String, ImportError> {
        let (op, args) = op(v, path)?;
        let at = child(path, op);
        Ok(match op {
            "and" | "or" => {
                let parts = list(args);
                if parts.is_empty() {
                    return Err(err(&at, "needs at least one condition"));
                }
                let mut texts = Vec::new();
                for (i, p) in parts.iter().enumerate() {
                    let c = self.cond(p, &index(&at, i), neg)?;
                    texts.push(if op == "and" {
                        wrap_and(&c)
                    } else {
                        wrap_or(&c)
                    });
                }
                texts.join(if op == "and" { " && " } else { " || " })
            }
            "!" => {
                let inner = single(args, &at)?;
                // Under a `!` a comparison must be false, not unknown, when its attribute is
                // missing: strict from here down.
                format!("!{}", wrap_not(&self.cond(inner, &index(&at, 0), true)?))
            }
            "!!" => self.cond(single(args, &at)?, &index(&at, 0), neg)?,
            "var" => {
                let a = self.attr_name(args, &at)?;
                self.schema.require(&a, Ty::Bool, &at);
                present(neg, &[&a], a.clone())
            }
            "$ref" => {
                let (name, _) = self.reference(args, &at)?;
                format!("segment({})", yaml::quoted(name))
            }
            "==" | "===" | "!=" | "!==" => {
                let [a, b] = pair(args, &at)?;
                let (a, b) = (self.term(a, &index(&at, 0))?, self.term(b, &index(&at, 1))?);
                let equal = op == "==" || op == "===";
                let (attr, lit) = match (a, b) {
                    (Term::Attr(x), lit) | (lit, Term::Attr(x))
                        if !matches!(lit, Term::Attr(_)) =>
                    {
                        (x, lit)
                    }
                    _ => return Err(err(&at, "compare an attribute with a literal value")),
                };
                let lit = self.typed_literal(&attr, lit, &at)?;
                if equal {
                    present(neg, &[&attr], format!("{attr} == {lit}"))
                } else {
                    // flagd: a missing attribute is not equal to anything.
                    format!("!has({attr}) || {attr} != {lit}")
                }
            }
            "<" | "<=" | ">" | ">=" => {
                let terms = list(args);
                let cel = op;
                match terms.as_slice() {
                    [a, b] => {
                        let a = self.term(a, &index(&at, 0))?;
                        let b = self.term(b, &index(&at, 1))?;
                        self.ordering(a, cel, b, &at, neg)?
                    }
                    [a, x, b] => {
                        // JSON Logic's "between": a < x < b.
                        let a = self.term(a, &index(&at, 0))?;
                        let x1 = self.term(x, &index(&at, 1))?;
                        let x2 = self.term(x, &index(&at, 1))?;
                        let b = self.term(b, &index(&at, 2))?;
                        format!(
                            "{} && {}",
                            wrap_and(&self.ordering(a, cel, x1, &at, neg)?),
                            wrap_and(&self.ordering(x2, cel, b, &at, neg)?)
                        )
                    }
                    _ => return Err(err(&at, "takes two operands (or three: between)")),
                }
            }
            "in" => {
                let [needle, hay] = pair(args, &at)?;
                match (self.term(needle, &index(&at, 0))?, hay) {
                    (Term::Attr(x), Value::Array(items)) => {
                        let mut lits = Vec::new();
                        let ty = if items.iter().all(Value::is_string) {
                            Ty::String
                        } else if items.iter().all(|i| i.is_i64() || i.is_u64()) {
                            Ty::Number
                        } else {
                            return Err(err(
                                &index(&at, 1),
                                "an `in` list must hold only strings or only integers",
                            ));
                        };
                        if items.is_empty() {
                            return Err(err(&index(&at, 1), "an empty `in` list never matches"));
                        }
                        for i in items {
                            lits.push(match i {
                                Value::String(s) => yaml::quoted(s),
                                other => other.to_string(),
                            });
                        }
                        self.schema.require(&x, ty, &at);
                        present(neg, &[&x], format!("{x} in [{}]", lits.join(", ")))
                    }
                    (Term::Str(s), hay) => {
                        let h = self.term(hay, &index(&at, 1))?;
                        let Term::Attr(h) = h else {
                            return Err(err(&at, "`in` tests an attribute"));
                        };
                        self.schema.require(&h, Ty::String, &at);
                        present(neg, &[&h], format!("{h}.contains({})", yaml::quoted(&s)))
                    }
                    _ => {
                        return Err(err(
                            &at,
                            "`in` is translated for an attribute in a literal list, or a literal \
                             string in a string attribute",
                        ))
                    }
                }
            }
            "starts_with" | "ends_with" => {
                let [a, b] = pair(args, &at)?;
                let (Term::Attr(x), Term::Str(s)) =
                    (self.term(a, &index(&at, 0))?, self.term(b, &index(&at, 1))?)
                else {
                    return Err(err(&at, "takes an attribute and a literal string"));
                };
                self.schema.require(&x, Ty::String, &at);
                let method = if op == "starts_with" {
                    "startsWith"
                } else {
                    "endsWith"
                };
                present(neg, &[&x], format!("{x}.{method}({})", yaml::quoted(&s)))
            }
            "sem_ver" => {
                let parts = list(args);
                let [a, Value::String(o), b] = parts.as_slice() else {
                    return Err(err(&at, "takes an attribute, an operator and a version"));
                };
                let (Term::Attr(x), Term::Str(ver)) =
                    (self.term(a, &index(&at, 0))?, self.term(b, &index(&at, 2))?)
                else {
                    return Err(err(
                        &at,
                        "takes an attribute, an operator and a literal version",
                    ));
                };
                self.schema.require(&x, Ty::Semver, &at);
                let v = full_version(&ver).ok_or_else(|| {
                    err(
                        &index(&at, 2),
                        &format!("`{ver}` is not a semantic version"),
                    )
                })?;
                let text = match o.as_str() {
                    "=" => format!("{x} == \"{v}\""),
                    "!=" => return Ok(format!("!has({x}) || {x} != \"{v}\"")),
                    "<" | "<=" | ">" | ">=" => format!("{x} {o} \"{v}\""),
                    // Same major: [M.0.0-0, M+1.0.0-0); same minor: [M.m.0-0, M.m+1.0-0).
                    "^" => format!(
                        "{x} >= \"{}.0.0-0\" && {x} < \"{}.0.0-0\"",
                        v.major,
                        v.major + 1
                    ),
                    "~" => format!(
                        "{x} >= \"{}.{}.0-0\" && {x} < \"{}.{}.0-0\"",
                        v.major,
                        v.minor,
                        v.major,
                        v.minor + 1
                    ),
                    other => {
                        return Err(err(
                            &index(&at, 1),
                            &format!("unknown sem_ver operator `{other}`"),
                        ))
                    }
                };
                present(neg, &[&x], text)
            }
            "if" => return Err(err(&at, "an `if` inside a condition has no translation")),
            "fractional" => {
                return Err(err(
                    &at,
                    "`fractional` must produce the flag's variant; inside a condition it has no \
                     translation",
                ))
            }
            other => {
                return Err(err(
                    &at,
                    &format!("JSON Logic operator `{other}` has no flagforge translation"),
                ))
            }
        })
    }

    fn ordering(
        &mut self,
        a: Term,
        op: &str,
        b: Term,
        at: &str,
        neg: bool,
    ) -> Result<String, ImportError> {
        let (attr, lit, op) = match (a, b) {
            (Term::Attr(x), lit) if !matches!(lit, Term::Attr(_)) => (x, lit, op),
            (lit, Term::Attr(x)) => (x, lit, flip(op)),
            _ => return Err(err(at, "compare an attribute with a literal number")),
        };
        if !matches!(lit, Term::Num(_)) {
            return Err(err(
                at,
                "ordering is translated for numbers only (JSON Logic's string ordering has no \
                 flagforge equivalent)",
            ));
        }
        let lit = self.typed_literal(&attr, lit, at)?;
        Ok(present(neg, &[&attr], format!("{attr} {op} {lit}")))
    }

    /// A literal in CEL, fixing the attribute's type from it.
    fn typed_literal(&mut self, attr: &str, lit: Term, at: &str) -> Result<String, ImportError> {
        if attr == NOW {
            let Term::Num(n) = lit else {
                return Err(err(at, "`$flagd.timestamp` compares with Unix seconds"));
            };
            let secs = n
                .as_i64()
                .ok_or_else(|| err(at, "`$flagd.timestamp` compares with whole Unix seconds"))?;
            self.schema.require(NOW, Ty::Timestamp, at);
            let nanos = secs
                .checked_mul(1_000_000_000)
                .ok_or_else(|| err(at, "timestamp out of range"))?;
            return Ok(format!(
                "timestamp(\"{}\")",
                flagforge_protocol::time::format_timestamp(nanos)
            ));
        }
        Ok(match lit {
            Term::Str(s) => {
                self.schema.require(attr, Ty::String, at);
                yaml::quoted(&s)
            }
            Term::Num(n) => {
                self.schema.require(attr, Ty::Number, at);
                n.to_string()
            }
            Term::Bool(b) => {
                self.schema.require(attr, Ty::Bool, at);
                b.to_string()
            }
            Term::Attr(_) => return Err(err(at, "compare an attribute with a literal value")),
        })
    }

    fn term(&mut self, v: &Value, path: &str) -> Result<Term, ImportError> {
        Ok(match v {
            Value::String(s) => Term::Str(s.clone()),
            Value::Number(n) => Term::Num(n.clone()),
            Value::Bool(b) => Term::Bool(*b),
            Value::Object(_) => {
                let (op, args) = op(v, path)?;
                if op != "var" {
                    return Err(err(
                        &child(path, op),
                        "an operand must be `{\"var\": …}` or a literal",
                    ));
                }
                match var_name(v) {
                    Some("$flagd.flagKey") => match self.flag {
                        Some(k) => Term::Str(k.to_owned()),
                        None => {
                            return Err(err(
                                path,
                                "`$flagd.flagKey` in a shared evaluator has no single value",
                            ))
                        }
                    },
                    Some("$flagd.timestamp") => Term::Attr(NOW.to_owned()),
                    _ => Term::Attr(self.attr_name(args, &child(path, "var"))?),
                }
            }
            _ => return Err(err(path, "an operand must be `{\"var\": …}` or a literal")),
        })
    }

    /// The attribute a `var` names.
    fn attr_name(&mut self, args: &Value, path: &str) -> Result<String, ImportError> {
        let name = match args {
            Value::String(s) => s.as_str(),
            Value::Array(a) => match a.as_slice() {
                [Value::String(s)] => s.as_str(),
                _ => {
                    return Err(err(
                        path,
                        "`var` with a default value has no translation (a missing attribute \
                         is never replaced)",
                    ))
                }
            },
            _ => return Err(err(path, "`var` names an attribute")),
        };
        if name.starts_with("$flagd.") {
            return Err(err(
                path,
                &format!("`{name}` is not translated here (only in comparisons)"),
            ));
        }
        if name.contains('.') {
            return Err(err(
                path,
                &format!(
                    "`{name}` reads a nested attribute; flagforge contexts are flat (flatten it \
                     to one attribute in the caller)"
                ),
            ));
        }
        let ident = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ident {
            return Err(err(
                path,
                &format!(
                    "`{name}` is not an attribute name flagforge accepts (letters, digits, `_`)"
                ),
            ));
        }
        Ok(name.to_owned())
    }
}

/// A comparison that must be false, not unknown, when an attribute is missing.
fn present(neg: bool, attrs: &[&str], text: String) -> String {
    if !neg {
        return text;
    }
    let mut out = String::new();
    for a in attrs {
        let _ = write!(out, "has({a}) && ");
    }
    out.push_str(&text);
    out
}

/// The operators of `c` outside parentheses and string literals.
fn top_level(c: &str) -> (bool, bool, bool) {
    let (mut and, mut or, mut space) = (false, false, false);
    let mut depth = 0i32;
    let mut in_str = false;
    let mut escaped = false;
    let mut prev = ' ';
    for ch in c.chars() {
        if in_str {
            match (escaped, ch) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match ch {
            '"' => in_str = true,
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            '&' if depth == 0 && prev == '&' => and = true,
            '|' if depth == 0 && prev == '|' => or = true,
            ' ' if depth == 0 => space = true,
            _ => {}
        }
        prev = ch;
    }
    (and, or, space)
}

/// A condition as an operand of `&&`.
fn wrap_and(c: &str) -> String {
    if top_level(c).1 {
        format!("({c})")
    } else {
        c.to_owned()
    }
}

/// A condition as an operand of `||` (`&&` binds tighter; the parentheses are for the reader).
fn wrap_or(c: &str) -> String {
    if top_level(c).0 {
        format!("({c})")
    } else {
        c.to_owned()
    }
}

/// A condition as the operand of `!`.
fn wrap_not(c: &str) -> String {
    if top_level(c).2 {
        format!("({c})")
    } else {
        c.to_owned()
    }
}

fn flip(op: &str) -> &str {
    match op {
        "<" => ">",
        "<=" => ">=",
        ">" => "<",
        ">=" => "<=",
        other => other,
    }
}

/// A flagd version literal as a full SemVer: `v` prefix dropped, `1.2` read as `1.2.0` (flagd
/// treats them alike).
fn full_version(s: &str) -> Option<semver::Version> {
    let s = s.strip_prefix('v').unwrap_or(s);
    let core_end = s.find(['-', '+']).unwrap_or(s.len());
    let (core, rest) = s.split_at(core_end);
    let dots = core.matches('.').count();
    let core = match dots {
        0 => format!("{core}.0.0"),
        1 => format!("{core}.0"),
        _ => core.to_owned(),
    };
    semver::Version::parse(&format!("{core}{rest}")).ok()
}

fn variant(name: &str, variants: &Map<String, Value>, path: &str) -> Result<String, ImportError> {
    if variants.contains_key(name) {
        Ok(name.to_owned())
    } else {
        Err(err(
            path,
            &format!("`{name}` is not one of the flag's variants"),
        ))
    }
}

fn value_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) | Value::Object(_) => "object",
    }
}

/// The one operator of a JSON Logic object.
fn op<'v>(v: &'v Value, path: &str) -> Result<(&'v str, &'v Value), ImportError> {
    op_of(v).ok_or_else(|| {
        err(
            path,
            "a JSON Logic rule is an object with exactly one operator",
        )
    })
}

fn op_of(v: &Value) -> Option<(&str, &Value)> {
    let m = v.as_object()?;
    if m.len() != 1 {
        return None;
    }
    m.iter().next().map(|(k, a)| (k.as_str(), a))
}

/// The name a `{"var": …}` reads, if it is one.
fn var_name(v: &Value) -> Option<&str> {
    match op_of(v)? {
        ("var", Value::String(s)) => Some(s),
        ("var", Value::Array(a)) => match a.as_slice() {
            [Value::String(s)] => Some(s),
            _ => None,
        },
        _ => None,
    }
}

/// An operator's arguments (JSON Logic allows a lone argument without the array).
fn list(args: &Value) -> Vec<&Value> {
    match args {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    }
}

fn single<'v>(args: &'v Value, at: &str) -> Result<&'v Value, ImportError> {
    match list(args).as_slice() {
        [one] => Ok(one),
        _ => Err(err(at, "takes one operand")),
    }
}

fn pair<'v>(args: &'v Value, at: &str) -> Result<[&'v Value; 2], ImportError> {
    match list(args).as_slice() {
        [a, b] => Ok([a, b]),
        _ => Err(err(at, "takes two operands")),
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn err(path: &str, reason: &str) -> ImportError {
    ImportError {
        path: path.to_owned(),
        reason: reason.to_owned(),
    }
}

/// `path.key`, or `path["key"]` when the key is not a plain name.
fn child(path: &str, key: &str) -> String {
    let plain = key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '$'))
        && !key.is_empty();
    if plain {
        format!("{path}.{key}")
    } else {
        format!("{path}[{}]", yaml::quoted(key))
    }
}

fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        Options {
            ruleset: "t".into(),
            expires: "2030-01-01".into(),
            owner: "team".into(),
            source: "t.json".into(),
        }
    }

    fn rules_of(targeting: &str) -> String {
        let doc = format!(
            r#"{{"flags": {{"f": {{"state": "ENABLED", "variants": {{"on": true, "off": false}},
                "defaultVariant": "off", "targeting": {targeting}}}}}}}"#
        );
        let yaml = import(&doc, &opts(), Fractional::V2)
            .unwrap_or_else(|e| panic!("{e:?}"))
            .yaml;
        yaml.split_once("    rules:\n")
            .map_or(String::new(), |(_, r)| r.to_owned())
    }

    #[test]
    fn versions_are_completed_as_flagd_reads_them() {
        let v = |s| full_version(s).map(|v| v.to_string());
        assert_eq!(v("v1.2").as_deref(), Some("1.2.0"));
        assert_eq!(v("2").as_deref(), Some("2.0.0"));
        assert_eq!(v("1.2.3-rc.1+b5").as_deref(), Some("1.2.3-rc.1+b5"));
        assert_eq!(v("1.2-beta").as_deref(), Some("1.2.0-beta"));
        assert_eq!(v("one"), None);
    }

    #[test]
    fn parentheses_only_where_precedence_needs_them() {
        assert_eq!(wrap_and("a == 1 || b == 2"), "(a == 1 || b == 2)");
        assert_eq!(wrap_and("a == 1 && b == 2"), "a == 1 && b == 2");
        assert_eq!(wrap_and(r#"x == "a || b""#), r#"x == "a || b""#);
        assert_eq!(wrap_or("a && b"), "(a && b)");
        assert_eq!(wrap_not("x.startsWith(\"a b\")"), "x.startsWith(\"a b\")");
        assert_eq!(wrap_not("has(x) && x"), "(has(x) && x)");
    }

    #[test]
    fn a_negated_comparison_is_false_for_a_missing_attribute_as_in_flagd() {
        let r = rules_of(r#"{"if": [{"!": {"==": [{"var": "tier"}, "gold"]}}, "on", "off"]}"#);
        assert!(
            r.contains(r#"when: '!(has(tier) && tier == "gold")'"#),
            "{r}"
        );
        let r = rules_of(r#"{"if": [{"!=": [{"var": "tier"}, "gold"]}, "on", null]}"#);
        assert!(r.contains(r#"when: '!has(tier) || tier != "gold"'"#), "{r}");
        // Not under a negation: the plain comparison (unknown and false agree there).
        let r = rules_of(r#"{"if": [{"==": [{"var": "tier"}, "gold"]}, "on", null]}"#);
        assert!(r.contains(r#"when: 'tier == "gold"'"#), "{r}");
    }

    #[test]
    fn nested_ifs_become_conjunctions_and_stop_where_flagd_serves_the_default() {
        let r = rules_of(
            r#"{"if": [{"==": [{"var": "a"}, "x"]},
                      {"if": [{"==": [{"var": "b"}, "y"]}, "on"]},
                      "on"]}"#,
        );
        assert_eq!(
            r,
            "      - when: 'a == \"x\" && b == \"y\"'\n        serve: on\n      \
             - when: 'a == \"x\"'\n        serve: off   # flagd: no variant here, the default\n      \
             - serve: on\n"
        );
    }

    #[test]
    fn the_targeting_key_is_a_string() {
        let doc = r#"{"flags": {"f": {"state": "ENABLED", "variants": {"on": true, "off": false},
            "defaultVariant": "off", "targeting": {"if": [{"==": [{"var": "targetingKey"}, 7]}, "on", null]}}}}"#;
        let e = import(doc, &opts(), Fractional::V2).unwrap_err();
        assert!(e[0].reason.contains("targetingKey"), "{e:?}");
    }
}
