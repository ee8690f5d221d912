//! The module's ABI: the exports a host calls, over evaluator-core. The only crate with
//! `#[no_mangle]` and `unsafe`.
//!
//! The compiled rules are not known when this crate is built. `flagforge build` links them in:
//! it appends them as a data segment in fresh memory pages above everything the Rust program
//! uses (the allocator only grows memory, it never reuses pages below its first `memory.grow`)
//! and writes their address and length into [`RULES_LOCATION`], found by its marker. See
//! `ABI.md` ("Linking the rules").
//!
//! Every export answers with data, never a trap: inputs are decoded with explicit limits and
//! failures become results with reason `ERROR`.
#![expect(
    unsafe_code,
    reason = "the ABI exports take raw pointers into the module's own memory; each block says why it is sound"
)]
#![deny(clippy::indexing_slicing)]

use std::sync::OnceLock;

use evaluator_core::Ruleset;
use flagforge_protocol::{abi, encode, ErrorCode, Resolution, Value};

use flagforge_protocol::abi::RULES_MARKER;

/// Value of `ptr` and `len` before linking. Non-zero on purpose: `wasm-opt` drops zero bytes
/// from data segments, and the linker must find the whole location inside one segment.
pub const UNLINKED: u32 = u32::MAX;

/// Where the linked rules are: the marker, then little-endian `u32` address and length.
#[repr(C)]
pub struct RulesLocation {
    /// [`RULES_MARKER`].
    pub marker: [u8; 16],
    /// Address of the rules in linear memory ([`UNLINKED`] until linked).
    pub ptr: u32,
    /// Length of the rules in bytes ([`UNLINKED`] until linked).
    pub len: u32,
}

/// Patched by the linker; read with volatile loads so the compiler cannot fold the sentinel in.
#[used]
#[no_mangle]
pub static RULES_LOCATION: RulesLocation = RulesLocation {
    marker: RULES_MARKER,
    ptr: UNLINKED,
    len: UNLINKED,
};

static RULES: OnceLock<Result<Ruleset, String>> = OnceLock::new();

fn rules() -> &'static Result<Ruleset, String> {
    RULES.get_or_init(|| {
        // SAFETY: RULES_LOCATION is a plain-data static that lives for the whole program; the
        // volatile reads stop the compiler from assuming the unlinked zero values.
        let (ptr, len) = unsafe {
            (
                std::ptr::read_volatile(&raw const RULES_LOCATION.ptr),
                std::ptr::read_volatile(&raw const RULES_LOCATION.len),
            )
        };
        if len == UNLINKED || ptr == UNLINKED || len == 0 {
            return Err("module has no linked rules".to_owned());
        }
        #[cfg(target_arch = "wasm32")]
        {
            let end = u64::from(ptr) + u64::from(len);
            let memory_end = core::arch::wasm32::memory_size(0) as u64 * 65_536;
            if end > memory_end {
                return Err("linked rules lie outside memory".to_owned());
            }
            // SAFETY: the linker placed `len` bytes at `ptr` in a data segment of pages the
            // allocator never hands out (checked above to lie inside memory); nothing writes
            // them, so a shared slice over them is valid for the program's lifetime.
            let bytes =
                unsafe { std::slice::from_raw_parts(ptr as usize as *const u8, len as usize) };
            Ruleset::decode(bytes).map_err(|e| e.to_string())
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = ptr;
            Err("rules are linked only into wasm32 builds".to_owned())
        }
    })
}

/// Hands a result buffer to the host: leaks it and returns its packed location.
fn give(bytes: Vec<u8>) -> u64 {
    let mut bytes = bytes.into_boxed_slice();
    let len = bytes.len() as u32;
    let ptr = bytes.as_mut_ptr() as usize as u32;
    std::mem::forget(bytes);
    abi::pack(ptr, len)
}

