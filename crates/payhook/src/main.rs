//! The `payhook` command: `serve`, `migrate`, `listen`, `demo` and `bench`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use payhook::app;
use payhook::cluster_clock::{self, NodeClock};
use payhook::config::{Config, LogFormat, ServeArgs};
use payhook_core::clock::SystemClock;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// jemalloc instead of the system allocator: on the delivery path glibc's malloc and free
/// were a fifth of the server's CPU, and jemalloc cut the server's CPU per callback by about
/// a sixth with the same peak RSS (mimalloc cut less and doubled the RSS); BENCHMARKS.md lists
/// it among the levers kept.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "payhook", version, about = "Durable payment-callback delivery")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API and the dispatcher.
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    Migrate(ServeArgs),
    /// Run a local receiver that verifies, prints and answers the callbacks of one dialect.
    Listen(payhook::listen::ListenArgs),
    /// Start payhook and a receiver, and walk one operation per dialect to success.
    Demo(payhook::demo::DemoArgs),
    /// Measure throughput, latency, memory and claim time on this machine.
    Bench(payhook::bench::BenchArgs),
    /// Copy the SQLite database a node is using, consistently, with its key file.
    Backup(payhook::backup::BackupArgs),
    /// Verify a copy: integrity, schema version, and that the key opens its secrets.
    Check(payhook::backup::CheckArgs),
}

fn init_tracing(format: LogFormat) {
    init_tracing_with(format, "info");
}

/// Logs to stderr, at `PAYHOOK_LOG`'s level, else `default_level`; in colour only when stderr
/// is a terminal, so log files and collectors get plain text.
fn init_tracing_with(format: LogFormat, default_level: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("PAYHOOK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Cancels `token` on ctrl-c or SIGTERM.
fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down: draining attempts in flight");
        token.cancel();
    });
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::resolve(&args)?;
    init_tracing(config.log_format);
    let clock = Arc::new(NodeClock::new(SystemClock));
    let services = app::build(&config, clock.clone()).await?;
    let shutdown = CancellationToken::new();
    cluster_clock::follow_database(services.store.clone(), clock, shutdown.clone())
        .await
        .context("reading the database's clock")?;
    if let Some(path) = &services.generated_key_file {
        println!(
            "Generated the master key sealing merchants' secrets: {} (mode 0600; back it up with \
             the database)",
            path.display()
        );
    }
    if let Some(token) = &services.generated_admin_token {
        println!("Generated admin token (shown once, keep it): {token}");
    }
    // A dispatch-only node leaves the configured address to the API nodes on this host: it
    // binds an ephemeral loopback port that `app::serve` closes at once.
    let listen = if config.api { config.listen.as_str() } else { "127.0.0.1:0" };
    let listener =
        tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    if config.api {
        tracing::info!(%addr, node = %config.node_id, "payhook listening");
        println!("payhook listening on http://{addr}");
    } else {
        tracing::info!(node = %config.node_id, "payhook dispatching, API off");
        println!("payhook dispatching (API off) as node {}", config.node_id);
    }
    cancel_on_signal(shutdown.clone());
    let run = app::serve(listener, services, &config, shutdown.clone());
    tokio::pin!(run);
    tokio::select! {
        result = &mut run => return result,
        _ = shutdown.cancelled() => {}
    }
    // Attempts in flight get the request timeout plus a margin to finish; anything cut off
    // keeps its lease and is retried after it expires.
    let drain = config.request_timeout + Duration::from_secs(5);
    match tokio::time::timeout(drain, run).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!("drain deadline passed; leases of unfinished attempts will expire");
            Ok(())
        }
    }
}

async fn migrate(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::resolve(&args)?;
    init_tracing(config.log_format);
    let opened = app::open_store(&config.database, config.master_key.as_deref()).await?;
    if let Some(path) = &opened.generated_key_file {
        println!("Generated the master key sealing merchants' secrets: {}", path.display());
    }
    println!("migrations applied to {}", payhook::config::redact_url(&config.database));
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(args) => serve(args).await,
        Command::Migrate(args) => migrate(args).await,
        Command::Listen(args) => payhook::listen::run(args).await,
        Command::Demo(args) => {
            init_tracing_with(LogFormat::Text, "warn");
            payhook::demo::run(args).await
        }
        Command::Bench(args) => payhook::bench::run(args).await,
        Command::Backup(args) => payhook::backup::backup(args).await,
        Command::Check(args) => payhook::backup::check(args).await,
    }
}
