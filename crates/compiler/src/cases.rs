//! Test cases kept beside the rules (`DIR/tests/*.yaml`): context in, expected answer out.
//!
//! ```yaml
//! cases:
//!   - name: pilot tenant goes to the new service
//!     flag: FulfillmentRoutingMode
//!     context: { tenant: acme-fr, market: FR, customer_id: c-1 }
//!     expect: { variant: NEW_PRIMARY, reason: TARGETING_MATCH }
//! ```

use std::path::Path;

use flagforge_protocol::{Context, Value};
use marked_yaml::Node;

use crate::compile::{scalar_value, Compiler, SourceFile};
use crate::CompileError;

/// What a case expects; every field given must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Expect {
    /// Variant name.
    pub variant: Option<String>,
    /// Value.
    pub value: Option<Value>,
    /// Reason (OpenFeature spelling).
    pub reason: Option<String>,
    /// Error code (OpenFeature spelling).
    pub error_code: Option<String>,
}

/// One test case.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// Human-readable name.
    pub name: String,
    /// `file:line` of the case.
    pub location: String,
    /// Flag to evaluate; `None` evaluates every flag (no expectations then).
    pub flag: Option<String>,
    /// The context.
    pub context: Context,
    /// Expected answer.
    pub expect: Expect,
}

/// Failure to load cases.
pub type CaseError = CompileError;

/// Loads every `*.yaml` under `DIR/<sub>/` (sorted; `tests` for test cases, `demo` for demo
/// scenarios); a missing directory means no cases.
pub fn load_cases(dir: &Path, sub: &str) -> Result<Vec<Case>, CaseError> {
    let tests = if dir.is_dir() {
        dir.join(sub)
    } else {
        dir.parent().unwrap_or(Path::new(".")).join(sub)
    };
    if !tests.is_dir() {
        return Ok(vec![]);
    }
    let sources = crate::read_sources(&crate::yaml_files(&tests)?)?;
    parse_cases(&sources)
}

/// Parses case files.
pub fn parse_cases(sources: &[SourceFile]) -> Result<Vec<Case>, CaseError> {
    let mut c = Compiler::new(sources);
    let mut out = Vec::new();
    for (i, src) in sources.iter().enumerate() {
        let doc = match crate::parse_yaml(i, &src.text) {
            Ok(d) => d,
            Err((span, msg)) => {
                c.error(&span, msg);
                continue;
            }
        };
        let Some(list) = doc.as_mapping().and_then(|m| m.get_sequence("cases")) else {
            c.error(
                doc.span(),
                "a test file is a mapping with `cases:` holding a list of cases",
            );
            continue;
        };
        for (n, case) in list.iter().enumerate() {
            let Some(m) = case.as_mapping() else {
                c.error(
                    case.span(),
                    "a case is a mapping with `flag`, `context` and `expect`",
                );
                continue;
            };
            for k in m.keys() {
                if !["name", "flag", "context", "expect"].contains(&k.as_str()) {
                    c.error(
                        k.span(),
                        format!(
                            "unknown key `{}` in a case (expected: name, flag, context, expect)",
                            k.as_str()
                        ),
                    );
                }
            }
            let line = m.span().start().map_or(0, |s| s.line());
            let location = format!("{}:{line}", src.path);
            let name = m
                .get_scalar("name")
                .map_or_else(|| format!("case {n}"), |s| s.as_str().to_owned());
            let flag = m.get_scalar("flag").map(|f| f.as_str().to_owned());
            let context = match m.get_node("context") {
                None => Context::new(),
                Some(node @ Node::Mapping(_)) => match c.value_with(node, true) {
                    Some(Value::Map(ctx)) => ctx,
                    _ => continue,
                },
                Some(other) => {
                    c.error(
                        other.span(),
                        "`context` must be a mapping of attribute values",
                    );
                    continue;
                }
            };
            let mut expect = Expect::default();
            let em = m.get_mapping("expect");
            if em.is_some() && flag.is_none() {
                c.error(m.span(), "a case with `expect` needs `flag: KEY`");
                continue;
            }
            for (k, v) in em.iter().flat_map(|em| em.iter()) {
                match (k.as_str(), v) {
                    ("variant", Node::Scalar(s)) => expect.variant = Some(s.as_str().to_owned()),
                    ("reason", Node::Scalar(s)) => expect.reason = Some(s.as_str().to_owned()),
                    ("error_code", Node::Scalar(s)) => expect.error_code = Some(s.as_str().to_owned()),
                    ("value", Node::Scalar(s)) => expect.value = scalar_value(s.as_str(), s.may_coerce()).or(Some(Value::Null)),
                    ("value", node) => expect.value = c.value_with(node, true),
                    (other, _) => c.error(k.span(), format!("unknown expectation `{other}` (expected: variant, value, reason, error_code)")),
                }
            }
            out.push(Case {
                name,
                location,
                flag,
                context,
                expect,
            });
        }
    }
    if c.diags.is_empty() {
        Ok(out)
    } else {
        Err(CompileError::Rules(std::mem::take(&mut c.diags)))
    }
}
