//! The module ABI: export names, the ABI version and the packed pointer/length convention.
//!
//! Both the guest and the hosts use [`pack`] and [`unpack`] so the order of the two halves is
//! defined in exactly one place. See `ABI.md` at the repository root for the full contract.

/// Version of the ABI described in `ABI.md`. Hosts refuse modules reporting another version.
pub const ABI_VERSION: u32 = 1;

/// The exported linear memory.
pub const EXPORT_MEMORY: &str = "memory";
/// `() -> i32`: the ABI version the module implements.
pub const EXPORT_ABI_VERSION: &str = "ff_abi_version";
/// `(len: i32) -> i32`: allocate `len` bytes for the host to write input into; 0 on failure.
pub const EXPORT_ALLOC: &str = "ff_alloc";
/// `(ptr: i32, len: i32)`: release a buffer from `ff_alloc` or one returned by the module.
pub const EXPORT_FREE: &str = "ff_free";
/// `(key_ptr, key_len, ctx_ptr, ctx_len, options: i32) -> i64`: evaluate one flag.
pub const EXPORT_EVALUATE: &str = "ff_evaluate";
/// `(ctx_ptr, ctx_len, options: i32) -> i64`: evaluate every flag of the ruleset.
pub const EXPORT_EVALUATE_ALL: &str = "ff_evaluate_all";
/// `() -> i64`: the MessagePack manifest.
pub const EXPORT_MANIFEST: &str = "ff_manifest";

/// Every export a module must have, in the order hosts check them.
pub const REQUIRED_EXPORTS: [&str; 7] = [
    EXPORT_MEMORY,
    EXPORT_ABI_VERSION,
    EXPORT_ALLOC,
    EXPORT_FREE,
    EXPORT_EVALUATE,
    EXPORT_EVALUATE_ALL,
    EXPORT_MANIFEST,
];

/// Marker that precedes the rules location in a module's data (see `ABI.md`, "Linking the
/// rules"); it occurs exactly once in a linked module.
pub const RULES_MARKER: [u8; 16] = *b"FLAGFORGE:RULES!";

/// Option bit: include an [`crate::Explanation`] in each result.
pub const OPT_EXPLAIN: u32 = 1;

/// Packs an output buffer location into the `i64` returned by the module:
/// pointer in the high 32 bits, length in the low 32 bits.
#[must_use]
pub fn pack(ptr: u32, len: u32) -> u64 {
    (u64::from(ptr) << 32) | u64::from(len)
}

/// Inverse of [`pack`]: returns `(ptr, len)`.
#[must_use]
pub fn unpack(packed: u64) -> (u32, u32) {
    ((packed >> 32) as u32, (packed & 0xffff_ffff) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_puts_pointer_high_and_length_low() {
        assert_eq!(pack(0x1234, 0x10), 0x0000_1234_0000_0010);
        assert_eq!(unpack(pack(u32::MAX, 7)), (u32::MAX, 7));
    }
}
