//! Binding a context to the declared schema: one slot per declared attribute, typed once.
//!
//! Both ways into the evaluator — a [`Context`] value (native callers) and context bytes (the
//! module ABI, see `wire.rs`) — reduce each attribute to a [`Scalar`] and go through the one
//! [`convert`] function, so they cannot disagree on what a value means.

use flagforge_protocol::{Context, Value};
use semver::Version;

use crate::time;
use flagforge_model::ir::{AttrIr, Ty};
use flagforge_protocol::wire::Scalar;

/// A context value converted to its declared type.
#[derive(Debug, Clone)]
pub(crate) enum V<'a> {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
    /// A string computed by the rules (`lowerAscii()`).
    Text(String),
    Semver(&'a Version),
    Time(i64),
    Duration(i64),
    List(&'a [V<'a>]),
}

impl V<'_> {
    /// The string, read from the context or computed.
    pub(crate) fn text(&self) -> Option<&str> {
        match self {
            V::Str(s) => Some(s),
            V::Text(s) => Some(s),
            _ => None,
        }
    }
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

/// The slots one flag's evaluation can read: a mask over the schema, and how many.
#[derive(Debug, Clone, Default)]
pub(crate) struct Needs {
    pub(crate) mask: Vec<bool>,
    pub(crate) count: usize,
}

/// Above this many declared attributes, a flag reading at most [`SPARSE_MAX_READS`] of them
/// binds only those, into a short list, instead of one slot per declared attribute: a
/// 1,000-attribute schema then costs a flag reading three attributes three slots, not a
/// thousand.
pub(crate) const SPARSE_ABOVE: usize = 32;
/// See [`SPARSE_ABOVE`]; the list is searched linearly, so it stays short.
pub(crate) const SPARSE_MAX_READS: usize = 16;

/// The bound slots: one per declared attribute, or (for one flag of a large schema) only the
/// needed ones that are present.
#[derive(Debug)]
pub(crate) enum Slots<'a> {
    Dense(Vec<Slot<'a>>),
    Sparse(Vec<(u32, Slot<'a>)>),
}

impl<'a> Slots<'a> {
    /// Slot `i`; `None` when a sparse binding does not hold it (the attribute is absent, like
    /// `Missing`). (Not inlined:
    /// it is called from every slot read, and the module has a size budget.)
    #[inline(never)]
    pub(crate) fn get(&self, i: usize) -> Option<&Slot<'a>> {
        match self {
            Slots::Dense(v) => v.get(i),
            Slots::Sparse(v) => v
                .iter()
                .rev()
                .find(|(k, _)| *k as usize == i)
                .map(|(_, s)| s),
        }
    }

    /// Empty slots for `schema` bound for `needs`.
    pub(crate) fn new(schema_len: usize, needs: Option<&Needs>) -> Slots<'a> {
        match needs {
            Some(n) if schema_len > SPARSE_ABOVE && n.count <= SPARSE_MAX_READS => {
                Slots::Sparse(Vec::with_capacity(n.count))
            }
            _ => Slots::Dense((0..schema_len).map(|_| Slot::Missing).collect()),
        }
    }

    /// Whether slot `i` holds a value (neither unset nor null).
    pub(crate) fn is_set(&self, i: usize) -> bool {
        !matches!(self.get(i), None | Some(Slot::Missing))
    }

    /// Sets slot `i`.
    #[inline(never)]
    pub(crate) fn set(&mut self, i: usize, slot: Slot<'a>) {
        match self {
            Slots::Dense(v) => {
                if let Some(s) = v.get_mut(i) {
                    *s = slot;
                }
            }
            // A slot is set twice only when `targetingKey` came before the attribute it
            // stands for: `get` reads the last entry, so the attribute wins.
            Slots::Sparse(v) => v.push((i as u32, slot)),
        }
    }
}

/// Binds a context value (the native path); only slots set in `needs` (all when `None`).
/// `alias` is the slot OpenFeature's `targetingKey` fills when the context leaves it unset.
pub(crate) fn bind<'a>(
    schema: &[AttrIr],
    alias: Option<usize>,
    ctx: &'a Context,
    needs: Option<&Needs>,
) -> Slots<'a> {
    let mut slots = Slots::new(schema.len(), needs);
    for (i, attr) in schema.iter().enumerate() {
        if !wanted(needs, i) {
            continue;
        }
        if let Some(v) = ctx.get(&attr.name) {
            if !matches!(v, Value::Null) {
                slots.set(i, convert(attr, scalar_of(v)));
            }
        }
    }
    // OpenFeature's `targetingKey` binds the attribute it stands for if the context left it
    // unset (the same rule as the bytes path in `wire.rs`).
    if let (Some(i), Some(v)) = (alias, ctx.get(flagforge_protocol::TARGETING_KEY)) {
        if let Some(attr) = schema
            .get(i)
            .filter(|_| wanted(needs, i) && !slots.is_set(i))
        {
            let slot = convert(attr, scalar_of(v));
            if !matches!(slot, Slot::Missing) {
                slots.set(i, slot);
            }
        }
    }
    slots
}

/// Whether slot `i` is to be bound.
pub(crate) fn wanted(needs: Option<&Needs>, i: usize) -> bool {
    needs.is_none_or(|n| n.mask.get(i).copied().unwrap_or(false))
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
