//! `gatehouse run`: sets up the tracing log and the async runtime and runs the proxy
//! until it is told to stop.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::common::ConfigArg;

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Log format for the tracing log (level from RUST_LOG, default info).
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Threads that serve requests: 0 means one for each CPU this process may use
    /// (its CPU affinity). With 1, requests are served on the main thread by
    /// tokio's single-threaded scheduler.
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The async runtime for `run`. On one CPU (a small VM, or a proxy pinned to a core)
/// the single-threaded scheduler serves requests on the main thread: the multi-threaded
/// one would run a lone worker beside the main thread and pay for handing work between
/// them. Interleaved A/B on one pinned core, 5 runs of 5 s each: 26.8 against 31.5 µs of
/// CPU per allowed request, 13.6 against 14.7 per blocked one. Blocking work (list
/// loads, password checks) goes to tokio's blocking pool either way.
fn runtime(threads: usize) -> std::io::Result<(tokio::runtime::Runtime, usize)> {
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    Ok((builder.enable_all().build()?, threads))
}

/// `gatehouse run`: serves until told to stop. `after_load` runs after each load of the
/// policy and lists (the binary returns the build's freed memory to the system).
pub fn run(args: &RunArgs, after_load: fn()) -> Result<ExitCode> {
    let RunArgs {
        config,
        log_format: format,
        threads,
    } = args;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    match format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
    }
    // Kerberos: GSSAPI finds the proxy's keytab through KRB5_KTNAME, set here while
    // this is the only thread (see gatehouse::kerberos).
    if let Some(keytab) = gatehouse::kerberos::keytab_of(&config.config) {
        std::env::set_var("KRB5_KTNAME", format!("FILE:{}", keytab.display()));
    }
    let (runtime, threads) = runtime(*threads).context("starting the async runtime")?;
    tracing::info!(threads, "serving requests on {threads} thread(s)");
    let result = runtime.block_on(gatehouse::proxy::run(config.config.clone(), after_load));
    // Tunnels still open after the grace period are dropped with the runtime.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(gatehouse::proxy::RunError::Policy(errors)) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            bail!("the policy did not load; the proxy did not start")
        }
        Err(e) => Err(e.into()),
    }
}
