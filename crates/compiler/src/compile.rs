//! Rule files to the compiled model: walk the located YAML, check every field, resolve names,
//! and collect every error with its file:line:col.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use evaluator_core::bucket::UNLEASH_VARIANT_SEED;
use evaluator_core::ir::{
    Action, AttrIr, Bucketing, FlagIr, Prerequisite, Rollout, RuleIr, RulesetIr, SegmentIr, SetIr,
    Ty, Window, IR_FORMAT,
};
use evaluator_core::time;
use flagforge_protocol::{FlagKind, Lifecycle, Propagation, Value};
use marked_yaml::{types::MarkedMappingNode, Node, Span};

use crate::diag::Diagnostic;
use crate::expr::{compile_condition, Env, ExprError, SegRef, Tables};

/// A rule file's text and the path it is reported under.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path shown in diagnostics.
    pub path: String,
    /// File contents.
    pub text: String,
}

pub(crate) struct Compiler<'f> {
    files: &'f [SourceFile],
    pub diags: Vec<Diagnostic>,
    /// The ruleset's targeting key attribute: what a rollout without `by:` buckets by.
    targeting: String,
}

const TOP_KEYS: &[&str] = &["ruleset", "targeting_key", "context", "segments", "flags"];
const FLAG_KEYS: &[&str] = &[
    "key",
    "kind",
    "owner",
    "description",
    "expires",
    "variants",
    "default",
    "on_error",
    "rules",
    "prerequisites",
    "schedule",
    "states",
    "transitions",
    "enabled",
    "retirement",
    "dependents",
    "docs",
    "propagation",
    "expose",
    "metadata",
];
const RULE_KEYS: &[&str] = &[
    "name",
    "when",
    "serve",
    "rollout",
    "by",
    "seed",
    "bucketing",
];

struct FlagDraft {
    ir: FlagIr,
    key_span: Span,
    prereqs: Vec<(String, Vec<String>, Span)>,
}

impl<'f> Compiler<'f> {
    pub(crate) fn new(files: &'f [SourceFile]) -> Self {
        Compiler {
            files,
            diags: Vec::new(),
            targeting: flagforge_protocol::TARGETING_KEY.to_owned(),
        }
    }

    fn line_text(&self, file: usize, line: usize) -> Option<&str> {
        self.files.get(file)?.text.lines().nth(line.checked_sub(1)?)
    }

    fn error_at(&mut self, file: usize, line: usize, col: usize, message: String) {
        let path = self
            .files
            .get(file)
            .map_or_else(|| "?".to_owned(), |f| f.path.clone());
        let source_line = self.line_text(file, line).map(str::to_owned);
        self.diags.push(Diagnostic {
            file: path,
            line,
            col,
            message,
            source_line,
        });
    }

    pub(crate) fn error(&mut self, span: &Span, message: impl Into<String>) {
        let (file, line, col) = span
            .start()
            .map_or((0, 1, 1), |m| (m.source(), m.line(), m.column()));
        self.error_at(file, line, col, message.into());
    }

    /// Reports an expression error at the right column inside the scalar.
    fn expr_error(&mut self, span: &Span, text: &str, e: ExprError) {
        let (file, line, col) = span
            .start()
            .map_or((0, 1, 1), |m| (m.source(), m.line(), m.column()));
        let quoted = self
            .line_text(file, line)
            .and_then(|l| l.chars().nth(col.saturating_sub(1)))
            .is_some_and(|c| c == '\'' || c == '"');
        let base = col + usize::from(quoted);
        let offset = e.offset.or_else(|| {
            e.needle
                .as_deref()
                .and_then(|n| find_word(text, n))
                .map(|b| text[..b].chars().count())
        });
        let single_line = !text.contains('\n');
        let col = match offset {
            Some(o) if single_line => base + o,
            _ => base,
        };
        self.error_at(file, line, col, e.message);
    }

    fn check_keys(&mut self, map: &MarkedMappingNode, allowed: &[&str], what: &str) {
        for key in map.keys() {
            if !allowed.contains(&key.as_str()) {
                let hint = allowed
                    .iter()
                    .find(|a| similar(a, key.as_str()))
                    .map_or(String::new(), |a| format!("; did you mean `{a}`?"));
                self.error(
                    key.span(),
                    format!(
                        "unknown key `{}` in {what}{hint} (expected one of: {})",
                        key.as_str(),
                        allowed.join(", ")
                    ),
                );
            }
        }
    }

