//! The `rdg` binary: parse arguments, run, map errors to exit codes.
//! Exit status: 0 success, 1 invalid definitions (`check`) or not found
//! (`query`), 2 any other error.

mod cli;

/// mimalloc: less fragmentation than glibc malloc under several worker
/// threads, so resident memory tracks live data.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