/// Borrows an input buffer written by the host.
///
/// # Safety
/// `ptr..ptr+len` must be a buffer obtained from [`ff_alloc`] and not yet freed.
unsafe fn input<'a>(ptr: u32, len: u32) -> &'a [u8] {
    if len == 0 {
        return &[];
    }
    // SAFETY: guaranteed by the caller (the ABI contract: buffers come from ff_alloc).
    unsafe { std::slice::from_raw_parts(ptr as usize as *const u8, len as usize) }
}

/// The ABI version.
#[no_mangle]
pub extern "C" fn ff_abi_version() -> u32 {
    abi::ABI_VERSION
}

/// Allocates `len` bytes for the host to write into. Returns 0 if memory is exhausted.
#[no_mangle]
pub extern "C" fn ff_alloc(len: u32) -> u32 {
    if len == 0 {
        return 0;
    }
    let mut buf: Vec<u8> = Vec::new();
    if buf.try_reserve_exact(len as usize).is_err() {
        return 0;
    }
    buf.resize(len as usize, 0);
    abi::unpack(give(buf)).0
}

/// Frees a buffer from [`ff_alloc`] or one returned by another export.
///
/// # Safety
/// `ptr`/`len` must describe a live buffer handed out by this module, freed once.
#[no_mangle]
pub unsafe extern "C" fn ff_free(ptr: u32, len: u32) {
    if ptr == 0 || len == 0 {
        return;
    }
    // SAFETY: per the ABI contract the buffer was leaked by `give` as a boxed slice of exactly
    // `len` bytes at `ptr`, and is freed once; rebuilding the box releases it.
    drop(unsafe {
        Box::from_raw(std::ptr::slice_from_raw_parts_mut(
            ptr as usize as *mut u8,
            len as usize,
        ))
    });
}

fn fatal_one(key: &[u8], message: &str) -> Vec<u8> {
    let key = String::from_utf8_lossy(key);
    let r = Resolution::error(&key, Value::Null, None, ErrorCode::ProviderFatal, message);
    encode(&r).unwrap_or_default()
}

/// Evaluates one flag. Returns the packed location of a MessagePack `Resolution`.
///
/// # Safety
/// Both input buffers must come from [`ff_alloc`] (or be empty).
#[no_mangle]
pub unsafe extern "C" fn ff_evaluate(
    key_ptr: u32,
    key_len: u32,
    ctx_ptr: u32,
    ctx_len: u32,
    options: u32,
) -> u64 {
    // SAFETY: the caller upholds the ABI contract for both buffers.
    let (key, ctx) = unsafe { (input(key_ptr, key_len), input(ctx_ptr, ctx_len)) };
    let out = match rules() {
        Ok(rules) => rules.evaluate_encoded(key, ctx, options),
        Err(msg) => fatal_one(key, msg),
    };
    give(out)
}

/// Evaluates every flag. Returns the packed location of a MessagePack list of `Resolution`.
///
/// # Safety
/// The input buffer must come from [`ff_alloc`] (or be empty).
#[no_mangle]
pub unsafe extern "C" fn ff_evaluate_all(ctx_ptr: u32, ctx_len: u32, options: u32) -> u64 {
    // SAFETY: the caller upholds the ABI contract for the buffer.
    let ctx = unsafe { input(ctx_ptr, ctx_len) };
    let out = match rules() {
        Ok(rules) => rules.evaluate_all_encoded(ctx, options),
        Err(msg) => encode(&vec![Resolution::error(
            "",
            Value::Null,
            None,
            ErrorCode::ProviderFatal,
            msg.as_str(),
        )])
        .unwrap_or_default(),
    };
    give(out)
}

/// The manifest: MessagePack `{ "ok": Manifest }` or `{ "error": message }`.
#[no_mangle]
pub extern "C" fn ff_manifest() -> u64 {
    let reply = match rules() {
        Ok(rules) => encode(&ManifestReply::Ok(rules.manifest())),
        Err(msg) => encode(&ManifestReply::Error(msg.clone())),
    };
    give(reply.unwrap_or_default())
}

pub use flagforge_protocol::manifest::ManifestReply;
