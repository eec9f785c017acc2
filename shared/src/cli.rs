//! The common `main` of both binaries: arguments, config (exit 78 on error), logging, the
//! runtime, the signal-driven shutdown token, and the exit code.

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
    crate::logging::init();
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
    let result = runtime.block_on(async {
        let shutdown = crate::shutdown::on_signal();
        run(cfg, shutdown).await
    });
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    if let Err(e) = result {
        tracing::error!(error = format!("{e:#}"), "{binary} failed");
        eprintln!("{binary}: {e:#}");
        std::process::exit(1);
    }
}
