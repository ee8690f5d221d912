//! Zero-copy binding of a positional context (ABI v2, `flagforge_protocol::positional`)
//! straight into schema slots, through the protocol crate's one reader
//! ([`flagforge_protocol::wire::Reader`]): keys are slot numbers, so no name is compared; only
//! the slots a flag needs are converted, every other value is still checked, then dropped.

use flagforge_protocol::wire::{Reader, WireError};

use crate::bind::{convert, wanted, Needs, Slot, Slots};
use flagforge_model::ir::AttrIr;

/// Reads a positional context into one slot per declared attribute (only those set in
/// `needs`, all when `None`). Keys must be declared slots in strictly ascending order.
pub(crate) fn bind_positional<'a>(
    schema: &[AttrIr],
    bytes: &'a [u8],
    needs: Option<&Needs>,
) -> Result<Slots<'a>, WireError> {
    let mut r = Reader::new(bytes);
    let len = r.map_len()?;
    let mut slots = Slots::new(schema.len(), needs);
    let mut next = 0usize;
    for _ in 0..len {
        let i = r.slot_key()? as usize;
        if i < next {
            return Err(WireError(format!(
                "attribute slot {i} is out of order or repeated"
            )));
        }
        let Some(attr) = schema.get(i) else {
            return Err(WireError(format!("attribute slot {i} is not declared")));
        };
        next = i + 1;
        if wanted(needs, i) {
            let slot = convert(attr, r.value(1)?);
            if !matches!(slot, Slot::Missing) {
                slots.set(i, slot);
            }
        } else {
            r.skip(1)?;
        }
    }
    r.finish()?;
    Ok(slots)
}
