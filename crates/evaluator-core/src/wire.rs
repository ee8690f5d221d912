//! Zero-copy binding of canonical MessagePack context bytes straight into schema slots,
//! through the protocol crate's one reader ([`flagforge_protocol::wire::Reader`]): only the
//! declared attributes a flag needs are read; everything else is checked and skipped.

use flagforge_protocol::wire::{Reader, WireError};

use crate::bind::{convert, wanted, Needs, Slot, Slots};
use flagforge_model::ir::AttrIr;

fn err<T>(msg: impl Into<String>) -> Result<T, WireError> {
    Err(WireError(msg.into()))
}

/// Reads a context map into one slot per declared attribute (only those set in `needs`, all
/// when `None`); every other value is still checked, then dropped.
pub(crate) fn bind_bytes<'a>(
    schema: &[AttrIr],
    alias: Option<usize>,
    bytes: &'a [u8],
    needs: Option<&Needs>,
) -> Result<Slots<'a>, WireError> {
    let mut r = Reader::new(bytes);
    let len = r.map_len()?;
    let mut slots = Slots::new(schema.len(), needs);
    // With a large schema, find each key by binary search rather than walking the schema.
    let walk = schema.len() <= crate::bind::SPARSE_ABOVE;
    let mut seen = Seen::new(schema.len() + 1);
    // Canonical contexts list keys in byte order, like the schema: walk both together, and
    // fall back to binary search if the input is not in order.
    let mut cursor = 0usize;
    let mut previous: &[u8] = &[];
    for _ in 0..len {
        let key = r.key_bytes()?;
        let index = if walk && key >= previous {
            previous = key;
            loop {
                match schema
                    .get(cursor)
                    .map(|a| byte_order(a.name.as_bytes(), key))
                {
                    Some(std::cmp::Ordering::Less) => cursor += 1,
                    Some(std::cmp::Ordering::Equal) => break Some(cursor),
                    _ => break None,
                }
            }
        } else {
            schema.binary_search_by(|a| a.name.as_bytes().cmp(key)).ok()
        };
        // OpenFeature's `targetingKey` binds the attribute it stands for, unless the
        // context sets that attribute itself (before or after it): one more `seen` bit.
        let (index, aliased) = match (index, alias) {
            (None, Some(a)) if key == flagforge_protocol::TARGETING_KEY.as_bytes() => {
                (Some(a), true)
            }
            (index, _) => (index, false),
        };
        let Some(i) = index else {
            r.skip(1)?;
            continue;
        };
        if seen.insert(if aliased { schema.len() } else { i }) {
            return err(format!("duplicate key `{}`", String::from_utf8_lossy(key)));
        }
        if wanted(needs, i) && !(aliased && slots.is_set(i)) {
            let value = r.value(1)?;
            if let Some(attr) = schema.get(i) {
                let slot = convert(attr, value);
                if !matches!(slot, Slot::Missing) {
                    slots.set(i, slot);
                }
            }
        } else {
            r.skip(1)?;
        }
    }
    r.finish()?;
    Ok(slots)
}

/// Byte order, deciding on the first byte without a `memcmp` call when it differs.
fn byte_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    match (a.first(), b.first()) {
        (Some(x), Some(y)) if x != y => x.cmp(y),
        _ => a.cmp(b),
    }
}

/// Which declared attributes were already read: a bit set, on the stack for up to 128.
enum Seen {
    Bits(u128),
    Vec(Vec<bool>),
}

impl Seen {
    fn new(n: usize) -> Seen {
        if n <= 128 {
            Seen::Bits(0)
        } else {
            Seen::Vec(vec![false; n])
        }
    }

    /// Marks `i`; returns true if it was already marked.
    fn insert(&mut self, i: usize) -> bool {
        match self {
            Seen::Bits(bits) => {
                let bit = 1u128 << (i % 128);
                let was = *bits & bit != 0;
                *bits |= bit;
                was
            }
            Seen::Vec(v) => v.get_mut(i).is_some_and(|b| std::mem::replace(b, true)),
        }
    }
}
