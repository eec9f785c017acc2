//! The common `main` of both binaries: arguments, config (exit 78 on error), the runtime,
//! traces and logging, the signal-driven shutdown token, and the exit code.

use std::future::Future;

use tokio_util::sync::CancellationToken;

use crate::config::{self, Args, ConfigError, EXIT_CONFIG, Key, Source};

/// Parses the command line and config, then runs `run` until SIGTERM/SIGINT.
pub fn main<C, F, Fut>(
    binary: &str,
    about: &str,
    keys: &'static [Key],
    parse: F,
    run: impl FnOnce(C, CancellationToken) -> Fut,
) where
    F: FnOnce(&Source) -> Result<C, ConfigError>,
    Fut: Future<Output = anyhow::Result<()>>,
{
    crate::alerts::delivery::install_crypto_provider();
    let exit_config = |e: ConfigError| -> ! {
        eprintln!("{binary}: configuration error: {e}");
        std::process::exit(EXIT_CONFIG);
    };
    let args = Args::parse(std::env::args()).unwrap_or_else(|e| exit_config(e));
    if args.help {
        print!("{}", config::help(binary, about, keys));
        return;
    }
    if args.version {
        println!("{binary} {}", crate::VERSION);
        return;
    }
    let cfg = Source::load(keys, args.config.as_deref()).and_then(|s| parse(&s)).unwrap_or_else(|e| exit_config(e));
    // The OTLP protocol and the trace sampler are configuration too (an unknown sampler is not
    // silently "trace all").
    if let Err(e) = crate::telemetry::check_env() {
        eprintln!("{binary}: configuration error: {e}");
        std::process::exit(EXIT_CONFIG);
    }
    if args.check_only {
        println!("configuration OK");
        return;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{binary}: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    // Traces before logging (the subscriber gets their layer), inside the runtime (the OTLP
    // exporter's channel needs it). Nothing logs through `tracing` before this point.
    let tracer = {
        let _rt = runtime.enter();
        crate::telemetry::start_traces(binary)
    };
    match tracer {
        Ok(tracer) => {
            crate::logging::init(tracer);
            if let Some(sampler) = crate::traces::sampler() {
                tracing::info!(%sampler, "traces are on (the sampler decides before a span is built)");
            }
        }
        Err(e) => {
            // The OTEL_* variables were wrong (an endpoint, headers, the sampler).
            crate::logging::init(None);
            eprintln!("{binary}: {e:#}");
            std::process::exit(crate::config::EXIT_CONFIG);
        }
    }
    crate::fatal::install_panic_hook();
    let result = runtime.block_on(async {
        let shutdown = crate::shutdown::on_signal();
        // A fatal condition drains like SIGTERM, but never for longer than FATAL_DRAIN: a
        // service whose database or writer thread is gone may not manage to drain at all.
        let drain = shutdown.clone();
        tokio::spawn(async move {
            let fatal = crate::fatal::wait().await;
            // Health already says NOT_SERVING; let monitors see it before the listeners close.
            tokio::time::sleep(FATAL_REPORT).await;
            drain.cancel();
            tokio::time::sleep(FATAL_DRAIN).await;
            eprintln!("{}", fatal.reason);
            std::process::exit(fatal.code);
        });
        run(cfg, shutdown).await
    });
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    if let Err(e) = result {
        tracing::error!(error = format!("{e:#}"), "{binary} failed");
        eprintln!("{binary}: {e:#}");
        if let Some(path) = crate::db::corrupt_database(&e) {
            eprintln!(
                "{binary}: the database {} is damaged. Stop the service, move the file (and its -wal and -shm \
                 files) aside for analysis, and start again: an empty database is created. wix-ingest's \
                 outbox and order sync deliver again what wix-print misses; Wix redelivers unacknowledged webhooks.",
                path
            );
            std::process::exit(crate::fatal::EXIT_CORRUPT);
        }
        std::process::exit(crate::fatal::current().map_or(1, |f| f.code));
    }
    if let Some(f) = crate::fatal::current() {
        eprintln!("{binary}: {}", f.reason);
        std::process::exit(f.code);
    }
}

/// How long a service reports NOT_SERVING after a fatal condition before it drains.
const FATAL_REPORT: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a service drains after a fatal condition before it exits anyway.
const FATAL_DRAIN: std::time::Duration = std::time::Duration::from_secs(3);
