//! Binding a context to the declared schema: one slot per declared attribute, typed once.
//!
//! Both ways into the evaluator — a [`Context`] value (native callers) and context bytes (the
//! module ABI, see `wire.rs`) — reduce each attribute to a [`Scalar`] and go through the one
//! [`convert`] function, so they cannot disagree on what a value means.

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
    List(&'a [V<'a>]),
}

/// A declared attribute as found in the context.
#[derive(Debug)]
pub(crate) enum Slot<'a> {
    /// Absent or null.
    Missing,
    /// Present with the declared type (borrowing from the context).
    Val(V<'a>),
    /// A parsed semantic version.
    Semver(Version),
    /// A list with elements of the declared type.
    List(Vec<V<'a>>),
    /// Present with another type; reading it fails with `TYPE_MISMATCH`.
    Invalid(String),
}

/// A raw context value before typing.
#[derive(Debug)]
pub(crate) enum Scalar<'a> {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// String bytes; UTF-8 is checked only when a wanted attribute is converted.
    Str(&'a [u8]),
    List(Vec<Scalar<'a>>),
    Map,
}

impl Scalar<'_> {
    fn type_name(&self) -> &'static str {
        match self {
            Scalar::Nil => "null",
            Scalar::Bool(_) => "bool",
            Scalar::Int(_) => "int",
            Scalar::Float(_) => "number",
            Scalar::Str(_) => "string",
            Scalar::List(_) => "list",
            Scalar::Map => "map",
        }
    }
}

fn scalar_of(v: &Value) -> Scalar<'_> {
    match v {
        Value::Null => Scalar::Nil,
        Value::Bool(b) => Scalar::Bool(*b),
        Value::Int(i) => Scalar::Int(*i),
        Value::Float(f) => Scalar::Float(*f),
        Value::String(s) => Scalar::Str(s.as_bytes()),
        Value::List(items) => Scalar::List(items.iter().map(scalar_of).collect()),
        Value::Map(_) => Scalar::Map,
    }
}

/// Binds a context value (the native path); only slots set in `needs` (all when `None`).
pub(crate) fn bind<'a>(
    schema: &[AttrIr],
    ctx: &'a Context,
    needs: Option<&[bool]>,
) -> Vec<Slot<'a>> {
    schema
        .iter()
        .enumerate()
        .map(|(i, attr)| {
            if !wanted(needs, i) {
                return Slot::Missing;
            }
            match ctx.get(&attr.name) {
                None => Slot::Missing,
                Some(v) => convert(attr, scalar_of(v)),
            }
        })
        .collect()
}

/// Whether slot `i` is to be bound.
pub(crate) fn wanted(needs: Option<&[bool]>, i: usize) -> bool {
    needs.is_none_or(|n| n.get(i).copied().unwrap_or(false))
}

/// Types one attribute value against its declaration.
pub(crate) fn convert<'a>(attr: &AttrIr, v: Scalar<'a>) -> Slot<'a> {
    let invalid = |what: String| Slot::Invalid(format!("context attribute `{}` {what}", attr.name));
    let v = match v {
        Scalar::Str(bytes) => match std::str::from_utf8(bytes) {
            Ok(s) => Text::Str(s),
            Err(_) => return invalid("is not valid UTF-8".to_owned()),
        },
        other => Text::Other(other),
    };
    let bound = match (attr.ty, v) {
        (_, Text::Other(Scalar::Nil)) => return Slot::Missing,
        (Ty::Bool, Text::Other(Scalar::Bool(b))) => V::Bool(b),
        (Ty::Int | Ty::Number, Text::Other(Scalar::Int(i))) => V::Int(i),
        (Ty::Number, Text::Other(Scalar::Float(f))) => V::Float(f),
        (Ty::String, Text::Str(s)) => V::Str(s),
        (Ty::Semver, Text::Str(s)) => {
            return match Version::parse(s) {
                Ok(v) => Slot::Semver(v),
                Err(_) => invalid(format!("is not a semantic version: `{s}`")),
            }
        }
        (Ty::Timestamp, Text::Str(s)) => match time::parse_timestamp(s) {
            Some(t) => V::Time(t),
            None => return invalid(format!("is not an RFC 3339 timestamp: `{s}`")),
        },
        (Ty::Duration, Text::Str(s)) => match time::parse_duration(s) {
            Some(d) => V::Duration(d),
            None => return invalid(format!("is not a duration: `{s}`")),
        },
        (
            ty @ (Ty::StringList | Ty::IntList | Ty::NumberList),
            Text::Other(Scalar::List(items)),
        ) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                out.push(match (ty, item) {
                    (Ty::StringList, Scalar::Str(b)) => match std::str::from_utf8(b) {
                        Ok(s) => V::Str(s),
                        Err(_) => {
                            return invalid("holds a string that is not valid UTF-8".to_owned())
                        }
                    },
                    (Ty::IntList | Ty::NumberList, Scalar::Int(i)) => V::Int(i),
                    (Ty::NumberList, Scalar::Float(f)) => V::Float(f),
                    _ => {
                        return invalid(format!(
                            "is declared {} but holds other elements",
                            ty.name()
                        ))
                    }
                });
            }
            return Slot::List(out);
        }
        (ty, Text::Str(_)) => return invalid(format!("is declared {} but is string", ty.name())),
        (ty, Text::Other(other)) => {
            return invalid(format!(
                "is declared {} but is {}",
                ty.name(),
                other.type_name()
            ))
        }
    };
    Slot::Val(bound)
}

/// A scalar whose string bytes (if any) were checked as UTF-8.
enum Text<'a> {
    Str(&'a str),
    Other(Scalar<'a>),
}
