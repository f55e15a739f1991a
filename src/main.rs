//! The `supernet` binary: parses the command line and runs the chosen role.

use clap::Parser;

/// Streaming allocates a little for every token and bus message; mimalloc's thread-local
/// free lists cost a fraction of glibc malloc's there (see docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = supernet::cli::Cli::parse();
    if let Err(e) = supernet::cli::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