    fn scalar<'n>(
        &mut self,
        map: &'n MarkedMappingNode,
        key: &str,
        what: &str,
    ) -> Option<(&'n str, &'n Span)> {
        match map.get_node(key)? {
            Node::Scalar(s) => Some((s.as_str(), s.span())),
            other => {
                self.error(
                    other.span(),
                    format!("`{key}` of {what} must be a single value"),
                );
                None
            }
        }
    }

    fn required<'n>(
        &mut self,
        map: &'n MarkedMappingNode,
        key: &str,
        what: &str,
    ) -> Option<(&'n str, &'n Span)> {
        if map.get_node(key).is_none() {
            self.error(
                map_start(map),
                format!("{what} is missing required key `{key}`"),
            );
            return None;
        }
        let (v, span) = self.scalar(map, key, what)?;
        if v.trim().is_empty() {
            self.error(span, format!("`{key}` of {what} must not be empty"));
            return None;
        }
        Some((v, span))
    }

    fn string_list(&mut self, node: &Node, what: &str) -> Vec<(String, Span)> {
        match node {
            Node::Sequence(seq) => seq
                .iter()
                .filter_map(|n| match n {
                    Node::Scalar(s) => Some((s.as_str().to_owned(), *s.span())),
                    other => {
                        self.error(
                            other.span(),
                            format!("{what} must be a list of plain values"),
                        );
                        None
                    }
                })
                .collect(),
            other => {
                self.error(other.span(), format!("{what} must be a list, e.g. [a, b]"));
                vec![]
            }
        }
    }

    /// Compiles the parsed documents (one per file) into the model.
    pub(crate) fn compile(&mut self, docs: &[Node], compiler_version: &str) -> Option<RulesetIr> {
        let mut name: Option<(String, Span)> = None;
        let mut schema: BTreeMap<String, (Ty, Span)> = BTreeMap::new();
        let mut seg_nodes: Vec<(String, Span, &MarkedMappingNode)> = Vec::new();
        let mut flag_nodes: Vec<&MarkedMappingNode> = Vec::new();
        let mut targeting: Option<(String, Span)> = None;

        for doc in docs {
            let Some(map) = doc.as_mapping() else {
                self.error(doc.span(), "a rule file must be a mapping with `ruleset`, `context`, `segments` and `flags`");
                continue;
            };
            self.check_keys(map, TOP_KEYS, "a rule file");
            if let Some((n, span)) = self.required(map, "ruleset", "a rule file") {
                {
                    match &name {
                        Some((first, _)) if first != n => {
                            self.error(span, format!("all files of a ruleset must name the same ruleset: `{first}` and `{n}`"));
                        }
                        Some(_) => {}
                        None => {
                            if !valid_name(n) {
                                self.error(span, format!("ruleset name `{n}` must use letters, digits, `-`, `_` or `.`"));
                            }
                            name = Some((n.to_owned(), *span));
                        }
                    }
                }
            }
            if map.get_node("targeting_key").is_some() {
                if let Some((t, span)) = self.required(map, "targeting_key", "a rule file") {
                    match &targeting {
                        Some((first, _)) if first != t => self.error(
                            span,
                            format!("all files of a ruleset must name the same `targeting_key`: `{first}` and `{t}`"),
                        ),
                        Some(_) => {}
                        None => targeting = Some((t.to_owned(), *span)),
                    }
                }
            }
            if let Some(node) = map.get_node("context") {
                match node.as_mapping() {
                    Some(ctx) => {
                        for (k, v) in ctx.iter() {
                            let Some(tyname) = v.as_scalar() else {
                                self.error(
                                    v.span(),
                                    format!(
                                        "type of attribute `{}` must be a type name",
                                        k.as_str()
                                    ),
                                );
                                continue;
                            };
                            let Some(ty) = Ty::parse(tyname.as_str()) else {
                                self.error(tyname.span(), format!(
                                    "unknown type `{}`; expected one of: bool, int, number, string, semver, timestamp, duration, list<string>, list<int>, list<number>",
                                    tyname.as_str()
                                ));
                                continue;
                            };
                            match schema.get(k.as_str()) {
                                Some((prev, _)) if *prev != ty => self.error(
                                    k.span(),
                                    format!(
                                        "attribute `{}` is declared {} here and {} elsewhere",
                                        k.as_str(),
                                        ty.name(),
                                        prev.name()
                                    ),
                                ),
                                _ => {
                                    schema.insert(k.as_str().to_owned(), (ty, *k.span()));
                                }
                            }
                        }
                    }
                    None => self.error(
                        node.span(),
                        "`context` must map attribute names to types, e.g. `market: string`",
                    ),
                }
            }
            if let Some(node) = map.get_node("segments") {
                match node.as_mapping() {
                    Some(segs) => {
                        for (k, v) in segs.iter() {
                            match v.as_mapping() {
                                Some(m) => seg_nodes.push((k.as_str().to_owned(), *k.span(), m)),
                                None => self.error(v.span(), format!(
                                    "segment `{}` must be a mapping with `members: [...]` or `when: <expression>`",
                                    k.as_str()
                                )),
                            }
                        }
                    }
                    None => self.error(
                        node.span(),
                        "`segments` must map segment names to definitions",
                    ),
                }
            }
            if let Some(node) = map.get_node("flags") {
                match node.as_sequence() {
                    Some(seq) => {
                        for f in seq.iter() {
                            match f.as_mapping() {
                                Some(m) => flag_nodes.push(m),
                                None => self.error(
                                    f.span(),
                                    "each entry of `flags` must be a mapping starting with `key:`",
                                ),
                            }
                        }
                    }
                    None => self.error(node.span(), "`flags` must be a list of flag definitions"),
                }
            }
        }
        let (name, _) = name?;

        // The targeting key: `targetingKey` itself by default (declared `string` if the
        // schema does not declare it), or a declared string attribute it stands for.
        let tk = flagforge_protocol::TARGETING_KEY;
        match &targeting {
            None => {
                schema
                    .entry(tk.to_owned())
                    .or_insert((Ty::String, Span::new_blank()));
            }
            Some((t, span)) if t == tk => {
                schema.entry(tk.to_owned()).or_insert((Ty::String, *span));
            }
            Some((t, span)) => {
                match schema.get(t.as_str()) {
                    Some((Ty::String, _)) => {}
                    Some((ty, _)) => self.error(
                        span,
                        format!("the targeting key `{t}` must be a string attribute (OpenFeature's `targetingKey` is a string), but it is declared {}", ty.name()),
                    ),
                    None => self.error(
                        span,
                        format!("unknown attribute `{t}`; declare the targeting key under `context`, e.g. `{t}: string`"),
                    ),
                }
                if let Some((_, at)) = schema.get(tk) {
                    self.error(
                        at,
                        format!("`{tk}` is OpenFeature's targeting key; with `targeting_key: {t}` it stands for `{t}` and cannot be declared as well"),
                    );
                }
            }
        }
        if let Some((t, _)) = &targeting {
            self.targeting.clone_from(t);
        }

        // Schema: sorted by name, slot = position.
        let schema_ir: Vec<AttrIr> = schema
            .iter()
            .map(|(n, (ty, _))| AttrIr {
                name: n.clone(),
                ty: *ty,
            })
            .collect();
        let attrs: HashMap<String, (u32, Ty)> = schema_ir
            .iter()
            .enumerate()
            .map(|(i, a)| (a.name.clone(), (i as u32, a.ty)))
            .collect();

        let mut tables = Tables::default();
        let mut segments: HashMap<String, SegRef> = HashMap::new();
        let mut segment_ir = Vec::new();
        for (seg_name, span, m) in &seg_nodes {
            self.check_keys(
                m,
                &["members", "when", "description"],
                &format!("segment `{seg_name}`"),
            );
            if segments.contains_key(seg_name) {
                self.error(span, format!("segment `{seg_name}` is defined twice"));
                continue;
            }
            match (m.get_node("members"), m.get_node("when")) {
                (Some(members), None) => {
                    let items = self.string_list(members, &format!("`members` of segment `{seg_name}`"));
                    let ints: Option<Vec<i64>> = items.iter().map(|(s, _)| s.parse::<i64>().ok()).collect();
                    let all_plain_ints = members.as_sequence().is_some_and(|seq| {
                        seq.iter().all(|n| n.as_scalar().is_some_and(|s| s.may_coerce()))
                    });
                    let (set, ty) = match ints {
                        Some(mut ints) if all_plain_ints && !ints.is_empty() => {
                            ints.sort_unstable();
                            ints.dedup();
                            (SetIr::Ints(ints), Ty::Int)
                        }
                        _ => {
                            let mut strings: Vec<String> = items.into_iter().map(|(s, _)| s).collect();
                            strings.sort_unstable();
                            strings.dedup();
                            (SetIr::Strings(strings), Ty::String)
                        }
                    };
                    let set = tables.intern_set(set);
                    segments.insert(seg_name.clone(), SegRef::Members { set, ty });
                }
                (None, Some(when)) => {
                    let Some(w) = when.as_scalar() else {
                        self.error(when.span(), format!("`when` of segment `{seg_name}` must be an expression string"));
                        continue;
                    };
                    let mut env = Env { attrs: &attrs, segments: &segments, tables: &mut tables, reads: BTreeSet::new(), item: None };
                    match compile_condition(w.as_str(), &mut env) {
                        Ok(e) => {
                            let reads = env.reads;
                            let index = segment_ir.len() as u32;
                            segment_ir.push(SegmentIr { name: seg_name.clone(), when: e });
                            segments.insert(seg_name.clone(), SegRef::Expr { index, reads });
                        }
                        Err(e) => self.expr_error(w.span(), w.as_str(), e),
                    }
                }
                _ => self.error(span, format!("segment `{seg_name}` needs exactly one of `members: [...]` or `when: <expression>`")),
            }
        }

        let now_slot = attrs
            .get("now")
            .filter(|(_, t)| *t == Ty::Timestamp)
            .map(|(s, _)| *s);
        let mut drafts: Vec<FlagDraft> = Vec::new();
        let mut seen: HashMap<String, Span> = HashMap::new();
        for m in &flag_nodes {
            if let Some(d) = self.flag(m, &attrs, &segments, &mut tables, now_slot) {
                if let Some(prev) = seen.get(&d.ir.key) {
                    let at = prev.start().map_or(String::new(), |p| {
                        format!(" (first defined at line {})", p.line())
                    });
                    self.error(
                        &d.key_span,
                        format!("flag `{}` is defined twice{at}", d.ir.key),
                    );
                    continue;
                }
                seen.insert(d.ir.key.clone(), d.key_span);
                drafts.push(d);
            }
        }
        self.resolve_prerequisites(&mut drafts);
        if !self.diags.is_empty() {
            return None;
        }
        // A flag reading the aliased attribute also reads `targetingKey`: hosts send it.
        if self.targeting != tk {
            for d in &mut drafts {
                if d.ir.reads.contains(&self.targeting) && !d.ir.reads.iter().any(|r| r == tk) {
                    d.ir.reads.push(tk.to_owned());
                    d.ir.reads.sort();
                }
            }
        }
        Some(RulesetIr {
            format: IR_FORMAT,
            name,
            compiler: compiler_version.to_owned(),
            schema: schema_ir,
            sets: tables.sets,
            patterns: tables.patterns,
            semvers: tables.semvers,
            segments: segment_ir,
            flags: drafts.into_iter().map(|d| d.ir).collect(),
            targeting: (self.targeting != tk)
                .then(|| attrs.get(&self.targeting).map(|(slot, _)| *slot))
                .flatten(),
        })
    }

    fn resolve_prerequisites(&mut self, drafts: &mut [FlagDraft]) {
        let index: HashMap<String, usize> = drafts
            .iter()
            .enumerate()
            .map(|(i, d)| (d.ir.key.clone(), i))
            .collect();
        let mut edges: Vec<Vec<usize>> = vec![Vec::new(); drafts.len()];
        for i in 0..drafts.len() {
            let prereqs = std::mem::take(&mut drafts[i].prereqs);
            for (key, variants, span) in &prereqs {
                let Some(&j) = index.get(key) else {
                    self.error(
                        span,
                        format!("prerequisite flag `{key}` is not defined in this ruleset"),
                    );
                    continue;
                };
                if j == i {
                    self.error(span, format!("flag `{key}` cannot be its own prerequisite"));
                    continue;
                }
                let mut ids = Vec::new();
                for v in variants {
                    match drafts[j].ir.variants.iter().position(|(n, _)| n == v) {
                        Some(p) => ids.push(p as u32),
                        None => self.error(
                            span,
                            format!(
                                "flag `{key}` has no variant `{v}` (variants: {})",
                                drafts[j]
                                    .ir
                                    .variants
                                    .iter()
                                    .map(|(n, _)| n.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        ),
                    }
                }
                edges[i].push(j);
                drafts[i].ir.prerequisites.push(Prerequisite {
                    flag: j as u32,
                    variants: ids,
                });
            }
            drafts[i].prereqs = prereqs;
        }
        // Cycle detection (iterative DFS, colours: 0 new, 1 on stack, 2 done).
        let mut colour = vec![0u8; drafts.len()];
        for start in 0..drafts.len() {
            if colour[start] != 0 {
                continue;
            }
            let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
            colour[start] = 1;
            while let Some(&mut (node, ref mut next)) = stack.last_mut() {
                if let Some(&child) = edges[node].get(*next) {
                    *next += 1;
                    match colour[child] {
                        0 => {
                            colour[child] = 1;
                            stack.push((child, 0));
                        }
                        1 => {
                            let pos = stack.iter().position(|(n, _)| *n == child).unwrap_or(0);
                            let mut cycle: Vec<&str> = stack[pos..]
                                .iter()
                                .map(|(n, _)| drafts[*n].ir.key.as_str())
                                .collect();
                            cycle.push(&drafts[child].ir.key);
                            let span = drafts[node]
                                .prereqs
                                .iter()
                                .find(|(k, _, _)| *k == drafts[child].ir.key)
                                .map_or(drafts[node].key_span, |p| p.2);
                            self.error(
                                &span,
                                format!("prerequisite cycle: {}", cycle.join(" -> ")),
                            );
                        }
                        _ => {}
                    }
                } else {
                    colour[node] = 2;
                    stack.pop();
                }
            }
        }
    }

    fn flag(
        &mut self,
        m: &MarkedMappingNode,
        attrs: &HashMap<String, (u32, Ty)>,
        segments: &HashMap<String, SegRef>,
        tables: &mut Tables,
        now_slot: Option<u32>,
    ) -> Option<FlagDraft> {
        let (key, key_span) = self.required(m, "key", "a flag")?;
        let what = format!("flag `{key}`");
        self.check_keys(m, FLAG_KEYS, &what);
        if !valid_name(key) {
            self.error(
                key_span,
                format!("flag key `{key}` must use letters, digits, `-`, `_` or `.`"),
            );
        }
        let errors_before = self.diags.len();
        let kind = match self.required(m, "kind", &what) {
            Some((k, span)) => match FlagKind::ALL.iter().find(|x| x.as_str() == k) {
                Some(kind) => Some(*kind),
                None => {
                    self.error(span, format!("unknown kind `{k}`; expected one of: release, experiment, ops, migration, policy"));
                    None
                }
            },
            None => None,
        };
        let owner = self.required(m, "owner", &what).map(|(o, _)| o.to_owned());
        let description = self
            .scalar(m, "description", &what)
            .map(|(d, _)| d.to_owned());
        let expires = match self.scalar(m, "expires", &what) {
            Some((e, span)) => {
                if time::parse_date(e).is_none() {
                    self.error(
                        span,
                        format!("`expires` must be a date YYYY-MM-DD, found `{e}`"),
                    );
                }
                Some(e.to_owned())
            }
            None => {
                if let Some(k) = kind.filter(|k| k.requires_expiry()) {
                    self.error(map_start(m), format!("{what} of kind {} needs `expires: YYYY-MM-DD` (only ops and policy flags may live forever)", k.as_str()));
                }
                None
            }
        };
        let propagation = match self.scalar(m, "propagation", &what) {
            Some((p, span)) => match Propagation::ALL.iter().find(|x| x.as_str() == p) {
                Some(p) => Some(*p),
                None => {
                    self.error(
                        span,
                        format!("unknown propagation class `{p}`; expected one of: immediate (≤ 1 s), near-real-time (≤ 10 s), eventual (≤ 5 min)"),
                    );
                    None
                }
            },
            None => kind.map(Propagation::default_for),
        };
        let expose = match m.get_node("expose") {
            Some(node) => {
                let list = self.string_list(node, "`expose`");
                let mut out: Vec<String> = Vec::new();
                for (a, span) in list {
                    if !crate::audience::valid_name(&a) {
                        self.error(&span, format!("audience `{a}` must be lowercase letters, digits and `-` (e.g. `browser`)"));
                    } else if out.contains(&a) {
                        self.error(&span, format!("audience `{a}` is listed twice"));
                    } else {
                        out.push(a);
                    }
                }
                out
            }
            None => Vec::new(),
        };
        let enabled = match self.scalar(m, "enabled", &what) {
            Some((v, span)) => match v {
                "true" => true,
                "false" => false,
                _ => {
                    self.error(span, "`enabled` must be true or false");
                    true
                }
            },
            None => true,
        };
        let lifecycle = Lifecycle {
            retirement: self
                .scalar(m, "retirement", &what)
                .map(|(v, _)| v.to_owned()),
            dependents: m
                .get_node("dependents")
                .map(|n| self.string_list(n, "`dependents`"))
                .unwrap_or_default()
                .into_iter()
                .map(|(s, _)| s)
                .collect(),
            docs: self.scalar(m, "docs", &what).map(|(v, _)| v.to_owned()),
        };

        let metadata = m
            .get_node("metadata")
            .map(|n| self.metadata(n))
            .unwrap_or_default();

        // Variants: migration states, explicit variants, or the boolean shorthand.
        let mut states = Vec::new();
        let mut floats = false;
        let variants: Vec<(String, Value)> = match (
            kind,
            m.get_node("states"),
            m.get_node("variants"),
        ) {
            (Some(FlagKind::Migration), Some(st), None) => {
                let list = self.string_list(st, "`states`");
                let mut seen = BTreeSet::new();
                for (s, span) in &list {
                    if !seen.insert(s.clone()) {
                        self.error(span, format!("state `{s}` is listed twice"));
                    }
                }
                if list.is_empty() {
                    self.error(st.span(), "a migration flag needs at least one state");
                }
                states = list.iter().map(|(s, _)| s.clone()).collect();
                list.into_iter()
                    .map(|(s, _)| (s.clone(), Value::String(s)))
                    .collect()
            }
            (Some(FlagKind::Migration), None, _) => {
                self.error(m.span(), format!("{what} is a migration flag: declare its `states: [LEGACY_ONLY, ...]` instead of `variants`"));
                vec![]
            }
            (_, Some(st), _) if kind != Some(FlagKind::Migration) => {
                self.error(st.span(), "`states` is only for migration flags");
                vec![]
            }
            (_, _, Some(vs)) => {
                floats = written_as_float(vs);
                self.variants(vs)
            }
            (_, _, None) => vec![
                ("on".into(), Value::Bool(true)),
                ("off".into(), Value::Bool(false)),
            ],
        };
        let transitions = self.transitions(m, &states);
        let variant_index = |name: &str| {
            variants
                .iter()
                .position(|(n, _)| n == name)
                .map(|i| i as u32)
        };
        let names = variants
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let mut lookup = |this: &mut Self, name: &str, span: &Span, role: &str| -> Option<u32> {
            let found = variant_index(name);
            if found.is_none() && !variants.is_empty() {
                let noun = if states.is_empty() {
                    "variant"
                } else {
                    "state"
                };
                this.error(
                    span,
                    format!(
                        "{role} `{name}` is not a declared {noun} of {what} (declared: {names})"
                    ),
                );
            }
            found
        };
        let default = match self.required(m, "default", &what) {
            Some((d, span)) => lookup(self, d, span, "default"),
            None => None,
        };
        let is_bool =
            !variants.is_empty() && variants.iter().all(|(_, v)| matches!(v, Value::Bool(_)));
        let on_error = match self.scalar(m, "on_error", &what) {
            Some(("closed" | "open", span)) if !is_bool => {
                self.error(
                    span,
                    "`on_error: closed`/`open` applies to boolean flags; name a variant instead",
                );
                None
            }
            Some((policy @ ("closed" | "open"), _)) => {
                let want = policy == "open";
                variants
                    .iter()
                    .position(|(_, v)| *v == Value::Bool(want))
                    .map(|i| i as u32)
            }
            Some((v, span)) => lookup(self, v, span, "on_error"),
            // Policy flags fail closed; everything else falls back to its default.
            None if kind == Some(FlagKind::Policy) && is_bool => variants
                .iter()
                .position(|(_, v)| *v == Value::Bool(false))
                .map(|i| i as u32)
                .or(default),
            None => default,
        };

        let mut reads = BTreeSet::new();
        let mut rules = Vec::new();
        if let Some(node) = m.get_node("rules") {
            match node.as_sequence() {
                Some(seq) => {
                    for (i, r) in seq.iter().enumerate() {
                        let Some(rm) = r.as_mapping() else {
                            self.error(r.span(), "each rule must be a mapping with `when:` and `serve:` or `rollout:`");
                            continue;
                        };
                        if let Some(rule) =
                            self.rule(rm, i, key, attrs, segments, tables, &mut reads, &mut lookup)
                        {
                            rules.push(rule);
                        }
                    }
                }
                None => self.error(node.span(), "`rules` must be a list"),
            }
        }

        let mut schedule = Vec::new();
        if let Some(node) = m.get_node("schedule") {
            let windows: Vec<&Node> = match node {
                Node::Sequence(seq) => seq.iter().collect(),
                Node::Mapping(_) => vec![node],
                Node::Scalar(_) => {
                    self.error(
                        node.span(),
                        "`schedule` must be a window `{from: ..., until: ...}` or a list of them",
                    );
                    vec![]
                }
            };
            for w in windows {
                let Some(wm) = w.as_mapping() else {
                    self.error(
                        w.span(),
                        "a schedule window must be a mapping with `from` and/or `until`",
                    );
                    continue;
                };
                self.check_keys(wm, &["from", "until"], "a schedule window");
                let bound = |this: &mut Self, k: &str| -> Option<i64> {
                    let (v, span) = this.scalar(wm, k, "a schedule window")?;
                    let t = time::parse_timestamp(v);
                    if t.is_none() {
                        this.error(span, format!("`{k}` must be an RFC 3339 timestamp such as 2026-12-01T00:00:00Z, found `{v}`"));
                    }
                    t
                };
                let from = bound(self, "from");
                let until = bound(self, "until");
                if from.is_none() && until.is_none() {
                    self.error(w.span(), "a schedule window needs `from`, `until` or both");
                    continue;
                }
                if let (Some(f), Some(u)) = (from, until) {
                    if f >= u {
                        self.error(w.span(), "schedule window ends before it starts");
                    }
                }
                schedule.push(Window { from, until });
            }
            if !schedule.is_empty() && now_slot.is_none() {
                self.error(
                    node.span(),
                    "a schedule needs the context to declare `now: timestamp`",
                );
            }
            reads.insert("now".to_owned());
        }

        let mut prereqs = Vec::new();
        if let Some(node) = m.get_node("prerequisites") {
            match node.as_sequence() {
                Some(seq) => {
                    for p in seq.iter() {
                        let Some(pm) = p.as_mapping() else {
                            self.error(p.span(), "a prerequisite must be `{flag: KEY, variant: NAME}` or `{flag: KEY, variants: [..]}`");
                            continue;
                        };
                        self.check_keys(pm, &["flag", "variant", "variants"], "a prerequisite");
                        let Some((pk, _)) = self.required(pm, "flag", "a prerequisite") else {
                            continue;
                        };
                        let vs: Vec<String> = match (
                            pm.get_node("variant"),
                            pm.get_node("variants"),
                        ) {
                            (Some(Node::Scalar(v)), None) => vec![v.as_str().to_owned()],
                            (None, Some(list)) => self
                                .string_list(list, "`variants`")
                                .into_iter()
                                .map(|(s, _)| s)
                                .collect(),
                            _ => {
                                self.error(pm.span(), "a prerequisite needs exactly one of `variant: NAME` or `variants: [..]`");
                                continue;
                            }
                        };
                        prereqs.push((pk.to_owned(), vs, *pm.span()));
                    }
                }
                None => self.error(node.span(), "`prerequisites` must be a list"),
            }
        }

        if self.diags.len() > errors_before {
            return None;
        }
        Some(FlagDraft {
            ir: FlagIr {
                key: key.to_owned(),
                kind: kind?,
                owner: owner?,
                description,
                expires,
                lifecycle,
                metadata,
                variants,
                default: default?,
                on_error: on_error?,
                states,
                transitions,
                enabled,
                schedule,
                now_slot,
                prerequisites: Vec::new(),
                rules,
                reads: reads.into_iter().collect(),
                propagation: propagation?,
                expose,
                floats,
            },
            key_span: *key_span,
            prereqs,
        })
    }

    /// `transitions: { STATE: [STATE, ...] }`: the moves a migration flag may make between
    /// versions; absent means each state to its neighbours.
    fn transitions(&mut self, m: &MarkedMappingNode, states: &[String]) -> Vec<(u32, u32)> {
        let Some(node) = m.get_node("transitions") else {
            return Vec::new();
        };
        if states.is_empty() {
            self.error(
                node.span(),
                "`transitions` is only for migration flags (with `states`)",
            );
            return Vec::new();
        }
        let Some(map) = node.as_mapping() else {
            self.error(
                node.span(),
                "`transitions` must map each state to the states it may move to, e.g. `LEGACY_ONLY: [DUAL_WRITE]`",
            );
            return Vec::new();
        };
        let index = |s: &str| states.iter().position(|x| x == s).map(|i| i as u32);
        let declared = states.join(", ");
        let mut out = BTreeSet::new();
        for (from, targets) in map.iter() {
            let Some(f) = index(from.as_str()) else {
                self.error(
                    from.span(),
                    format!(
                        "`{}` is not a declared state (declared: {declared})",
                        from.as_str()
                    ),
                );
                continue;
            };
            for (to, span) in self.string_list(targets, "transition targets") {
                match index(&to) {
                    Some(t) if t == f => {
                        self.error(&span, format!("`{to}` → `{to}` is not a transition"));
                    }
                    Some(t) => {
                        out.insert((f, t));
                    }
                    None => self.error(
                        &span,
                        format!("`{to}` is not a declared state (declared: {declared})"),
                    ),
                }
            }
        }
        out.into_iter().collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn rule(
        &mut self,
        rm: &MarkedMappingNode,
        index: usize,
        flag_key: &str,
        attrs: &HashMap<String, (u32, Ty)>,
        segments: &HashMap<String, SegRef>,
        tables: &mut Tables,
        reads: &mut BTreeSet<String>,
        lookup: &mut dyn FnMut(&mut Self, &str, &Span, &str) -> Option<u32>,
    ) -> Option<RuleIr> {
        let what = format!("rule {index} of flag `{flag_key}`");
        self.check_keys(rm, RULE_KEYS, &what);
        let line = rm.span().start().map_or(0, |m| m.line());
        let file = rm.span().start().map_or(0, |m| m.source());
        // Only the file name: the module must not depend on where the sources live.
        let path = self.files.get(file).map_or("?", |f| {
            std::path::Path::new(&f.path)
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or(f.path.as_str())
        });
        let (when, when_text) = match self.scalar(rm, "when", &what) {
            Some((text, span)) => {
                let mut env = Env {
                    attrs,
                    segments,
                    tables,
                    reads: BTreeSet::new(),
                    item: None,
                };
                match compile_condition(text, &mut env) {
                    Ok(e) => {
                        reads.extend(env.reads);
                        (Some(e), Some(text.to_owned()))
                    }
                    Err(e) => {
                        self.expr_error(span, text, e);
                        return None;
                    }
                }
            }
            None => (None, None),
        };
        let source = match &when_text {
            Some(t) => format!("{path}:{line}: {}", excerpt(t)),
            None => format!("{path}:{line}: (always)"),
        };
        let action = match (rm.get_node("serve"), rm.get_node("rollout")) {
            (Some(serve), None) => {
                if ["by", "seed", "bucketing"]
                    .iter()
                    .any(|k| rm.get_node(k).is_some())
                {
                    self.error(
                        rm.span(),
                        format!(
                            "{what}: `by`, `seed` and `bucketing` belong to `rollout`, not `serve`"
                        ),
                    );
                }
                let Some(s) = serve.as_scalar() else {
                    self.error(serve.span(), "`serve` names one variant");
                    return None;
                };
                Action::Serve(lookup(self, s.as_str(), s.span(), "served value")?)
            }
            (None, Some(ro)) => {
                let Some(rom) = ro.as_mapping() else {
                    self.error(
                        ro.span(),
                        "`rollout` maps variants to integer weights, e.g. `{ on: 10, off: 90 }`",
                    );
                    return None;
                };
                let mut buckets = Vec::new();
                let mut total: u64 = 0;
                for (v, w) in rom.iter() {
                    let idx = lookup(self, v.as_str(), v.span(), "rollout variant");
                    let weight = w.as_scalar().and_then(|s| s.as_str().parse::<u32>().ok());
                    match (idx, weight) {
                        (Some(i), Some(wt)) => {
                            total += u64::from(wt);
                            buckets.push((i, wt));
                        }
                        (_, None) => {
                            self.error(w.span(), "a rollout weight must be a non-negative integer")
                        }
                        _ => {}
                    }
                }
                if buckets.is_empty() || total == 0 {
                    self.error(
                        ro.span(),
                        "a rollout needs at least one variant with a weight above 0",
                    );
                    return None;
                }
                if total > u64::from(u32::MAX) {
                    self.error(ro.span(), "rollout weights add up to more than 4294967295");
                    return None;
                }
                // Without `by:`, the ruleset's targeting key.
                let targeting = self.targeting.clone();
                let (by, by_span) = match rm.get_node("by") {
                    Some(_) => self.required(rm, "by", &what)?,
                    None => (targeting.as_str(), ro.span()),
                };
                let slot = match attrs.get(by) {
                    Some((slot, Ty::String | Ty::Int)) => *slot,
                    Some((_, ty)) => {
                        self.error(
                            by_span,
                            format!(
                                "rollouts bucket by a string or int attribute, but `{by}` is {}",
                                ty.name()
                            ),
                        );
                        return None;
                    }
                    None => {
                        self.error(
                            by_span,
                            format!("unknown attribute `{by}`; declare it under `context`"),
                        );
                        return None;
                    }
                };
                reads.insert(by.to_owned());
                let seed = self
                    .scalar(rm, "seed", &what)
                    .map_or_else(|| flag_key.to_owned(), |(s, _)| s.to_owned());
                let bucketing = match self.scalar(rm, "bucketing", &what) {
                    None | Some(("flagd-v2", _)) => Bucketing::FlagdV2,
                    // flagd's implicit key is `[flagKey, targetingKey]`; an explicit `by:` is
                    // the bucketing expression, hashed as a value.
                    Some(("flagd-v3", _)) => Bucketing::FlagdV3 {
                        pair: rm.get_node("by").is_none(),
                    },
                    Some(("unleash", _)) => Bucketing::Unleash { hash_seed: 0 },
                    Some(("unleash-variants", _)) => Bucketing::Unleash {
                        hash_seed: UNLEASH_VARIANT_SEED,
                    },
                    Some((other, span)) => {
                        self.error(
                            span,
                            format!(
                                "unknown bucketing `{other}`; one of flagd-v2 (the default), \
                                 flagd-v3, unleash, unleash-variants (docs/bucketing.md)"
                            ),
                        );
                        return None;
                    }
                };
                Action::Rollout(Rollout {
                    by: slot,
                    seed,
                    buckets,
                    bucketing,
                })
            }
            (Some(_), Some(_)) => {
                self.error(
                    rm.span(),
                    format!("{what} has both `serve` and `rollout`; keep one"),
                );
                return None;
            }
            (None, None) => {
                self.error(
                    rm.span(),
                    format!("{what} needs `serve: VARIANT` or `rollout: {{...}}`"),
                );
                return None;
            }
        };
        Some(RuleIr {
            when,
            source,
            action,
        })
    }

    /// `metadata:`: a mapping of names to strings, numbers and booleans (OpenFeature's flag
    /// metadata types).
    fn metadata(&mut self, node: &Node) -> Vec<(String, Value)> {
        let Some(map) = node.as_mapping() else {
            self.error(
                node.span(),
                "`metadata` maps names to strings, numbers or booleans, e.g. `{ ticket: OPS-12 }`",
            );
            return vec![];
        };
        let mut out = Vec::new();
        for (k, v) in map.iter() {
            match self.value(v) {
                // One spelling per number on every host (JavaScript has one number type): an
                // integral value is an integer.
                Some(Value::Float(f)) if f.fract() == 0.0 => {
                    if f.abs() < 9_007_199_254_740_992.0 {
                        out.push((k.as_str().to_owned(), Value::Int(f as i64)));
                    } else {
                        self.error(
                            v.span(),
                            format!("metadata `{}` is a number beyond ±2^53", k.as_str()),
                        );
                    }
                }
                Some(Value::Int(n)) if n.unsigned_abs() >= 1 << 53 => self.error(
                    v.span(),
                    format!("metadata `{}` is a number beyond ±2^53", k.as_str()),
                ),
                Some(
                    value @ (Value::String(_) | Value::Int(_) | Value::Float(_) | Value::Bool(_)),
                ) => out.push((k.as_str().to_owned(), value)),
                Some(_) => self.error(
                    v.span(),
                    format!(
                        "metadata `{}` must be a string, number or boolean",
                        k.as_str()
                    ),
                ),
                None => {}
            }
        }
        // Keys in UTF-8 byte order: the order every host writes a map in.
        out.sort_by(|(a, _), (b, _)| a.cmp(b));
        out
    }

    fn variants(&mut self, node: &Node) -> Vec<(String, Value)> {
        let Some(map) = node.as_mapping() else {
            self.error(
                node.span(),
                "`variants` maps variant names to values, e.g. `{ on: true, off: false }`",
            );
            return vec![];
        };
        let mut out: Vec<(String, Value)> = Vec::new();
        for (k, v) in map.iter() {
            if let Some(value) = self.value(v) {
                out.push((k.as_str().to_owned(), value));
            }
        }
        let kinds: BTreeSet<&str> = out
            .iter()
            .map(|(_, v)| match v {
                Value::Int(_) | Value::Float(_) => "number",
                other => other.type_name(),
            })
            .collect();
        if kinds.len() > 1 {
            self.error(
                node.span(),
                format!(
                    "all variants of a flag must have one type, found: {}",
                    kinds.into_iter().collect::<Vec<_>>().join(", ")
                ),
            );
        }
        if out.is_empty() {
            self.error(node.span(), "a flag needs at least one variant");
        }
        out
    }

    /// A YAML value as a variant value (plain scalars are typed, quoted ones are strings).
    pub(crate) fn value(&mut self, node: &Node) -> Option<Value> {
        self.value_with(node, false)
    }

    /// Like [`Self::value`], optionally accepting `null` (contexts may hold nulls; variants
    /// may not).
    pub(crate) fn value_with(&mut self, node: &Node, allow_null: bool) -> Option<Value> {
        Some(match node {
            Node::Scalar(s) => match scalar_value(s.as_str(), s.may_coerce()) {
                Some(v) => v,
                None if allow_null => Value::Null,
                None => {
                    self.error(s.span(), "`null` is not a valid value here");
                    return None;
                }
            },
            Node::Sequence(seq) => Value::List(
                seq.iter()
                    .map(|n| self.value_with(n, allow_null))
                    .collect::<Option<_>>()?,
            ),
            Node::Mapping(m) => Value::Map(
                m.iter()
                    .map(|(k, v)| Some((k.as_str().to_owned(), self.value_with(v, allow_null)?)))
                    .collect::<Option<_>>()?,
            ),
        })
    }
}

/// Whether a number variant is written as a float (`50.0`, `1e3`): the flag's numbers are
/// then floats to OpenFeature (`getFloatValue`), even where the value is integral.
fn written_as_float(variants: &Node) -> bool {
    variants.as_mapping().is_some_and(|m| {
        m.iter().any(|(_, v)| {
            v.as_scalar().is_some_and(|s| {
                s.may_coerce()
                    && s.as_str().parse::<i64>().is_err()
                    && matches!(
                        scalar_value(s.as_str(), true),
                        Some(Value::Int(_) | Value::Float(_))
                    )
            })
        })
    })
}

/// Types a plain YAML scalar: booleans, integers, floats, else a string. `None` for null.
pub(crate) fn scalar_value(s: &str, plain: bool) -> Option<Value> {
    if !plain {
        return Some(Value::String(s.to_owned()));
    }
    Some(match s {
        "true" | "True" | "TRUE" => Value::Bool(true),
        "false" | "False" | "FALSE" => Value::Bool(false),
        "null" | "~" | "" => return None,
        _ => {
            if let Ok(i) = s.parse::<i64>() {
                Value::Int(i)
            } else if let Some(v) = s
                .parse::<f64>()
                .ok()
                .filter(|_| {
                    s.chars().any(|c| c.is_ascii_digit())
                        && !s.contains(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
                })
                .and_then(Value::number)
            {
                v
            } else {
                Value::String(s.to_owned())
            }
        }
    })
}

/// A condition's text as kept for explanations: whitespace folded, at most 160 characters
/// (a 10,000-element list need not travel in every module and every explanation).
fn excerpt(text: &str) -> String {
    const MAX: usize = 160;
    let folded = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match folded.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &folded[..cut]),
        None => folded,
    }
}

/// Where a mapping's content starts (its first key), for "missing key" errors.
fn map_start(map: &MarkedMappingNode) -> &Span {
    map.keys().next().map_or(map.span(), |k| k.span())
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn similar(a: &str, b: &str) -> bool {
    let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
    if a == b {
        return true;
    }
    // One edit apart, or one is a prefix of the other.
    let (s, l) = if a.len() <= b.len() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    if l.starts_with(s.as_str()) && s.len() >= 3 {
        return true;
    }
    if l.len() - s.len() > 1 {
        return false;
    }
    let mut diff = 0;
    let (sb, lb) = (s.as_bytes(), l.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < sb.len() && j < lb.len() {
        if sb[i] == lb[j] {
            i += 1;
            j += 1;
        } else {
            diff += 1;
            if sb.len() == lb.len() {
                i += 1;
            }
            j += 1;
        }
    }
    diff + (lb.len() - j) + (sb.len() - i) <= 1
}

/// Byte offset of `needle` as a whole word (or the first occurrence) in `text`.
fn find_word(text: &str, needle: &str) -> Option<usize> {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(pos) = text[from..].find(needle) {
        let at = from + pos;
        let before = text[..at].chars().next_back();
        let after = text[at + needle.len()..].chars().next();
        if !before.is_some_and(is_word) && !after.is_some_and(is_word) {
            return Some(at);
        }
        from = at + needle.len().max(1);
    }
    text.find(needle)
}
