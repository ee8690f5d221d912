//! The compiled rule model: what `flagforge build` embeds in a module and evaluator-core runs.
//!
//! Names are resolved to indices at build time (attributes to schema slots, segments, sets,
//! patterns, variants, prerequisite flags); large `in` lists and member segments become sorted
//! sets searched in O(log n). The encoding is `postcard` of these types: the model never
//! crosses the host boundary (hosts see only MessagePack results and the manifest), and
//! postcard's decoder is a fraction of the code size of a self-describing one.

use flagforge_protocol::{FlagKind, Lifecycle, Propagation, Value};
use serde::{Deserialize, Serialize};

/// Version of this model's encoding; bumped on any incompatible change.
pub const IR_FORMAT: u32 = 3;

/// A compiled ruleset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RulesetIr {
    /// Always [`IR_FORMAT`] when produced by this version.
    pub format: u32,
    /// Ruleset name.
    pub name: String,
    /// Compiler version string.
    pub compiler: String,
    /// Context schema sorted by name; an attribute's index is its slot.
    pub schema: Vec<AttrIr>,
    /// Sorted, deduplicated membership sets.
    pub sets: Vec<SetIr>,
    /// Regular expressions used by `matches`.
    pub patterns: Vec<String>,
    /// Semantic versions used as literals.
    pub semvers: Vec<String>,
    /// Expression segments.
    pub segments: Vec<SegmentIr>,
    /// Flags in declaration order.
    pub flags: Vec<FlagIr>,
    /// The slot OpenFeature's `targetingKey` stands for when `targeting_key:` names a declared
    /// attribute: a context leaving it unset (absent or null) binds it from `targetingKey`.
    /// `None`: the targeting key is the attribute `targetingKey` itself.
    pub targeting: Option<u32>,
}

/// A declared attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttrIr {
    /// Name.
    pub name: String,
    /// Declared type.
    pub ty: Ty,
}

/// Types of the rule language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Ty {
    /// Boolean.
    Bool,
    /// Integer.
    Int,
    /// Any number (integer or float).
    Number,
    /// UTF-8 string.
    String,
    /// SemVer 2.0 version (a string in the context).
    Semver,
    /// Point in time (an RFC 3339 string in the context).
    Timestamp,
    /// Length of time.
    Duration,
    /// List of strings.
    StringList,
    /// List of integers.
    IntList,
    /// List of numbers.
    NumberList,
}

impl Ty {
    /// The spelling used in rule files.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Ty::Bool => "bool",
            Ty::Int => "int",
            Ty::Number => "number",
            Ty::String => "string",
            Ty::Semver => "semver",
            Ty::Timestamp => "timestamp",
            Ty::Duration => "duration",
            Ty::StringList => "list<string>",
            Ty::IntList => "list<int>",
            Ty::NumberList => "list<number>",
        }
    }

    /// Parses the spelling used in rule files.
    #[must_use]
    pub fn parse(s: &str) -> Option<Ty> {
        Some(match s {
            "bool" => Ty::Bool,
            "int" => Ty::Int,
            "number" => Ty::Number,
            "string" => Ty::String,
            "semver" => Ty::Semver,
            "timestamp" => Ty::Timestamp,
            "duration" => Ty::Duration,
            "list<string>" => Ty::StringList,
            "list<int>" => Ty::IntList,
            "list<number>" => Ty::NumberList,
            _ => return None,
        })
    }

    /// Element type of a list type.
    #[must_use]
    pub fn element(self) -> Option<Ty> {
        match self {
            Ty::StringList => Some(Ty::String),
            Ty::IntList => Some(Ty::Int),
            Ty::NumberList => Some(Ty::Number),
            _ => None,
        }
    }
}

/// A sorted membership set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SetIr {
    /// Strings in byte order.
    Strings(Vec<String>),
    /// Integers in ascending order.
    Ints(Vec<i64>),
    /// An audience build's set: members as keyed SipHash-2-4 digests (ascending), so the
    /// member strings are not in the module's bytes. A string `s` is looked up as
    /// `H(k0, k1, "s" ++ utf8(s))`, an integer `i` as `H(k0, k1, "i" ++ le_bytes(i))`. 64-bit
    /// digests: a false match needs a collision, about n / 2^64 per lookup for n members.
    Hashed {
        /// The SipHash key (derived from the full ruleset's content at build time).
        key: (u64, u64),
        /// Member digests, ascending.
        digests: Vec<u64>,
    },
}

