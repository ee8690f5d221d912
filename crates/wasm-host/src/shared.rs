//! New versions without compiling: a module split into its code and its data.
//!
//! Two versions of a ruleset differ only in their data segments and their memory minimum
//! (`ABI.md`, "Linking the rules"): every other section is the same bytes. A module is
//! therefore split into a **template** — the module without its data section and with a memory
//! minimum of 0 — and a **data patch**: its memory minimum and its active data segments. The
//! template is compiled once per host (or read from the compiled-module cache) and shared by
//! every module with the same template bytes; each instance of a module is an instance of its
//! template, its memory grown to the module's minimum, then the module's segments written in
//! order.
//!
//! That is exactly what instantiating the module does (WebAssembly core spec, "Instantiation":
//! memories are created at their minimum, zero-filled, then active data segments are copied in
//! order; `memory.grow` also zero-fills), so the split changes nothing a guest can observe, with
//! these conditions, checked here, under which it holds: one 32-bit unshared memory, defined by
//! the module; no start function; every data segment active, for memory 0, at an `i32.const`
//! offset; no passive segments. A module outside them is compiled whole, as before.

use sha2::{Digest, Sha256};
use wasmparser::{BinaryReader, DataKind, DataSectionReader, MemorySectionReader, Operator};

/// Most templates a host keeps (distinct evaluators: one per flagforge build in use).
const TEMPLATES: usize = 8;

/// Compiled templates of one host, newest last; the oldest goes first past [`TEMPLATES`].
#[derive(Default)]
pub(crate) struct Templates {
    compiled: std::sync::Mutex<std::collections::VecDeque<([u8; 32], wasmtime::Module)>>,
}

impl Templates {
    pub(crate) fn get(&self, key: &[u8; 32]) -> Option<wasmtime::Module> {
        let compiled = self.compiled.lock().ok()?;
        compiled
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, m)| m.clone())
    }

    pub(crate) fn insert(&self, key: [u8; 32], module: wasmtime::Module) {
        if let Ok(mut compiled) = self.compiled.lock() {
            if compiled.iter().any(|(k, _)| *k == key) {
                return;
            }
            if compiled.len() >= TEMPLATES {
                compiled.pop_front();
            }
            compiled.push_back((key, module));
        }
    }
}

/// WebAssembly page size.
const PAGE: u64 = 65_536;

/// What a module's instances need written after instantiating its template.
#[derive(Debug)]
pub(crate) struct DataPatch {
    /// The module's memory minimum, in pages.
    pub(crate) min_pages: u64,
    /// Active data segments: (offset, bytes), in module order.
    pub(crate) segments: Vec<(u32, Vec<u8>)>,
}

/// A module split into its template and its data.
pub(crate) struct Split {
    /// sha256 of the template bytes: modules with the same key share compiled code.
    pub(crate) key: [u8; 32],
    /// The module without data, memory minimum 0.
    pub(crate) template: Vec<u8>,
    pub(crate) patch: DataPatch,
}

const CUSTOM: u8 = 0;
const IMPORT: u8 = 2;
const MEMORY: u8 = 5;
const START: u8 = 8;
const DATA: u8 = 11;
const DATA_COUNT: u8 = 12;

fn const_i32(expr: &wasmparser::ConstExpr) -> Option<u32> {
    let mut ops = expr.get_operators_reader();
    match (ops.read().ok()?, ops.read().ok()?) {
        (Operator::I32Const { value }, Operator::End) if ops.eof() => Some(value as u32),
        _ => None,
    }
}

