//! Rule sources: any text given to the compiler yields a module or located errors, never a
//! panic (cel-parser's panics on malformed literals are contained by the compiler).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    // libfuzzer-sys aborts on every panic from its hook, even one the compiler catches (it
    // contains cel-parser's panics on malformed literals with `catch_unwind`). A silent hook
    // lets those be contained as in production; a panic that escapes the compiler still
    // reaches libfuzzer-sys's own `catch_unwind`, which aborts: a crash.
    init: std::panic::set_hook(Box::new(|_| {})),
    |data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let source = flagforge_compiler::SourceFile {
        path: "fuzz.yaml".into(),
        text: text.to_owned(),
    };
    if let Err(e) = flagforge_compiler::compile_ir(&[source]) {
        // Rendering the located errors must not panic either.
        let _ = e.to_string();
    }
    }
);
