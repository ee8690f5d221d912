//! Every file in `corpus/invalid/` starts with `# expect: LINE:COL: message`; compiling it
//! must fail with a diagnostic at exactly that place containing that message.

use std::path::PathBuf;

fn invalid_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../corpus/invalid")
}

#[test]
fn every_invalid_rule_file_fails_with_its_located_message() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(invalid_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 25,
        "corpus/invalid looks incomplete: {}",
        files.len()
    );
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let header = text.lines().next().unwrap();
        let spec = header
            .strip_prefix("# expect: ")
            .expect("header `# expect: L:C: message`");
        let (at, message) = spec.split_once(": ").unwrap();
        let (line, col) = at.split_once(':').unwrap();
        let (line, col): (usize, usize) = (line.parse().unwrap(), col.parse().unwrap());
        match flagforge_compiler::compile_path(file) {
            Ok(_) => failures.push(format!(
                "{}: compiled, expected `{message}`",
                file.display()
            )),
            Err(e) => {
                let hit = e
                    .diagnostics()
                    .iter()
                    .any(|d| d.line == line && d.col == col && d.message.contains(message));
                if !hit {
                    failures.push(format!(
                        "{}: expected {line}:{col}: {message}\n got: {e}",
                        file.display()
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn a_diagnostic_shows_the_source_line_and_a_caret() {
    let file = invalid_dir().join("unknown_attribute.yaml");
    let err = flagforge_compiler::compile_path(&file)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown_attribute.yaml:14:34: unknown attribute `tierr`"),
        "{err}"
    );
    let lines: Vec<&str> = err.lines().collect();
    let caret = lines[2];
    assert_eq!(caret.trim(), "^");
    // The caret sits under the `t` of `tierr` (4 spaces of indent in the rendering).
    assert_eq!(&lines[1][caret.len() - 1..caret.len() + 4], "tierr");
}

#[test]
fn errors_in_several_flags_are_all_reported() {
    let src = flagforge_compiler::SourceFile {
        path: "many.yaml".into(),
        text: "ruleset: r\ncontext: { a: string }\nflags:\n  - { key: A, kind: nope, owner: x, default: on }\n  - { key: B, kind: ops, owner: x, default: maybe }\n".into(),
    };
    let err = flagforge_compiler::compile_ir(&[src]).unwrap_err();
    let d = err.diagnostics();
    assert!(
        d.iter()
            .any(|d| d.line == 4 && d.message.contains("unknown kind `nope`")),
        "{err}"
    );
    assert!(
        d.iter()
            .any(|d| d.line == 5 && d.message.contains("default `maybe`")),
        "{err}"
    );
}
