//! Every kind of bad module is refused at load with its own error.

use wasm_host::{Host, Limits, LoadError};

use crate::guests::{self, Guest};

fn load(bytes: &[u8]) -> Result<wasm_host::LoadedModule, LoadError> {
    Host::new(Limits::default()).unwrap().load(bytes)
}

#[test]
fn the_well_behaved_hand_written_guest_loads() {
    let m = load(&guests::build(Guest::default())).unwrap();
    assert_eq!(m.manifest().ruleset, "hostile");
}

#[test]
fn wrong_magic_is_refused() {
    let mut bytes = guests::checkout();
    bytes[0] = b'X';
    assert!(matches!(load(&bytes), Err(LoadError::BadMagic)));
    assert!(matches!(load(b""), Err(LoadError::BadMagic)));
    assert!(matches!(load(b"{\"json\":true}"), Err(LoadError::BadMagic)));
}

#[test]
fn a_component_or_future_binary_version_is_refused() {
    let err = load(b"\0asm\x0d\0\x01\0").map(|_| ()).unwrap_err();
    assert!(
        matches!(err, LoadError::UnsupportedBinaryVersion(0x0001_000d)),
        "{err}"
    );
}

#[test]
fn a_truncated_module_is_refused() {
    let bytes = guests::checkout();
    for cut in [5, 8, 9, bytes.len() / 2, bytes.len() - 1] {
        let err = load(&bytes[..cut]).map(|_| ()).unwrap_err();
        assert!(
            // A bare 8-byte header is a valid empty module: it fails on its missing exports.
            matches!(
                err,
                LoadError::Invalid(_) | LoadError::BadMagic | LoadError::BadExport { .. }
            ),
            "cut at {cut}: {err}"
        );
    }
}

#[test]
fn a_module_with_an_import_is_refused() {
    let bytes = guests::build(Guest {
        extra: r#"(import "env" "clock" (func))"#,
        ..Guest::default()
    });
    let err = load(&bytes).map(|_| ()).unwrap_err();
    assert!(
        matches!(&err, LoadError::HasImports(name) if name == "env::clock"),
        "{err}"
    );
}

#[test]
fn an_unsupported_abi_version_is_refused() {
    let err = load(&guests::build(Guest {
        abi_version: 3,
        ..Guest::default()
    }))
    .map(|_| ())
    .unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::UnsupportedAbi {
                found: 3,
                expected: 2
            }
        ),
        "{err}"
    );
    // A version 1 module (ff_alloc, no ff_input) is named as such, not as a missing export.
    let v1 = wat::parse_str(
        r#"(module (memory (export "memory") 1)
             (func (export "ff_abi_version") (result i32) (i32.const 1))
             (func (export "ff_alloc") (param i32) (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    let err = load(&v1).map(|_| ()).unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::UnsupportedAbi {
                found: 1,
                expected: 2
            }
        ),
        "{err}"
    );
}

#[test]
fn a_missing_export_is_refused() {
    let err = load(&guests::build(Guest {
        omit_manifest: true,
        ..Guest::default()
    }))
    .map(|_| ())
    .unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::BadExport {
                name: "ff_manifest",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn an_export_with_the_wrong_signature_is_refused() {
    let g = Guest {
        input_signature: Some("(result i32)"),
        ..Guest::default()
    };
    let err = load(&guests::build(g)).map(|_| ()).unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::BadExport {
                name: "ff_input",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn an_oversized_module_is_refused_with_the_limit() {
    let host = Host::new(Limits {
        max_module_bytes: 1000,
        ..Limits::default()
    })
    .unwrap();
    let err = host.load(&guests::checkout()).map(|_| ()).unwrap_err();
    assert!(
        matches!(err, LoadError::TooLarge { limit: 1000, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("the limit is 1000 bytes"), "{err}");
}

#[test]
fn a_module_with_corrupt_rules_is_refused() {
    let bytes =
        flagforge_compiler::link::link(flagforge_compiler::GUEST_WASM, b"\xff\xfe garbage rules")
            .unwrap();
    let err = load(&bytes).map(|_| ()).unwrap_err();
    assert!(matches!(err, LoadError::NoRules(_)), "{err}");
    assert!(
        err.to_string().contains("compiled rules are malformed"),
        "{err}"
    );
}

#[test]
fn a_generic_guest_without_rules_is_refused() {
    let err = load(flagforge_compiler::GUEST_WASM)
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(err, LoadError::NoRules(_)), "{err}");
    assert!(err.to_string().contains("no linked rules"), "{err}");
}

#[test]
fn initial_memory_above_the_cap_is_refused() {
    let host = Host::new(Limits {
        memory_bytes: 64 * 1024,
        ..Limits::default()
    })
    .unwrap();
    let err = host.load(&guests::checkout()).map(|_| ()).unwrap_err();
    assert!(matches!(err, LoadError::Instantiate(_)), "{err}");
}
