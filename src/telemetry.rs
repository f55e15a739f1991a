//! Logging for the long-running commands: human-readable lines on stderr, filtered by
//! `RUST_LOG` (default `info`), so stdout stays free for what a command prints.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A second call (tests that run several commands in one process) keeps the first.
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).with_ansi(std::io::stderr().is_terminal()).try_init();
}
