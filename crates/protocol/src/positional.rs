//! The positional context (ABI v2): what a host sends a module for one call.
//!
//! A MessagePack map whose keys are attribute *slots* — positions in the manifest's `context`
//! list — in strictly ascending order, and whose values are in the canonical encoding
//! (`ABI.md`, "Context"). Only non-null attributes the call can read are sent. OpenFeature's
//! `targetingKey` is resolved here, by the host: when the ruleset's targeting attribute is
//! another attribute and the context leaves that one unset, `targetingKey`'s value is sent in
//! its slot.
//!
//! Two ways in, one result: [`encode`] from a [`Context`] (what hosts do per call) and
//! [`from_canonical`] from canonical context bytes (the byte-level API some hosts offer, and the
//! corpus tests). Both give the same bytes for the same context.

use rmp::encode::{write_map_len, write_uint};

use crate::limits::MAX_DEPTH;
use crate::wire::{Reader, WireError};
use crate::{CodecError, Context, Manifest, Value, TARGETING_KEY};

/// Which slots a call sends, over a manifest's schema.
#[derive(Debug, Clone, Copy)]
pub struct Plan<'a> {
    /// Attribute names in slot order (sorted by their UTF-8 bytes).
    pub names: &'a [String],
    /// The slot `targetingKey` fills when the context leaves it unset; `None` when the
    /// targeting attribute is `targetingKey` itself.
    pub alias: Option<u32>,
    /// The slots to send, ascending.
    pub slots: &'a [u32],
}

impl<'a> Plan<'a> {
    fn wanted(&self, slot: u32) -> bool {
        self.slots.binary_search(&slot).is_ok()
    }

    /// The context members a call reads: the names of its slots, and `targetingKey` when it
    /// stands in for one of them.
    pub fn members(self) -> impl Iterator<Item = &'a str> {
        let alias = self.alias.filter(|a| self.wanted(*a));
        let names = self.names;
        self.slots
            .iter()
            .filter_map(move |&s| names.get(s as usize).map(String::as_str))
            .chain(alias.map(|_| TARGETING_KEY))
    }
}

/// A manifest's slots, resolved once per loaded module: what every call of a host needs to
/// address the module (flag numbers, each flag's slots, the `targetingKey` alias).
#[derive(Debug, Clone, Default)]
pub struct Layout {
    names: Vec<String>,
    alias: Option<u32>,
    flags: std::collections::HashMap<String, u32>,
    reads: Vec<Vec<u32>>,
    all: Vec<u32>,
}

impl Layout {
    /// The layout of `manifest`'s schema and flags.
    #[must_use]
    pub fn new(manifest: &Manifest) -> Layout {
        let names: Vec<String> = manifest.context.iter().map(|a| a.name.clone()).collect();
        let slot_of = |name: &str| {
            names
                .binary_search_by(|n| n.as_bytes().cmp(name.as_bytes()))
                .ok()
                .map(|i| i as u32)
        };
        let alias = if manifest.targeting_key == TARGETING_KEY {
            None
        } else {
            slot_of(&manifest.targeting_key)
        };
        let answer_reads = manifest.answer_reads();
        let reads: Vec<Vec<u32>> = manifest
            .flags
            .iter()
            .map(|f| {
                let mut slots: Vec<u32> = answer_reads
                    .get(&f.key)
                    .into_iter()
                    .flatten()
                    .filter_map(|n| slot_of(n))
                    .collect();
                slots.sort_unstable();
                slots.dedup();
                slots
            })
            .collect();
        let mut all: Vec<u32> = reads.iter().flatten().copied().collect();
        all.sort_unstable();
        all.dedup();
        let flags = manifest
            .flags
            .iter()
            .enumerate()
            .map(|(i, f)| (f.key.clone(), i as u32))
            .collect();
        Layout {
            names,
            alias,
            flags,
            reads,
            all,
        }
    }

