//! wasm-host integration tests: hostile modules, hostile inputs, limits, concurrency.

mod compiled_cache;
mod guests;
mod hostile_input;
mod hostile_modules;
mod limits;
mod mutation;
mod reads;
