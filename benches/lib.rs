//! Benchmarks live in `benches/` (run `cargo bench -p flagforge-benches`); this crate has no
//! library code.