impl SetIr {
    /// The digest of a string member of a [`SetIr::Hashed`] set.
    #[must_use]
    #[inline]
    pub fn digest_str(key: (u64, u64), s: &str) -> u64 {
        use core::hash::Hasher;
        let mut h = siphasher::sip::SipHasher24::new_with_keys(key.0, key.1);
        h.write(b"s");
        h.write(s.as_bytes());
        h.finish()
    }

    /// The digest of an integer member of a [`SetIr::Hashed`] set.
    #[must_use]
    #[inline]
    pub fn digest_int(key: (u64, u64), i: i64) -> u64 {
        use core::hash::Hasher;
        let mut h = siphasher::sip::SipHasher24::new_with_keys(key.0, key.1);
        h.write(b"i");
        h.write(&i.to_le_bytes());
        h.finish()
    }
}

/// A named boolean expression reused by rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentIr {
    /// Segment name.
    pub name: String,
    /// Its condition.
    pub when: Expr,
}

/// A compiled flag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlagIr {
    /// Flag key.
    pub key: String,
    /// Kind.
    pub kind: FlagKind,
    /// Owning team.
    pub owner: String,
    /// Description.
    pub description: Option<String>,
    /// Expiry date.
    pub expires: Option<String>,
    /// Lifecycle metadata.
    pub lifecycle: Lifecycle,
    /// Static key/value metadata (`metadata:`), in file order.
    #[serde(with = "packed_values")]
    pub metadata: Vec<(String, Value)>,
    /// Variants (name, value) in declaration order.
    #[serde(with = "packed_values")]
    pub variants: Vec<(String, Value)>,
    /// Index of the default variant.
    pub default: u32,
    /// Index of the variant served on error.
    pub on_error: u32,
    /// Declared migration states (empty for other kinds).
    pub states: Vec<String>,
    /// Allowed moves between migration states as (from, to) indices into `states`, declared
    /// with `transitions:`; empty means the default journey (each state to its neighbours,
    /// forward or back). Checked by `flagforge publish` and hosts, never at evaluation.
    pub transitions: Vec<(u32, u32)>,
    /// False serves the default with reason `DISABLED`.
    pub enabled: bool,
    /// Active windows; empty means always active.
    pub schedule: Vec<Window>,
    /// Slot of the `now` attribute, required when `schedule` is not empty.
    pub now_slot: Option<u32>,
    /// Prerequisites, checked in order.
    pub prerequisites: Vec<Prerequisite>,
    /// Rules, tried in order.
    pub rules: Vec<RuleIr>,
    /// Attributes this flag reads (names), for the manifest.
    pub reads: Vec<String>,
    /// How fresh the flag must be on a host.
    pub propagation: Propagation,
    /// Audiences (e.g. `browser`) whose builds may hold this flag (`flagforge build
    /// --audience`); empty: server-side builds only.
    pub expose: Vec<String>,
    /// Number variants written as floats (`50.0`): hosts present them as floats.
    pub floats: bool,
}

/// A half-open time window `[from, until)` in Unix nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Start (inclusive), open if absent.
    pub from: Option<i64>,
    /// End (exclusive), open if absent.
    pub until: Option<i64>,
}

/// Flag `flag` must serve one of `variants`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prerequisite {
    /// Index of the prerequisite flag.
    pub flag: u32,
    /// Indices of the accepted variants of that flag.
    pub variants: Vec<u32>,
}

/// A rule: an optional condition and what to serve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleIr {
    /// Condition; absent means always.
    pub when: Option<Expr>,
    /// `file:line` and condition text, for explanations.
    pub source: String,
    /// What the rule serves.
    pub action: Action,
}

/// What a matching rule serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Action {
    /// One variant.
    Serve(u32),
    /// A weighted split.
    Rollout(Rollout),
}

/// A weighted rollout, bucketed as described in `docs/bucketing.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// Slot of the bucketing attribute (string or int).
    pub by: u32,
    /// Seed prefixed to the bucketing value (defaults to the flag key).
    pub seed: String,
    /// (variant index, weight) in source order.
    pub buckets: Vec<(u32, u32)>,
    /// How the bucketing value is hashed and mapped to a bucket.
    pub bucketing: Bucketing,
}

/// The bucketing algorithms of `docs/bucketing.md`: which bytes are hashed, with which
/// murmur3 seed, and how the hash becomes a bucket in `[0, W)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Bucketing {
    /// flagd `fractional` v2: `murmur3(seed ++ value)`, bucket `(h × W) >> 32`.
    FlagdV2,
    /// flagd `fractional` v3: murmur3 of the deterministic CBOR encoding of the key, bucket
    /// `(h × W) >> 32`. `pair`: the key is the array `[seed, value]` (flagd's implicit
    /// `[flagKey, targetingKey]`); otherwise it is the value itself, as text prefixed with the
    /// seed when the seed is not empty.
    FlagdV3 {
        /// Whether the key is the `[seed, value]` pair.
        pair: bool,
    },
    /// Unleash: `murmur3("seed:value", hash_seed)`, bucket `h mod W` (Unleash's normalised
    /// hash minus one). Hash seed 0 for strategy rollouts, 86028157 for variants.
    Unleash {
        /// murmur3's seed.
        hash_seed: u32,
    },
}

