//! The `gatehouse` command. The binary crate (this file and [`cli`]) is the only place
//! that prints to the terminal and uses `anyhow`.
//!
//! This file holds what must be set up for the whole process before any command runs
//! (the allocator and its options, the SIGPIPE disposition) and hands the parsed command
//! line to its subcommand in [`cli`], one module per subcommand.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // the shell reads the clock and files; the core may not

mod cli;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

/// The proxy allocates and frees small buffers for every request on every worker;
/// mimalloc's per-thread free lists cost a fraction of glibc's (measured with perf under
/// the anchor benchmark: malloc/free were 16 % of a blocked request's time).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` in mimalloc.h's `mi_option_e` (v2).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// On Linux mimalloc by default commits its 1 GiB arenas eagerly and later only resets
/// (not decommits) freed pages, which the kernel goes on counting as resident: with the
/// 1M-domain index loaded that was 31 MiB of anonymous memory against 15 MiB with the
/// arena committed on demand, and no difference in requests per second under the anchor
/// benchmark. The first arena is reserved by the first allocation, which the Rust runtime
/// makes before `main`, so the option is set from the ELF constructors, which run first.
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static MIMALLOC_OPTIONS: extern "C" fn() = {
    extern "C" fn commit_arenas_on_demand() {
        // SAFETY: mi_option_set only stores a value in mimalloc's option table; it is
        // sound before mimalloc's own initialisation, which keeps options already set.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) }
    }
    commit_arenas_on_demand
};

/// After a load of policy and lists: return the list build's freed scratch memory (about
/// 30 MiB for a million domains) to the system now, not at the allocator's next purge.
fn release_freed_memory() {
    // SAFETY: mi_collect has no preconditions; it frees only memory no longer in use.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run(_)) {
        // A report piped into `head` should end quietly when `head` stops reading, as
        // other command-line tools do, not panic on a broken pipe. Not for `run`: there
        // a client closing its socket must be an error to handle, never a signal.
        // SAFETY: restoring a signal's default disposition before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let result = match cli.command {
        Command::Run(args) => cli::run::run(&args, release_freed_memory),
        Command::User { command } => cli::user::run(command),
        Command::Console { command } => cli::console::run(command),
        Command::Log { command } => cli::log::run(command),
        Command::Grant { command } => cli::grant::run(command),
        Command::Report(args) => cli::report::run(&args),
        Command::Admin { command } => cli::admin::run(command),
        Command::Ca { command } => cli::ca::run(command),
        Command::Alerts { command } => cli::alerts::run(command),
        Command::Check(args) => cli::check::check(&args),
        Command::Classify(args) => cli::classify::run(&args),
        Command::Lists { command } => cli::lists::lists(command),
        Command::Identity { command } => cli::identity::run(command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gatehouse: {e:#}");
            ExitCode::FAILURE
        }
    }
}
