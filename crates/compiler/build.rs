//! Builds the generic guest module (evaluator-core for wasm32) that `flagforge build` links
//! rules into, and shrinks it with binaryen's `wasm-opt -Oz`.
//!
//! The guest is built by a nested `cargo build` into its own target directory, with paths
//! remapped so the bytes do not depend on where the checkout or the cargo home lives: the
//! same sources give the same module on every machine with the same toolchain.
#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "a build script reports failure by panicking, with the message"
)]

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .and_then(Path::parent)
        .expect("workspace root")
        .to_path_buf();
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    for p in [
        "crates/guest",
        "crates/evaluator-core",
        "crates/model",
        "crates/protocol",
        "Cargo.lock",
        "Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    println!("cargo:rerun-if-env-changed=FLAGFORGE_WASM_OPT");

    let target_dir = root.join("target").join("guest-build");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let cargo_home = env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env::var("HOME").unwrap_or_default()).join(".cargo"));
    let rustflags = [
        format!("--remap-path-prefix={}=/flagforge", root.display()),
        format!("--remap-path-prefix={}=/cargo", cargo_home.display()),
    ]
    .join("\x1f");

    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--locked",
            "-p",
            "flagforge-guest",
            "--target",
            "wasm32-unknown-unknown",
            "--profile",
            "guest",
            "--target-dir",
        ])
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags);
    // The outer build's settings must not leak into the guest build (clippy's wrapper,
    // host rustflags, a forced target).
    for var in [
        "RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .expect("failed to run cargo for the guest module");
    if !status.success() {
        panic!(
            "building the guest module failed. Is the wasm32 target installed? \
             Run `scripts/setup.sh` (it runs `rustup target add wasm32-unknown-unknown`)."
        );
    }
    let raw = target_dir
        .join("wasm32-unknown-unknown")
        .join("guest")
        .join("flagforge_guest.wasm");
    let out = out_dir.join("guest.wasm");
    let wasm_opt = env::var("FLAGFORGE_WASM_OPT").unwrap_or_else(|_| "wasm-opt".into());
    let status = Command::new(&wasm_opt)
        .arg("-Oz")
        .args([
            "--enable-bulk-memory",
            "--enable-sign-ext",
            "--enable-mutable-globals",
            "--enable-nontrapping-float-to-int",
            "--enable-multivalue",
            "--enable-reference-types",
            "--strip-debug",
            "--strip-producers",
        ])
        .arg(&raw)
        .arg("-o")
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("`{wasm_opt} -Oz` failed on the guest module ({s})"),
        Err(e) => panic!(
            "`{wasm_opt}` (binaryen) is required to build the guest module: {e}. \
             Run `scripts/setup.sh` (it installs the `binaryen` package)."
        ),
    }
}
