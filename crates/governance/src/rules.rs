//! The compiled rules inside a module: read back out of its data section, so a diff (or a
//! host checking a change) sees exactly what the module evaluates, never the sources.

use flagforge_model::ir::RulesetIr;
use flagforge_protocol::abi::RULES_MARKER;
use wasmparser::{BinaryReader, DataKind, Operator, Parser, Payload};

use crate::GovernanceError;

fn malformed(e: impl std::fmt::Display) -> GovernanceError {
    GovernanceError::Module(e.to_string())
}

fn offset_of(expr: &wasmparser::ConstExpr) -> Result<u64, GovernanceError> {
    let mut ops = expr.get_operators_reader();
    match (
        ops.read().map_err(malformed)?,
        ops.read().map_err(malformed)?,
    ) {
        (Operator::I32Const { value }, Operator::End) => Ok(u64::from(value as u32)),
        _ => Err(malformed("a data segment's offset is not a constant")),
    }
}

/// The encoded rules a linked module carries (the inverse of the compiler's link step): the
/// linker writes `RULES_MARKER`, then the rules' address and length (two little-endian u32),
/// into the guest's data; the rules are the bytes at that address.
pub fn module_rules_bytes(module: &[u8]) -> Result<Vec<u8>, GovernanceError> {
    let mut segments: Vec<(u64, &[u8])> = Vec::new();
    for payload in Parser::new(0).parse_all(module) {
        if let Payload::DataSection(reader) = payload.map_err(malformed)? {
            for data in reader {
                let data = data.map_err(malformed)?;
                if let DataKind::Active { offset_expr, .. } = data.kind {
                    segments.push((offset_of(&offset_expr)?, data.data));
                }
            }
        }
    }
    let (addr, len) = segments
        .iter()
        .find_map(|(_, data)| {
            let at = data
                .windows(RULES_MARKER.len())
                .position(|w| w == RULES_MARKER)?;
            let mut r = BinaryReader::new(data.get(at + RULES_MARKER.len()..)?, 0);
            Some((u64::from(r.read_u32().ok()?), u64::from(r.read_u32().ok()?)))
        })
        .ok_or_else(|| malformed("no rules marker: not a linked flagforge module"))?;
    segments
        .iter()
        .find_map(|(offset, data)| {
            let start = usize::try_from(addr.checked_sub(*offset)?).ok()?;
            let end = start.checked_add(usize::try_from(len).ok()?)?;
            data.get(start..end).map(<[u8]>::to_vec)
        })
        .ok_or_else(|| malformed("the rules' data segment is missing"))
}

/// The compiled ruleset a module carries.
pub fn module_rules(module: &[u8]) -> Result<RulesetIr, GovernanceError> {
    decode_rules(&module_rules_bytes(module)?)
}

/// Decodes encoded rules (what `flagforge build` links into the module).
pub fn decode_rules(bytes: &[u8]) -> Result<RulesetIr, GovernanceError> {
    RulesetIr::decode(bytes)
        .map_err(|e| GovernanceError::Module(format!("the module's rules do not decode: {e}")))
}