impl Bucketing {
    /// The spelling used in rule files (`bucketing:`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Bucketing::FlagdV2 => "flagd-v2",
            Bucketing::FlagdV3 { .. } => "flagd-v3",
            Bucketing::Unleash { hash_seed: 0 } => "unleash",
            Bucketing::Unleash { .. } => "unleash-variants",
        }
    }
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmpOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// String predicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StrOp {
    /// `a.startsWith(b)`
    StartsWith,
    /// `a.endsWith(b)`
    EndsWith,
    /// `a.contains(b)`
    Contains,
}

/// Arithmetic on numbers, timestamps and durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ArithOp {
    /// `+`
    Add,
    /// `-`
    Sub,
}

/// A literal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Lit {
    /// Boolean.
    Bool(bool),
    /// Integer.
    Int(i64),
    /// Float.
    Float(f64),
    /// String.
    Str(String),
    /// Index into [`RulesetIr::semvers`].
    Semver(u32),
    /// Unix nanoseconds.
    Time(i64),
    /// Nanoseconds.
    Duration(i64),
}

/// A type-checked expression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Expr {
    /// A literal.
    Lit(Lit),
    /// A context attribute, by slot.
    Attr(u32),
    /// `has(attr)`: the attribute is present and not null.
    Has(u32),
    /// `!e`
    Not(Box<Expr>),
    /// `a && b && …`
    And(Vec<Expr>),
    /// `a || b || …`
    Or(Vec<Expr>),
    /// Comparison.
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    /// `e in <literal list or member segment>` through a sorted set.
    InSet(Box<Expr>, u32),
    /// `e in [exprs…]` where the list is not all literals.
    InList(Box<Expr>, Vec<Expr>),
    /// `e in list_attribute`.
    InAttr(Box<Expr>, u32),
    /// String predicate.
    Str(StrOp, Box<Expr>, Box<Expr>),
    /// `e.matches(pattern)`, pattern index into [`RulesetIr::patterns`].
    Matches(Box<Expr>, u32),
    /// `segment("name")` for an expression segment.
    Segment(u32),
    /// Arithmetic.
    Arith(ArithOp, Box<Expr>, Box<Expr>),
    /// `c ? a : b`
    Cond(Box<Expr>, Box<Expr>, Box<Expr>),
    /// `s.lowerAscii()` (`false`) or `s.upperAscii()` (`true`): ASCII letters only, as CEL.
    Case(bool, Box<Expr>),
    /// `size(x)`: Unicode code points of a string, elements of a list.
    Size(Box<Expr>),
    /// `ip(e) in cidr("…", …)`: the address `e` (IPv4 or IPv6 text) is in one of the ranges.
    InCidr(Box<Expr>, Vec<Cidr>),
    /// A list literal, compared with `==`/`!=` against a list.
    List(Vec<Expr>),
    /// `list.exists(x, body)` (`all: false`) or `list.all(x, body)` over a list attribute.
    Each {
        /// `all` rather than `exists`.
        all: bool,
        /// The list.
        list: Box<Expr>,
        /// The condition, reading the element as [`Expr::Item`].
        body: Box<Expr>,
    },
    /// The element bound by the enclosing [`Expr::Each`] (they do not nest).
    Item,
}

/// An IP range: `addr` with all but the first `prefix` bits zero. IPv4 ranges hold the
/// address in the low 32 bits and match only IPv4 addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cidr {
    /// IPv6 (`true`) or IPv4.
    pub v6: bool,
    /// The network address.
    pub addr: u128,
    /// Leading bits that must match (0–32 for IPv4, 0–128 for IPv6).
    pub prefix: u8,
}

impl Cidr {
    /// An address as (IPv6?, its bits, its width in bits): IPv4 in the low 32 bits.
    #[must_use]
    pub fn bits(ip: core::net::IpAddr) -> (bool, u128, u8) {
        match ip {
            core::net::IpAddr::V4(a) => (false, u128::from(u32::from(a)), 32),
            core::net::IpAddr::V6(a) => (true, u128::from(a), 128),
        }
    }

