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
//! failures become results with reason `ERROR`. The instance owns its input and output
//! regions; a host never allocates or frees module memory (ABI v2).
#![expect(
    unsafe_code,
    reason = "the ABI exports take raw pointers into the module's own memory; each block says why it is sound"
)]
#![deny(clippy::indexing_slicing)]

use std::sync::OnceLock;

use evaluator_core::Ruleset;
use flagforge_protocol::abi::Record;
use flagforge_protocol::{abi, encode, ErrorCode, Reason};

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

/// The instance's two regions: the host writes each call's context into `input` (grown by
/// [`ff_input`]); every answer is written into `output`, valid until the next call. Nothing is
/// allocated per call once both have grown to their working size.
struct Regions {
    input: Vec<u8>,
    output: Vec<u8>,
}

thread_local! {
    static REGIONS: std::cell::RefCell<Regions> = const {
        std::cell::RefCell::new(Regions { input: Vec::new(), output: Vec::new() })
    };
}

/// Runs `write` on the cleared output region with the first `ctx_len` bytes of the input
/// region (empty when the host names more than it reserved: the context then fails to
/// decode) and returns the output's packed location.
fn answer(ctx_len: u32, write: impl FnOnce(&[u8], &mut Vec<u8>)) -> u64 {
    REGIONS.with(|cell| {
        let Ok(mut regions) = cell.try_borrow_mut() else {
            return 0;
        };
        let Regions { input, output } = &mut *regions;
        output.clear();
        write(input.get(..ctx_len as usize).unwrap_or(&[]), output);
        abi::pack(output.as_ptr() as usize as u32, output.len() as u32)
    })
}

fn fatal(message: &str, out: &mut Vec<u8>) {
    Record {
        reason: Reason::Error,
        error: Some(ErrorCode::ProviderFatal),
        variant: None,
        message,
        explain: &[],
    }
    .write(out);
}

/// The ABI version.
#[no_mangle]
pub extern "C" fn ff_abi_version() -> u32 {
    abi::ABI_VERSION
}

/// The address of the input region, grown to at least `len` bytes; 0 when memory is
/// exhausted. The address stays valid until the next call of this function.
#[no_mangle]
pub extern "C" fn ff_input(len: u32) -> u32 {
    REGIONS.with(|cell| {
        let Ok(mut regions) = cell.try_borrow_mut() else {
            return 0;
        };
        let input = &mut regions.input;
        let len = len as usize;
        if input.len() < len {
            if input.try_reserve_exact(len - input.len()).is_err() {
                return 0;
            }
            input.resize(len, 0);
        }
        if input.is_empty() {
            // A valid, non-zero address even for an empty region.
            input.push(0);
        }
        input.as_mut_ptr() as usize as u32
    })
}

/// Evaluates flag number `flag` against the positional context in the first `ctx_len` bytes
/// of the input region. Returns the packed location of one result record.
#[no_mangle]
pub extern "C" fn ff_evaluate(flag: u32, ctx_len: u32, options: u32) -> u64 {
    answer(ctx_len, |ctx, out| match rules() {
        Ok(rules) => rules.evaluate_record(flag, ctx, options, out),
        Err(msg) => fatal(msg, out),
    })
}

/// Evaluates every flag. Returns the packed location of one record per flag, in order.
#[no_mangle]
pub extern "C" fn ff_evaluate_all(ctx_len: u32, options: u32) -> u64 {
    answer(ctx_len, |ctx, out| match rules() {
        Ok(rules) => rules.evaluate_all_records(ctx, options, out),
        Err(msg) => fatal(msg, out),
    })
}

/// The manifest: MessagePack `{ "ok": Manifest }` or `{ "error": message }`, in the output
/// region.
#[no_mangle]
pub extern "C" fn ff_manifest() -> u64 {
    answer(0, |_, out| {
        let reply = match rules() {
            Ok(rules) => encode(&ManifestReply::Ok(rules.manifest())),
            Err(msg) => encode(&ManifestReply::Error(msg.clone())),
        };
        out.extend_from_slice(&reply.unwrap_or_default());
    })
}

pub use flagforge_protocol::manifest::ManifestReply;
