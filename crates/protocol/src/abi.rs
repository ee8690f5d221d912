//! The module ABI: export names, the ABI version, the packed pointer/length convention and the
//! result records.
//!
//! Both the guest and the hosts use this module, so every layout is defined in exactly one
//! place. See `ABI.md` at the repository root for the full contract.

use crate::{ErrorCode, Reason};

/// Version of the ABI described in `ABI.md`. Hosts refuse modules reporting another version.
pub const ABI_VERSION: u32 = 2;

/// The exported linear memory.
pub const EXPORT_MEMORY: &str = "memory";
/// `() -> i32`: the ABI version the module implements.
pub const EXPORT_ABI_VERSION: &str = "ff_abi_version";
/// `(len: i32) -> i32`: the address of the instance's input region, grown to at least `len`
/// bytes; 0 when memory is exhausted.
pub const EXPORT_INPUT: &str = "ff_input";
/// `(flag, ctx_len, options: i32) -> i64`: evaluate flag number `flag` (its position in the
/// manifest) against the positional context in the input region; returns the location of one
/// result record.
pub const EXPORT_EVALUATE: &str = "ff_evaluate";
/// `(ctx_len, options: i32) -> i64`: evaluate every flag; one record per flag, in order.
pub const EXPORT_EVALUATE_ALL: &str = "ff_evaluate_all";
/// `() -> i64`: the MessagePack manifest.
pub const EXPORT_MANIFEST: &str = "ff_manifest";

/// Every export a module must have, in the order hosts check them.
pub const REQUIRED_EXPORTS: [&str; 6] = [
    EXPORT_MEMORY,
    EXPORT_ABI_VERSION,
    EXPORT_INPUT,
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

/// Bytes before a record's message: reason, error code, variant, message and explanation
/// lengths.
pub const RECORD_HEADER: usize = 12;
/// The variant field of a record that serves no variant (an unknown flag).
pub const NO_VARIANT: u16 = u16::MAX;

/// One flag's answer as the module writes it: indices into the manifest instead of values, so
/// a host shares the values it already holds. Layout (little-endian):
///
/// | bytes | field |
/// |---|---|
/// | 1 | reason code ([`Reason::code`]) |
/// | 1 | error code ([`ErrorCode::code`], 0 for none) |
/// | 2 | variant index in the flag's variants ([`NO_VARIANT`] for none) |
/// | 4 | message length |
/// | 4 | explanation length (0 for none) |
/// | … | message (UTF-8), then the explanation (MessagePack [`crate::Explanation`]) |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Why this answer.
    pub reason: Reason,
    /// Set when `reason` is `ERROR`.
    pub error: Option<ErrorCode>,
    /// The served variant's index; `None` when nothing is served.
    pub variant: Option<u16>,
    /// The error message (empty without an error).
    pub message: &'a str,
    /// The MessagePack explanation; empty when none was asked for.
    pub explain: &'a [u8],
}

/// Why record bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Fewer bytes than the header or its lengths announce.
    #[error("result record is truncated")]
    Truncated,
    /// An unknown reason or error code.
    #[error("result record has unknown code {0}")]
    Code(u8),
    /// The message is not UTF-8.
    #[error("result record message is not UTF-8")]
    Message,
}

impl<'a> Record<'a> {
    /// Appends the record to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.push(self.reason.code());
        out.push(self.error.map_or(0, ErrorCode::code));
        out.extend_from_slice(&self.variant.unwrap_or(NO_VARIANT).to_le_bytes());
        out.extend_from_slice(&(self.message.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.explain.len() as u32).to_le_bytes());
        out.extend_from_slice(self.message.as_bytes());
        out.extend_from_slice(self.explain);
    }

    /// Reads one record from the front of `bytes`; returns it and the bytes after it.
    pub fn read(bytes: &'a [u8]) -> Result<(Record<'a>, &'a [u8]), RecordError> {
        let (head, rest) = bytes
            .split_first_chunk::<RECORD_HEADER>()
            .ok_or(RecordError::Truncated)?;
        let [r, e, v0, v1, m0, m1, m2, m3, x0, x1, x2, x3] = *head;
        let reason = Reason::from_code(r).ok_or(RecordError::Code(r))?;
        let error = match e {
            0 => None,
            code => Some(ErrorCode::from_code(code).ok_or(RecordError::Code(code))?),
        };
        let variant = Some(u16::from_le_bytes([v0, v1])).filter(|&v| v != NO_VARIANT);
        let message_len = u32::from_le_bytes([m0, m1, m2, m3]) as usize;
        let explain_len = u32::from_le_bytes([x0, x1, x2, x3]) as usize;
        if rest.len() < message_len.saturating_add(explain_len) {
            return Err(RecordError::Truncated);
        }
        let (message, rest) = rest.split_at(message_len);
        let (explain, rest) = rest.split_at(explain_len);
        let message = std::str::from_utf8(message).map_err(|_| RecordError::Message)?;
        Ok((
            Record {
                reason,
                error,
                variant,
                message,
                explain,
            },
            rest,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_puts_pointer_high_and_length_low() {
        assert_eq!(pack(0x1234, 0x10), 0x0000_1234_0000_0010);
        assert_eq!(unpack(pack(u32::MAX, 7)), (u32::MAX, 7));
    }

    #[test]
    fn records_round_trip_and_refuse_bad_bytes() {
        let r = Record {
            reason: Reason::Error,
            error: Some(ErrorCode::TypeMismatch),
            variant: Some(2),
            message: "context attribute `x` is declared int but is string",
            explain: &[0x81, 0xa1, b's', 0x90],
        };
        let mut out = Vec::new();
        r.write(&mut out);
        out.push(0xee);
        assert_eq!(Record::read(&out), Ok((r, &[0xee][..])));
        assert_eq!(
            Record::read(&out[..out.len() - 2]),
            Err(RecordError::Truncated)
        );
        let mut bad = out.clone();
        bad[1] = 99;
        assert_eq!(Record::read(&bad), Err(RecordError::Code(99)));
        let none = Record {
            reason: Reason::Static,
            error: None,
            variant: None,
            message: "",
            explain: &[],
        };
        let mut out = Vec::new();
        none.write(&mut out);
        assert_eq!(out.len(), RECORD_HEADER);
        assert_eq!(Record::read(&out), Ok((none, &[][..])));
    }
}
