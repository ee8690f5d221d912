//! Deterministic mutation testing (the stable-toolchain stand-in for cargo-fuzz, which needs
//! nightly): mutated rule files must give a diagnostic or a module, never a panic.

use flagforge_compiler::{compile_ir, SourceFile};

/// xorshift64*: a fixed seed keeps every run identical, so a failure is reproducible.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const TOKENS: &[&str] = &[
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "'",
    "\"",
    ":",
    "-",
    " ",
    "\n",
    "\t",
    "&&",
    "||",
    "!",
    "==",
    "in",
    "segment(\"",
    "has(",
    ".matches(\"",
    "[a-",
    "\\",
    "é",
    "🦀",
    "\u{0}",
    "null",
    "~",
    "rollout:",
    "serve:",
    "when:",
    "key:",
    "&anchor",
    "*anchor",
    "!!tag",
    "---",
    "9999999999999999999999",
];

fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(chars.len() + 1);
        match rng.below(4) {
            0 if !chars.is_empty() => {
                let end = (at + rng.below(8)).min(chars.len());
                chars.drain(at.min(end)..end);
            }
            1 => {
                let tok = TOKENS[rng.below(TOKENS.len())];
                for (i, c) in tok.chars().enumerate() {
                    chars.insert((at + i).min(chars.len()), c);
                }
            }
            2 if !chars.is_empty() => {
                let i = at.min(chars.len() - 1);
                chars[i] = char::from_u32(rng.below(0x80) as u32).unwrap_or('x');
            }
            _ => {
                let from = rng.below(chars.len().max(1));
                let piece: Vec<char> = chars
                    .iter()
                    .skip(from)
                    .take(rng.below(20))
                    .copied()
                    .collect();
                for (i, c) in piece.into_iter().enumerate() {
                    chars.insert((at + i).min(chars.len()), c);
                }
            }
        }
    }
    chars.into_iter().collect()
}

#[test]
fn mutated_rule_files_never_crash_the_compiler() {
    let dir = rules_examples::dir("checkout");
    let originals: Vec<SourceFile> = flagforge_compiler::rule_files(&dir)
        .unwrap()
        .into_iter()
        .map(|p| SourceFile {
            path: p.display().to_string(),
            text: std::fs::read_to_string(&p).unwrap(),
        })
        .collect();
    let mut rng = Rng::new(0x5eed_f1a9_f04e_0001);
    let mut outcomes = [0usize; 2];
    for _ in 0..1500 {
        let mut sources = originals.clone();
        let i = rng.below(sources.len());
        sources[i].text = mutate(&mut rng, &sources[i].text);
        match compile_ir(&sources) {
            Ok(_) => outcomes[0] += 1,
            Err(e) => {
                for d in e.diagnostics() {
                    assert!(d.line >= 1 && d.col >= 1, "{d}");
                }
                outcomes[1] += 1;
            }
        }
    }
    // Both outcomes must occur, or the mutations are not exercising anything.
    assert!(outcomes[0] > 0 && outcomes[1] > 0, "{outcomes:?}");
}
