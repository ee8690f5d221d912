//! Module bytes from the network: refused with a reason, or loaded and answering every flag
//! (with reason ERROR where the module misbehaves), never a crash. Inputs start from the
//! checkout module (scripts/fuzz.sh seeds the corpus with it).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wasm_host::{Host, Limits};

fn host() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| {
        Host::new(Limits {
            fuel_per_call: 5_000_000,
            ..Limits::default()
        })
        .unwrap_or_else(|e| panic!("{e}"))
    })
}

fuzz_target!(|data: &[u8]| {
    match host().load(data) {
        Err(e) => assert!(!e.kind().is_empty()),
        Ok(m) => {
            let all = m.evaluate_all(&flagforge_protocol::Context::new(), false);
            assert_eq!(all.len(), m.manifest().flags.len());
        }
    }
});
