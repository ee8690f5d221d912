//! A guard around one librdkafka 2.12.1 function that crashes hosts (issue #12).
//!
//! When a broker comes back without its topics (data loss; tansu's memory engine after a
//! restart), a consumer's Fetch falls back to version 12 (the topic has no id any more), and
//! the response's leader-discovery tags (KIP-951) become a metadata update whose topics have
//! neither an id nor a name. `rd_kafka_metadata_update_op` then looks the null name up in its
//! cache (`strcmp(NULL, …)`) on the `rdk:main` thread: SIGSEGV, 5 of 5 times in the issue's
//! attack and in `a_broker_that_comes_back_empty_under_load_neither_crashes_nor_silences_the_host`.
//!
//! The linker is told (`.cargo/config.toml`: `-Wl,--wrap=rd_kafka_metadata_update_op`) to send
//! librdkafka's own calls of that function here. An update naming a topic with a null name is
//! dropped whole, as handled: it is only an optimisation (leader discovery without a metadata
//! request), and the error that carried it makes librdkafka refresh its metadata the ordinary
//! way. Every other update goes to the real function. Leader discovery from Fetch v13 and
//! later also names topics by id only, so it is dropped too; for the single-partition topics of
//! flagforge that costs one metadata round trip after a leader change.

use std::ffi::c_int;

use rdkafka::bindings::{rd_kafka_metadata_t, rd_kafka_t};

/// `RD_KAFKA_OP_RES_HANDLED` (rdkafka_op.h): the op was handled; the caller destroys it.
const OP_RES_HANDLED: c_int = 1;

extern "C" {
    /// The real `rd_kafka_metadata_update_op` (the linker's `__real_` alias).
    fn __real_rd_kafka_metadata_update_op(
        rk: *mut rd_kafka_t,
        mdi: *mut rd_kafka_metadata_t,
    ) -> c_int;
}

/// Called by librdkafka instead of `rd_kafka_metadata_update_op`.
///
/// # Safety
/// Called only by librdkafka's main thread with the op's metadata: `mdi` points to an
/// `rd_kafka_metadata_internal_t`, whose first field is the public `rd_kafka_metadata_t`
/// (documented as such in rdkafka_metadata.h, "Must be kept the first field so the pointer
/// can be cast"), with `topic_cnt` entries at `topics`.
#[no_mangle]
#[expect(
    unsafe_code,
    reason = "a C callback from librdkafka: reads the public metadata struct it is given"
)]
pub unsafe extern "C" fn __wrap_rd_kafka_metadata_update_op(
    rk: *mut rd_kafka_t,
    mdi: *mut rd_kafka_metadata_t,
) -> c_int {
    // SAFETY: see the function's contract: `mdi` is valid for reads of the public struct and
    // its `topics` array of `topic_cnt` elements for the duration of this call; both are read
    // only, and only when non-null.
    unsafe {
        if let Some(md) = mdi.as_ref() {
            let count = usize::try_from(md.topic_cnt).unwrap_or(0);
            if !md.topics.is_null()
                && std::slice::from_raw_parts(md.topics, count)
                    .iter()
                    .any(|t| t.topic.is_null())
            {
                return OP_RES_HANDLED;
            }
        }
        __real_rd_kafka_metadata_update_op(rk, mdi)
    }
}

/// Referenced by every client the crate creates, so the guard is linked into each binary
/// that uses librdkafka through this crate.
pub(crate) fn linked() -> usize {
    std::hint::black_box(__wrap_rd_kafka_metadata_update_op as *const () as usize)
}
