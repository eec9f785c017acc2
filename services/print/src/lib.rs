//! wix-print: the edge to paper. Receives order versions over gRPC (idempotent on order id +
//! version), keeps a persistent print queue in SQLite, renders receipts to ESC/POS and prints
//! them one at a time, marking a job printed only when the printer confirms.
#![forbid(unsafe_code)]

pub mod changes;
pub mod config;
pub mod dispatcher;
pub mod printer;
pub mod receipt;
pub mod service;
pub mod store;

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use wixprint_shared::proto::print::print_admin_server::PrintAdminServer;
use wixprint_shared::proto::print::print_service_server::PrintServiceServer;

pub use config::Config;

/// Runs wix-print until `shutdown` is cancelled, then drains within the grace period.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let started_ms = wixprint_shared::time::now_ms();
    let store = store::Store::open(&config.db_path)?;
    let interrupted = store.mark_interrupted_uncertain().await?;
    if interrupted > 0 {
        tracing::warn!(
            jobs = interrupted,
            "found jobs interrupted before the printer confirmed; they reprint with the KOPIE banner"
        );
    }
    let grpc = TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("binding the gRPC listener on {}", config.grpc_addr))?;
    let grpc_addr = grpc.local_addr()?;

    let wake = Arc::new(Notify::new());
    let monitor = printer::Monitor::new(&config.printer_name, &config.printer_url);
    let layout = Arc::new(receipt::Layout {
        width: config.width,
        code_page: config.code_page,
        time_zone: config.time_zone.clone(),
        restaurant_name: config.restaurant_name.clone(),
        allergy_words: config.allergy_words.clone(),
    });
    let policy = store::QueuePolicy {
        receipt_types: config.receipt_types.clone(),
        storno_types: config.storno_types.clone(),
        max_attempts: config.max_attempts,
        printer: config.printer_name.clone(),
        restaurant_app_id: config.restaurant_app_id.clone(),
        reprint_driver_when_paid: config.reprint_driver_when_paid,
    };

    let routes = tonic::service::Routes::new(PrintServiceServer::new(service::Printing {
        store: store.clone(),
        policy,
        wake: wake.clone(),
    }))
    .add_service(PrintAdminServer::new(service::Admin {
        store: store.clone(),
        monitor: monitor.clone(),
        layout: layout.clone(),
        started_ms,
    }));
    let (routes, health) = wixprint_shared::grpc::with_health_and_reflection(routes)?;
    health.set_serving::<PrintServiceServer<service::Printing>>().await;
    health.set_serving::<PrintAdminServer<service::Admin>>().await;

    let tracker = TaskTracker::new();
    // The gRPC server stops on its own token, after the dispatcher: a SubmitOrder arriving
    // during the drain is still committed (and printed after the restart).
    let grpc_stop = CancellationToken::new();
    let grpc_stop_rx = grpc_stop.clone();
    let server = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming_shutdown(TcpListenerStream::new(grpc), grpc_stop_rx.cancelled())
            .await
    });

    let dispatcher = dispatcher::Dispatcher {
        store: store.clone(),
        url: config.printer_url.clone(),
        monitor,
        layout,
        timeouts: printer::Timeouts {
            connect: config.connect_timeout,
            status: config.status_timeout,
            confirm: config.confirm_timeout,
            poll: config.offline_poll,
        },
        confirm_mode: config.confirm_mode,
        retry_backoff: config.retry_backoff,
        wake,
        grace: config.shutdown_grace,
    };
    tracker.spawn(dispatcher.run(shutdown.clone()));
    tracker.close();

    tracing::info!(%grpc_addr, printer = %config.printer_url, db = %config.db_path.display(), "wix-print ready");
    wixprint_shared::notify::ready(&format!("gRPC on {grpc_addr}, printer {}", config.printer_url));

    shutdown.cancelled().await;
    wixprint_shared::notify::stopping();
    if tokio::time::timeout(config.shutdown_grace + std::time::Duration::from_millis(500), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("drain did not finish in time; exiting anyway (the queue is on disk)");
    }
    grpc_stop.cancel();
    match tokio::time::timeout(std::time::Duration::from_millis(500), server).await {
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "gRPC server failed"),
        Ok(_) => {}
        Err(_) => tracing::warn!("gRPC server did not stop in time"),
    }
    tracing::info!("wix-print stopped");
    Ok(())
}
