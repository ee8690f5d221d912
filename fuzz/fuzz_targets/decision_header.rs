//! Decision context header values: refused with a reason (or, under a random key, never
//! accepted), never a panic.
#![no_main]

use std::sync::OnceLock;

use flagforge_decision::DecisionContext;
use flagforge_distribution::{KeyPair, TrustedKeys};
use libfuzzer_sys::fuzz_target;

fn trusted() -> &'static TrustedKeys {
    static KEYS: OnceLock<TrustedKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        TrustedKeys::new([key.public()])
    })
}

fuzz_target!(|data: &[u8]| {
    let header = String::from_utf8_lossy(data);
    assert!(DecisionContext::verify(&header, trusted(), 1_795_000_000_000).is_err());
});