/// Splits `bytes`; `None` when the module is malformed or outside the conditions above (it is
/// then compiled whole, and wasmtime says what is wrong with it).
pub(crate) fn split(bytes: &[u8]) -> Option<Split> {
    let header = bytes.get(..8)?;
    if header != b"\0asm\x01\0\0\0" {
        return None;
    }
    let mut reader = BinaryReader::new(bytes, 0);
    reader.read_bytes(8).ok()?;
    let mut template = header.to_vec();
    let mut min_pages = None;
    let mut segments = Vec::new();
    let mut data_count = None;
    let mut data_seen = false;
    while !reader.eof() {
        let id = reader.read_u8().ok()?;
        let len = reader.read_var_u32().ok()? as usize;
        let body = reader.read_bytes(len).ok()?;
        // The data section is the last known section, and there is one: the template (which
        // leaves it out) must not hide a module whose sections are out of order.
        if data_seen && id != CUSTOM {
            return None;
        }
        match id {
            DATA_COUNT => {
                data_count = Some(BinaryReader::new(body, 0).read_var_u32().ok()?);
            }
            CUSTOM => {}
            IMPORT | START => return None,
            MEMORY => {
                let mems: Vec<_> = MemorySectionReader::new(BinaryReader::new(body, 0))
                    .ok()?
                    .into_iter()
                    .collect::<Result<_, _>>()
                    .ok()?;
                let [m] = mems.as_slice() else {
                    return None;
                };
                if m.memory64 || m.shared || m.page_size_log2.is_some() || min_pages.is_some() {
                    return None;
                }
                min_pages = Some(m.initial);
                let mut sec = wasm_encoder::MemorySection::new();
                sec.memory(wasm_encoder::MemoryType {
                    minimum: 0,
                    maximum: m.maximum,
                    memory64: false,
                    shared: false,
                    page_size_log2: None,
                });
                wasm_encoder::Section::append_to(&sec, &mut template);
            }
            DATA => {
                data_seen = true;
                for seg in DataSectionReader::new(BinaryReader::new(body, 0)).ok()? {
                    let seg = seg.ok()?;
                    let DataKind::Active {
                        memory_index: 0,
                        offset_expr,
                    } = seg.kind
                    else {
                        return None;
                    };
                    segments.push((const_i32(&offset_expr)?, seg.data.to_vec()));
                }
            }
            _ => wasm_encoder::Section::append_to(
                &wasm_encoder::RawSection { id, data: body },
                &mut template,
            ),
        }
    }
    if data_count.is_some_and(|n| n as usize != segments.len()) {
        return None;
    }
    let min_pages = min_pages?;
    // Every segment must fit the memory the module starts with, as instantiation requires.
    let size = min_pages.checked_mul(PAGE)?;
    if segments
        .iter()
        .any(|(at, data)| u64::from(*at) + data.len() as u64 > size)
    {
        return None;
    }
    Some(Split {
        key: Sha256::digest(&template).into(),
        template,
        patch: DataPatch {
            min_pages,
            segments,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(min: u32, data: &str) -> Vec<u8> {
        wat::parse_str(format!(
            r#"(module (memory (export "memory") {min}) (data (i32.const 16) "{data}")
                 (func (export "f") (result i32) (i32.load (i32.const 16))))"#
        ))
        .unwrap()
    }

    #[test]
    fn versions_differing_only_in_data_share_a_template() {
        let a = split(&module(1, "abcd")).unwrap();
        let b = split(&module(2, "wxyz")).unwrap();
        assert_eq!(a.key, b.key);
        assert_eq!(a.patch.min_pages, 1);
        assert_eq!(b.patch.min_pages, 2);
        assert_eq!(b.patch.segments, vec![(16, b"wxyz".to_vec())]);
        let other = wat::parse_str(
            r#"(module (memory 1) (data (i32.const 16) "abcd")
                 (func (export "f") (result i32) (i32.const 7)))"#,
        )
        .unwrap();
        assert_ne!(split(&other).unwrap().key, a.key, "other code, other key");
    }

    #[test]
    fn modules_outside_the_conditions_are_not_split() {
        for wat in [
            r#"(module (import "env" "m" (memory 1)))"#,
            r#"(module (memory 1) (func $s) (start $s))"#,
            r#"(module (memory 1) (data "passive"))"#,
            r#"(module (memory 1) (data (i32.const 65534) "too long"))"#,
            r#"(module (memory 1) (global $g i32 (i32.const 0)) (data (global.get $g) "x"))"#,
        ] {
            assert!(split(&wat::parse_str(wat).unwrap()).is_none(), "{wat}");
        }
        assert!(split(b"\0asm\x01\0\0\0\x99").is_none());
        // A data section followed by another known section (out of order) is not split.
        let mut reordered = module(1, "abcd");
        reordered.extend_from_slice(&[7, 1, 0]); // an empty export section after the data
        assert!(split(&reordered).is_none());
    }
}
