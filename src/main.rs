//! The `supernet` binary: parses the command line and runs the chosen role.

use clap::Parser;

fn main() {
    let cli = supernet::cli::Cli::parse();
    if let Err(e) = supernet::cli::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
