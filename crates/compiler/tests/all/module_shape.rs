//! The module's shape: deterministic bytes, no imports, the ABI exports, the size budget.

use flagforge_compiler::compile_path;
use flagforge_protocol::abi;
use wasmparser::{Parser, Payload};

/// Budget from DESIGN.md: a rules-examples module stays under 256 KB.
const SIZE_BUDGET: usize = 256 * 1024;

#[test]
fn building_each_example_twice_gives_the_same_bytes() {
    for name in rules_examples::RULESETS {
        let a = compile_path(&rules_examples::dir(name)).unwrap();
        let b = compile_path(&rules_examples::dir(name)).unwrap();
        assert_eq!(a.sha256, b.sha256, "{name}");
        assert_eq!(a.module, b.module, "{name}");
    }
}

#[test]
fn a_module_does_not_depend_on_where_its_sources_live() {
    let dir = tempfile::tempdir().unwrap();
    let src = rules_examples::dir("checkout");
    for entry in std::fs::read_dir(&src).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "yaml") {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    let a = compile_path(&src).unwrap();
    let b = compile_path(dir.path()).unwrap();
    assert_eq!(a.sha256, b.sha256);
}

#[test]
fn example_modules_import_nothing_export_the_abi_and_fit_the_budget() {
    for name in rules_examples::RULESETS {
        let out = compile_path(&rules_examples::dir(name)).unwrap();
        assert!(
            out.module.len() < SIZE_BUDGET,
            "{name}: {} bytes",
            out.module.len()
        );
        let mut imports = 0;
        let mut exports = Vec::new();
        for payload in Parser::new(0).parse_all(&out.module) {
            match payload.unwrap() {
                Payload::ImportSection(r) => imports += r.count(),
                Payload::ExportSection(r) => {
                    for e in r {
                        exports.push(e.unwrap().name.to_owned());
                    }
                }
                _ => {}
            }
        }
        assert_eq!(imports, 0, "{name} has imports");
        for required in abi::REQUIRED_EXPORTS {
            assert!(
                exports.iter().any(|e| e == required),
                "{name} lacks export {required}"
            );
        }
        wasmparser::validate(&out.module).unwrap();
    }
}

#[test]
fn linking_refuses_a_guest_without_the_rules_marker() {
    let wat_free_module = b"\0asm\x01\0\0\0\x05\x03\x01\x00\x01"; // one memory, no data
    let err = flagforge_compiler::link::link(wat_free_module, b"rules").unwrap_err();
    assert!(err.to_string().contains("marker"), "{err}");
}
