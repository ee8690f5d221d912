//! Links compiled rules into the generic guest module.
//!
//! The rules go into a new active data segment placed in fresh pages above the guest's
//! initial memory (the guest's allocator only ever takes pages it grows itself, so nothing
//! else writes there), and their address and length are written after the guest's
//! `FLAGFORGE:RULES` marker. Custom sections are dropped. The result is validated before it
//! is returned. Layout details: `ABI.md`, "Linking the rules".

use wasm_encoder::{
    ConstExpr, DataCountSection, DataSection, MemorySection, MemoryType, Section as _,
};
use wasmparser::{BinaryReader, DataKind, DataSectionReader, MemorySectionReader, Operator};

use flagforge_protocol::abi::RULES_MARKER;
const PAGE: u64 = 65_536;

/// Why linking failed. These indicate a broken guest build, not a user error.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The guest is not a well-formed module.
    #[error("guest module is malformed: {0}")]
    Malformed(String),
    /// The guest's layout is not what the linker expects.
    #[error("guest module layout is unsupported: {0}")]
    Layout(String),
    /// The linked module does not validate.
    #[error("linked module does not validate: {0}")]
    Invalid(String),
}

fn malformed(e: impl std::fmt::Display) -> LinkError {
    LinkError::Malformed(e.to_string())
}

struct RawSection<'a> {
    id: u8,
    body: &'a [u8],
}

fn sections(module: &[u8]) -> Result<Vec<RawSection<'_>>, LinkError> {
    if module.get(..8) != Some(b"\0asm\x01\0\0\0".as_slice()) {
        return Err(LinkError::Malformed("bad header".into()));
    }
    let mut reader = BinaryReader::new(module, 0);
    reader.read_bytes(8).map_err(malformed)?;
    let mut out = Vec::new();
    while !reader.eof() {
        let id = reader.read_u8().map_err(malformed)?;
        let len = reader.read_var_u32().map_err(malformed)? as usize;
        let body = reader.read_bytes(len).map_err(malformed)?;
        out.push(RawSection { id, body });
    }
    Ok(out)
}

fn const_i32(expr: &wasmparser::ConstExpr) -> Result<i32, LinkError> {
    let mut ops = expr.get_operators_reader();
    let first = ops.read().map_err(malformed)?;
    let end = ops.read().map_err(malformed)?;
    match (first, end) {
        (Operator::I32Const { value }, Operator::End) => Ok(value),
        _ => Err(LinkError::Layout(
            "data segment offset is not a constant".into(),
        )),
    }
}

fn append_section(out: &mut Vec<u8>, id: u8, body: &[u8]) {
    out.push(id);
    leb128_u32(out, body.len() as u32);
    out.extend_from_slice(body);
}

fn leb128_u32(out: &mut Vec<u8>, mut v: u32) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Links `rules` into `guest`, returning the final module bytes.
pub fn link(guest: &[u8], rules: &[u8]) -> Result<Vec<u8>, LinkError> {
    let secs = sections(guest)?;
    let mut memory: Option<MemoryType> = None;
    for s in secs.iter().filter(|s| s.id == 5) {
        let reader = MemorySectionReader::new(BinaryReader::new(s.body, 0)).map_err(malformed)?;
        let mems: Vec<_> = reader
            .into_iter()
            .collect::<Result<_, _>>()
            .map_err(malformed)?;
        let [m] = mems.as_slice() else {
            return Err(LinkError::Layout("expected exactly one memory".into()));
        };
        if m.memory64 || m.shared {
            return Err(LinkError::Layout(
                "expected a 32-bit unshared memory".into(),
            ));
        }
        memory = Some(MemoryType {
            minimum: m.initial,
            maximum: m.maximum,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
    }
    let mut memory = memory.ok_or_else(|| LinkError::Layout("guest defines no memory".into()))?;
    let rules_addr = memory.minimum * PAGE;
    let rules_pages = (rules.len() as u64).div_ceil(PAGE);
    memory.minimum += rules_pages;
    if let Some(max) = memory.maximum.as_mut() {
        *max = (*max).max(memory.minimum);
    }
    let rules_addr = u32::try_from(rules_addr)
        .map_err(|_| LinkError::Layout("rules do not fit in 32-bit memory".into()))?;
    let rules_len = u32::try_from(rules.len())
        .map_err(|_| LinkError::Layout("rules do not fit in 32-bit memory".into()))?;

    let mut out = b"\0asm\x01\0\0\0".to_vec();
    let mut marker_hits = 0;
    for s in &secs {
        match s.id {
            0 => {} // custom sections (names, producers) are dropped
            5 => {
                let mut sec = MemorySection::new();
                sec.memory(memory);
                sec.append_to(&mut out);
            }
            11 => {
                let reader =
                    DataSectionReader::new(BinaryReader::new(s.body, 0)).map_err(malformed)?;
                let mut sec = DataSection::new();
                for seg in reader {
                    let seg = seg.map_err(malformed)?;
                    let mut data = seg.data.to_vec();
                    match seg.kind {
                        DataKind::Passive => {
                            sec.passive(data);
                        }
                        DataKind::Active {
                            memory_index,
                            offset_expr,
                        } => {
                            let offset = const_i32(&offset_expr)?;
                            let mut at = 0;
                            while let Some(pos) = find(&data[at..], &RULES_MARKER) {
                                let field = at + pos + RULES_MARKER.len();
                                let slot = data.get_mut(field..field + 8).ok_or_else(|| {
                                    LinkError::Layout("rules location is cut off".into())
                                })?;
                                slot[..4].copy_from_slice(&rules_addr.to_le_bytes());
                                slot[4..].copy_from_slice(&rules_len.to_le_bytes());
                                marker_hits += 1;
                                at = field + 8;
                            }
                            sec.active(memory_index, &ConstExpr::i32_const(offset), data);
                        }
                    }
                }
                sec.active(
                    0,
                    &ConstExpr::i32_const(rules_addr as i32),
                    rules.iter().copied(),
                );
                sec.append_to(&mut out);
            }
            12 => {
                let count = BinaryReader::new(s.body, 0)
                    .read_var_u32()
                    .map_err(malformed)?;
                DataCountSection { count: count + 1 }.append_to(&mut out);
            }
            id => append_section(&mut out, id, s.body),
        }
    }
    if marker_hits != 1 {
        return Err(LinkError::Layout(format!(
            "expected the rules marker once in the guest's data, found it {marker_hits} times"
        )));
    }
    wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::default())
        .validate_all(&out)
        .map_err(|e| LinkError::Invalid(e.to_string()))?;
    Ok(out)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
