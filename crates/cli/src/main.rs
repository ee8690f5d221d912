//! The `flagforge` binary: argument parsing only; the work is in the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // The compiler contains cel-parser's panics on some malformed literals and reports them as
    // located errors; keep their default panic message off the user's terminal.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_parser = info
            .location()
            .is_some_and(|l| l.file().contains("cel-parser") || l.file().ends_with("cel.rs"));
        if !in_parser {
            default_hook(info);
        }
    }));
    // Warnings (rejected envelopes and snapshots) go to stderr; RUST_LOG overrides the level.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = flagforge_cli::Cli::parse();
    match flagforge_cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