    /// The number of flag `key` (its position in the manifest).
    #[must_use]
    pub fn flag(&self, key: &str) -> Option<u32> {
        self.flags.get(key).copied()
    }

    /// What a call for flag number `flag` sends (`None`: every flag).
    #[must_use]
    pub fn plan(&self, flag: Option<u32>) -> Plan<'_> {
        let slots = match flag {
            Some(i) => self.reads.get(i as usize).map_or(&[][..], Vec::as_slice),
            None => &self.all,
        };
        Plan {
            names: &self.names,
            alias: self.alias,
            slots,
        }
    }
}

/// Inserts at `start` the header of a map of `count` entries, written after it since.
fn insert_map_header(out: &mut Vec<u8>, start: usize, count: u32) {
    let mut header = [0u8; 5];
    let mut free = &mut header[..];
    // A map header is at most 5 bytes: writing it into 5 cannot fail.
    let _ = write_map_len(&mut free, count);
    let used = 5 - free.len();
    out.splice(start..start, header.iter().take(used).copied());
}

/// Appends one entry's key: the slot number, shortest form.
fn write_slot(out: &mut Vec<u8>, slot: u32) {
    // Writing into a `Vec` cannot fail.
    let _ = write_uint(out, u64::from(slot));
}

/// Whether `v`, at nesting `depth` (an attribute's value is at 1), has a canonical encoding
/// the module accepts: the reader's depth limit, finite numbers.
fn encodable(v: &Value, depth: usize) -> Result<(), String> {
    let nested = || {
        if depth + 1 > MAX_DEPTH {
            Err(format!("value nested deeper than {MAX_DEPTH} levels"))
        } else {
            Ok(depth + 1)
        }
    };
    match v {
        Value::Float(f) if !f.is_finite() => Err("non-finite number".to_owned()),
        Value::List(items) => {
            let d = nested()?;
            items.iter().try_for_each(|i| encodable(i, d))
        }
        Value::Map(entries) => {
            let d = nested()?;
            entries.values().try_for_each(|i| encodable(i, d))
        }
        _ => Ok(()),
    }
}

/// Appends the positional encoding of `ctx` for `plan` to `out`. A value the canonical
/// encoding refuses (nested deeper than the limit, not finite) is refused, naming its member;
/// `targetingKey` is checked whenever it may stand in for the targeting attribute.
pub fn encode(ctx: &Context, plan: Plan<'_>, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let checked = |name: &str| match ctx.get(name) {
        Some(v) => encodable(v, 1)
            .map(|()| Some(v).filter(|v| !matches!(v, Value::Null)))
            .map_err(|why| CodecError::Encode(format!("`{name}`: {why}"))),
        None => Ok(None),
    };
    let start = out.len();
    // Fewer than 16 entries (nearly every flag) take a one-byte header, patched at the end;
    // more are counted first and their header inserted in front.
    let small = plan.slots.len() < 16;
    if small {
        out.push(0x80);
    }
    let mut count = 0;
    for &slot in plan.slots {
        let Some(name) = plan.names.get(slot as usize) else {
            continue;
        };
        let mut value = checked(name)?;
        if plan.alias == Some(slot) {
            let targeting = checked(TARGETING_KEY)?;
            value = value.or(targeting);
        }
        if let Some(v) = value {
            write_slot(out, slot);
            v.write(out);
            count += 1;
        }
    }
    if small {
        // count < 16: a fixmap.
        if let Some(header) = out.get_mut(start) {
            *header = 0x80 | count as u8;
        }
    } else {
        insert_map_header(out, start, count);
    }
    Ok(())
}

