//! The compiled-module cache: a restart loads native code from disk, and a stale, foreign or
//! corrupt file is refused with its reason, recompiled and rewritten, never trusted.

use std::path::Path;
use std::sync::atomic::Ordering;

use flagforge_protocol::{Context, Value};
use wasm_host::{CacheReject, CompiledFrom, Host, Limits, LoadedModule};

use crate::guests::{self, Guest};

fn host(dir: &Path) -> Host {
    Host::new(Limits::default())
        .unwrap()
        .with_compiled_cache(dir)
        .unwrap()
}

fn answers(m: &LoadedModule) -> Vec<u8> {
    let mut ctx = Context::new();
    ctx.insert("market".into(), Value::from("FR"));
    ctx.insert("userId".into(), Value::from("u-42"));
    let encoded = flagforge_protocol::value::encode_context(&ctx).unwrap();
    flagforge_protocol::encode(&m.evaluate_all_canonical(&encoded, false)).unwrap()
}

/// Loads `bytes` with a fresh host (a restart) and says where its code came from.
fn restart(dir: &Path, bytes: &[u8]) -> (CompiledFrom, Vec<u8>) {
    let m = host(dir).load(bytes).unwrap();
    (m.compiled_from().clone(), answers(&m))
}

/// The cache file of `bytes`: named by the sha256 of the code compiled (for a module split
/// into code and data, its template's; see `LoadedModule::cache_key`).
fn cache_file(dir: &Path, bytes: &[u8]) -> std::path::PathBuf {
    let key = Host::new(Limits::default())
        .unwrap()
        .load(bytes)
        .unwrap()
        .cache_key();
    host(dir).compiled_cache().unwrap().path_for(&key)
}

#[test]
fn a_restart_loads_the_compiled_module_from_the_cache_with_the_same_answers() {
    let d = tempfile::tempdir().unwrap();
    let bytes = guests::checkout();
    let (from, first) = restart(d.path(), &bytes);
    assert_eq!(from, CompiledFrom::Compiled);
    assert!(cache_file(d.path(), &bytes).is_file());
    let h = host(d.path());
    let m = h.load(&bytes).unwrap();
    assert_eq!(m.compiled_from(), &CompiledFrom::Cache);
    assert_eq!(answers(&m), first);
    let stats = h.compiled_cache().unwrap().stats();
    assert_eq!(stats.hits.load(Ordering::Relaxed), 1);
    assert_eq!(stats.misses.load(Ordering::Relaxed), 0);
}

#[test]
fn a_host_without_a_cache_compiles_and_writes_nothing() {
    let m = Host::new(Limits::default())
        .unwrap()
        .load(&guests::checkout())
        .unwrap();
    assert_eq!(m.compiled_from(), &CompiledFrom::Compiled);
}

/// Each way a cache file can be wrong, made from the real file, and the reason it must get.
#[test]
fn stale_foreign_and_corrupt_cache_files_are_recompiled_and_rewritten() {
    let bytes = guests::checkout();
    let other = guests::build(Guest::default());
    let d = tempfile::tempdir().unwrap();
    let (_, expected) = restart(d.path(), &bytes);
    let good = std::fs::read(cache_file(d.path(), &bytes)).unwrap();
    restart(d.path(), &other);
    let other_file = std::fs::read(cache_file(d.path(), &other)).unwrap();

    let flip = |at: usize| {
        let mut f = good.clone();
        f[at] ^= 0x01;
        f
    };
    let cases: Vec<(&str, Vec<u8>, CacheReject)> = vec![
        ("empty file", vec![], CacheReject::BadHeader),
        (
            "not ours",
            b"\x7fELF and then some bytes".repeat(8),
            CacheReject::BadHeader,
        ),
        ("magic altered", flip(0), CacheReject::BadHeader),
        (
            "another module's file",
            other_file,
            CacheReject::OtherModule,
        ),
        (
            "another engine's file",
            flip(8 + 32),
            CacheReject::OtherEngine,
        ),
        (
            "artifact byte altered",
            flip(good.len() / 2),
            CacheReject::Corrupt,
        ),
        (
            "truncated",
            good[..good.len() - 100].to_vec(),
            CacheReject::Corrupt,
        ),
        ("checksum altered", flip(8 + 64), CacheReject::Corrupt),
    ];
    for (what, file, reason) in cases {
        std::fs::write(cache_file(d.path(), &bytes), &file).unwrap();
        let h = host(d.path());
        let m = h.load(&bytes).unwrap();
        assert_eq!(
            m.compiled_from(),
            &CompiledFrom::CacheRejected(reason),
            "{what}"
        );
        assert_eq!(answers(&m), expected, "{what}: answers after recompiling");
        assert_eq!(
            h.compiled_cache()
                .unwrap()
                .stats()
                .rejected
                .load(Ordering::Relaxed),
            1
        );
        // Rewritten: the next restart uses it.
        assert_eq!(
            restart(d.path(), &bytes),
            (CompiledFrom::Cache, expected.clone()),
            "{what}"
        );
    }
}

#[test]
fn a_hostile_module_is_refused_before_the_cache_is_consulted_or_written() {
    let d = tempfile::tempdir().unwrap();
    let h = host(d.path());
    let bytes = guests::build(Guest {
        extra: r#"(import "env" "clock" (func))"#,
        ..Guest::default()
    });
    assert!(h.load(&bytes).is_err());
    assert!(h.load(b"\0asm\x01\0\0\0garbage").is_err());
    let written: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
    assert!(
        written.is_empty(),
        "nothing cached for refused modules: {written:?}"
    );
}