    /// Whether `ip` is in the range.
    #[must_use]
    pub fn contains(&self, ip: core::net::IpAddr) -> bool {
        let (v6, bits, width) = Self::bits(ip);
        if v6 != self.v6 || self.prefix > width {
            return false;
        }
        let shift = u32::from(width - self.prefix);
        bits.checked_shr(shift).unwrap_or(0) == self.addr.checked_shr(shift).unwrap_or(0)
    }
}

impl Expr {
    /// Pushes the direct sub-expressions onto `stack` (for iterative walks of the tree).
    pub fn push_children<'a>(&'a self, stack: &mut Vec<&'a Expr>) {
        match self {
            Expr::Lit(_) | Expr::Attr(_) | Expr::Has(_) | Expr::Segment(_) | Expr::Item => {}
            Expr::List(xs) => stack.extend(xs.iter()),
            Expr::Each { list, body, .. } => {
                stack.push(list);
                stack.push(body);
            }
            Expr::Not(a)
            | Expr::InSet(a, _)
            | Expr::InAttr(a, _)
            | Expr::Matches(a, _)
            | Expr::Case(_, a)
            | Expr::Size(a)
            | Expr::InCidr(a, _) => {
                stack.push(a);
            }
            Expr::And(xs) | Expr::Or(xs) => stack.extend(xs.iter()),
            Expr::Cmp(_, a, b) | Expr::Str(_, a, b) | Expr::Arith(_, a, b) => {
                stack.push(a);
                stack.push(b);
            }
            Expr::InList(a, xs) => {
                stack.push(a);
                stack.extend(xs.iter());
            }
            Expr::Cond(c, a, b) => {
                stack.push(c);
                stack.push(a);
                stack.push(b);
            }
        }
    }
}

/// Variant values travel as their canonical MessagePack bytes: [`Value`] decodes
/// self-describingly, which postcard cannot drive.
mod packed_values {
    use flagforge_protocol::Value;
    use serde::{de::Error as _, Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &[(String, Value)], s: S) -> Result<S::Ok, S::Error> {
        let packed: Vec<(&str, Vec<u8>)> = v
            .iter()
            .map(|(n, val)| {
                (
                    n.as_str(),
                    flagforge_protocol::encode(val).unwrap_or_default(),
                )
            })
            .collect();
        packed.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, Value)>, D::Error> {
        let packed: Vec<(String, Vec<u8>)> = Vec::deserialize(d)?;
        packed
            .into_iter()
            .map(|(n, bytes)| {
                let v = flagforge_protocol::wire::decode_value(&bytes)
                    .map_err(|e| D::Error::custom(e.0))?;
                Ok((n, v))
            })
            .collect()
    }
}

impl RulesetIr {
    /// Encodes the model.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes encoded rules (the bytes embedded in a module) and checks their format.
    /// Indices are not checked here: evaluator-core checks them before evaluating.
    pub fn decode(bytes: &[u8]) -> Result<RulesetIr, crate::DecodeError> {
        let ir: RulesetIr = postcard::from_bytes(bytes)
            .map_err(|e| crate::DecodeError::Malformed(e.to_string()))?;
        if ir.format != IR_FORMAT {
            return Err(crate::DecodeError::Format {
                found: ir.format,
                expected: IR_FORMAT,
            });
        }
        Ok(ir)
    }

    /// A tiny ruleset for documentation examples.
    #[must_use]
    pub fn example() -> RulesetIr {
        RulesetIr {
            format: IR_FORMAT,
            name: "example".into(),
            compiler: "hand-written".into(),
            schema: vec![AttrIr {
                name: "market".into(),
                ty: Ty::String,
            }],
            sets: vec![],
            patterns: vec![],
            semvers: vec![],
            segments: vec![],
            flags: vec![FlagIr {
                key: "NewCheckout".into(),
                kind: FlagKind::Release,
                owner: "checkout".into(),
                description: None,
                expires: Some("2030-01-01".into()),
                lifecycle: Lifecycle::default(),
                metadata: vec![],
                variants: vec![
                    ("on".into(), Value::Bool(true)),
                    ("off".into(), Value::Bool(false)),
                ],
                default: 1,
                on_error: 1,
                states: vec![],
                transitions: vec![],
                enabled: true,
                schedule: vec![],
                now_slot: None,
                prerequisites: vec![],
                rules: vec![RuleIr {
                    when: Some(Expr::Cmp(
                        CmpOp::Eq,
                        Box::new(Expr::Attr(0)),
                        Box::new(Expr::Lit(Lit::Str("FR".into()))),
                    )),
                    source: "example.yaml:1: market == \"FR\"".into(),
                    action: Action::Serve(0),
                }],
                reads: vec!["market".into()],
                propagation: Propagation::Eventual,
                expose: Vec::new(),
                floats: false,
            }],
            targeting: None,
        }
    }
}
