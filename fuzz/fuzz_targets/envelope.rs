//! Records on the modules and audit topics and snapshot files: refused with a reason or
//! accepted only when verified; the publisher's ledger takes any record without panicking.
#![no_main]

use std::sync::OnceLock;

use flagforge_distribution::{Envelope, KeyPair, TrustedKeys};
use flagforge_governance::audit::{verify_chain, AuditRecord};
use flagforge_governance::release::{verified_audit, Ledger};
use libfuzzer_sys::fuzz_target;

fn trusted() -> &'static TrustedKeys {
    static KEYS: OnceLock<TrustedKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        TrustedKeys::new([key.public()])
    })
}

fuzz_target!(|data: &[u8]| {
    let trusted = trusted();
    // Under a random key nothing verifies: a record that passes is a forgery.
    assert!(Envelope::from_record(Some(b"checkout"), data, trusted).is_err());
    let _ = Envelope::decode(data).map(|e| (e.position(), e.signing_bytes()));
    let mut ledger = Ledger::new(trusted.clone(), None);
    let _ = ledger.observe(Some(b"checkout"), data);
    assert!(ledger.history("checkout").latest.is_none());
    let _ = AuditRecord::decode(data).map(|r| r.changes());
    let records = vec![data.to_vec(), data.to_vec()];
    let _ = verify_chain(&records);
    assert!(verified_audit(&records, trusted).0.is_empty());
    let _ = flagforge_governance::decode_changes(data);
});