/// The positional encoding of canonical context bytes for `plan`. Refuses what the canonical
/// reader refuses (`crate::wire`), and a declared attribute (or `targetingKey`) given twice.
pub fn from_canonical(bytes: &[u8], plan: Plan<'_>) -> Result<Vec<u8>, WireError> {
    let mut r = Reader::new(bytes);
    let len = r.map_len()?;
    let mut entries: Vec<(u32, &[u8])> = Vec::with_capacity(plan.slots.len() + 1);
    let mut seen = vec![false; plan.names.len() + 1];
    let mut targeting: Option<&[u8]> = None;
    const NIL: &[u8] = &[0xc0];
    for _ in 0..len {
        let key = r.key_bytes()?;
        let declared = plan.names.binary_search_by(|n| n.as_bytes().cmp(key)).ok();
        let (seen_at, slot) = match declared {
            Some(i) => (i, Some(i as u32)),
            None if plan.alias.is_some() && key == TARGETING_KEY.as_bytes() => {
                (plan.names.len(), None)
            }
            None => {
                r.skip(1)?;
                continue;
            }
        };
        if seen
            .get_mut(seen_at)
            .is_some_and(|s| std::mem::replace(s, true))
        {
            return Err(WireError(format!(
                "duplicate key `{}`",
                String::from_utf8_lossy(key)
            )));
        }
        match slot {
            Some(s) if plan.wanted(s) => {
                let raw = r.raw_value(1)?;
                if raw != NIL {
                    entries.push((s, raw));
                }
            }
            Some(_) => r.skip(1)?,
            None => targeting = Some(r.raw_value(1)?).filter(|raw| *raw != NIL),
        }
    }
    r.finish()?;
    if let (Some(alias), Some(raw)) = (plan.alias, targeting) {
        if plan.wanted(alias) && !entries.iter().any(|(s, _)| *s == alias) {
            entries.push((alias, raw));
        }
    }
    entries.sort_unstable_by_key(|(s, _)| *s);
    let mut out = Vec::with_capacity(bytes.len() + 8);
    for (slot, raw) in &entries {
        write_slot(&mut out, *slot);
        out.extend_from_slice(raw);
    }
    insert_map_header(&mut out, 0, entries.len() as u32);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::encode_context;

    fn names() -> Vec<String> {
        ["customer_id", "market", "tier"].map(String::from).to_vec()
    }

    fn ctx(pairs: &[(&str, Value)]) -> Context {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn both_ways_in_give_the_same_bytes() {
        let names = names();
        let plan = Plan {
            names: &names,
            alias: Some(0),
            slots: &[0, 1],
        };
        for c in [
            ctx(&[("market", "FR".into()), ("tier", "gold".into())]),
            ctx(&[("targetingKey", "c-1".into()), ("market", Value::Null)]),
            ctx(&[
                ("targetingKey", "c-1".into()),
                ("customer_id", "c-2".into()),
            ]),
            ctx(&[("other", Value::Int(3))]),
        ] {
            let mut direct = Vec::new();
            encode(&c, plan, &mut direct).unwrap();
            let translated = from_canonical(&encode_context(&c).unwrap(), plan).unwrap();
            assert_eq!(direct, translated, "{c:?}");
        }
        let mut out = Vec::new();
        encode(
            &ctx(&[("targetingKey", "c-1".into()), ("market", "FR".into())]),
            plan,
            &mut out,
        )
        .unwrap();
        assert_eq!(
            out,
            [0x82, 0x00, 0xa3, b'c', b'-', b'1', 0x01, 0xa2, b'F', b'R']
        );
    }

    #[test]
    fn an_attribute_given_twice_is_refused() {
        let names = names();
        let plan = Plan {
            names: &names,
            alias: Some(0),
            slots: &[0],
        };
        let twice = [0x82, 0xa1, b'x', 0x01, 0xa1, b'x', 0x02];
        assert!(
            from_canonical(&twice, plan).is_ok(),
            "undeclared keys are skipped"
        );
        let mut tk = vec![0x82];
        for _ in 0..2 {
            tk.push(0xac);
            tk.extend_from_slice(b"targetingKey");
            tk.push(0x01);
        }
        let why = from_canonical(&tk, plan).unwrap_err();
        assert_eq!(why.0, "duplicate key `targetingKey`");
    }
}
