//! Binding a context to the declared schema: one slot per declared attribute, typed once.

use flagforge_protocol::{Context, Value};
use semver::Version;

use crate::ir::{AttrIr, Ty};
use crate::time;

/// A context value converted to its declared type.
#[derive(Debug, Clone)]
pub(crate) enum V<'a> {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
    Semver(&'a Version),
    Time(i64),
    Duration(i64),
    List(&'a [Value]),
}

/// A declared attribute as found in the context.
#[derive(Debug)]
pub(crate) enum Slot<'a> {
    /// Absent or null.
    Missing,
    /// Present with the declared type.
    Val(V<'a>),
    /// Present with another type; reading it fails with `TYPE_MISMATCH`.
    Invalid(String),
}

/// Semver values parsed from the context, owned here so slots can borrow them.
pub(crate) struct Parsed {
    semvers: Vec<Option<Version>>,
}

impl Parsed {
    pub(crate) fn new(schema: &[AttrIr], ctx: &Context) -> Parsed {
        let semvers = schema
            .iter()
            .map(|a| match (a.ty, ctx.get(&a.name)) {
                (Ty::Semver, Some(Value::String(s))) => Version::parse(s).ok(),
                _ => None,
            })
            .collect();
        Parsed { semvers }
    }
}

pub(crate) fn bind<'a>(schema: &[AttrIr], ctx: &'a Context, parsed: &'a Parsed) -> Vec<Slot<'a>> {
    schema
        .iter()
        .enumerate()
        .map(|(i, attr)| match ctx.get(&attr.name) {
            None | Some(Value::Null) => Slot::Missing,
            Some(v) => convert(attr, v, parsed.semvers.get(i).and_then(Option::as_ref)),
        })
        .collect()
}

fn mismatch(attr: &AttrIr, v: &Value) -> Slot<'static> {
    Slot::Invalid(format!(
        "context attribute `{}` is declared {} but is {}",
        attr.name,
        attr.ty.name(),
        v.type_name()
    ))
}

fn convert<'a>(attr: &AttrIr, v: &'a Value, semver: Option<&'a Version>) -> Slot<'a> {
    let bound = match (attr.ty, v) {
        (Ty::Bool, Value::Bool(b)) => V::Bool(*b),
        (Ty::Int, Value::Int(i)) => V::Int(*i),
        (Ty::Number, Value::Int(i)) => V::Int(*i),
        (Ty::Number, Value::Float(f)) => V::Float(*f),
        (Ty::String, Value::String(s)) => V::Str(s),
        (Ty::Semver, Value::String(s)) => match semver {
            Some(ver) => V::Semver(ver),
            None => {
                return Slot::Invalid(format!(
                    "context attribute `{}` is not a semantic version: `{s}`",
                    attr.name
                ))
            }
        },
        (Ty::Timestamp, Value::String(s)) => match time::parse_timestamp(s) {
            Some(t) => V::Time(t),
            None => {
                return Slot::Invalid(format!(
                    "context attribute `{}` is not an RFC 3339 timestamp: `{s}`",
                    attr.name
                ))
            }
        },
        (Ty::Duration, Value::String(s)) => match time::parse_duration(s) {
            Some(d) => V::Duration(d),
            None => {
                return Slot::Invalid(format!(
                    "context attribute `{}` is not a duration: `{s}`",
                    attr.name
                ))
            }
        },
        (Ty::StringList | Ty::IntList | Ty::NumberList, Value::List(items)) => {
            let ok = items.iter().all(|item| match (attr.ty, item) {
                (Ty::StringList, Value::String(_)) => true,
                (Ty::IntList, Value::Int(_)) => true,
                (Ty::NumberList, Value::Int(_) | Value::Float(_)) => true,
                _ => false,
            });
            if !ok {
                return Slot::Invalid(format!(
                    "context attribute `{}` is declared {} but holds other elements",
                    attr.name,
                    attr.ty.name()
                ));
            }
            V::List(items)
        }
        _ => return mismatch(attr, v),
    };
    Slot::Val(bound)
}
