//! Located diagnostics: every rule-file error carries file:line:col and says what was expected.

use std::fmt;

/// One error in a rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// File path as given.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// What is wrong and what was expected.
    pub message: String,
    /// The source line, for display.
    pub source_line: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.message
        )?;
        if let Some(line) = &self.source_line {
            let pad: String = line
                .chars()
                .take(self.col.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            write!(f, "\n    {line}\n    {pad}^")?;
        }
        Ok(())
    }
}

/// Why compilation failed.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The rule files have errors.
    #[error("{}", render(.0))]
    Rules(Vec<Diagnostic>),
    /// A file or directory could not be read.
    #[error("cannot read `{path}`: {message}")]
    Io {
        /// The path.
        path: String,
        /// The OS error.
        message: String,
    },
    /// The guest module could not be linked (a broken build, not a rule error).
    #[error(transparent)]
    Link(#[from] crate::link::LinkError),
    /// An audience build is not possible.
    #[error(transparent)]
    Audience(#[from] crate::audience::AudienceError),
}

impl CompileError {
    /// The located diagnostics, if this is a rule error.
    #[must_use]
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            CompileError::Rules(d) => d,
            _ => &[],
        }
    }
}

fn render(diags: &[Diagnostic]) -> String {
    let mut out = String::new();
    for (i, d) in diags.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&d.to_string());
    }
    out.push_str(&format!(
        "\n{} error{}",
        diags.len(),
        if diags.len() == 1 { "" } else { "s" }
    ));
    out
}
