//! wix-ingest: the edge to Wix. Receives order webhooks, verifies them, stores each new order
//! version with its outbox row in one SQLite transaction, answers Wix, and forwards the
//! versions to wix-print. Nothing downstream of this crate knows Wix JSON.
//!
//! It also watches the internet (`internet`), joins the connectivity bus with wix-print
//! (`wixprint_shared::bus`), and reacts to both (`reactions`); none of that is needed for an
//! order to reach the paper, it only makes recovery quicker and visible.
#![forbid(unsafe_code)]

pub mod admin;
pub mod alerting;
pub mod config;
pub mod health;
pub mod internet;
pub mod listener;
pub mod metrics;
pub mod outbox;
pub mod reactions;
pub mod store;
pub mod sync;
pub mod webhook;
pub mod wix;
pub mod wix_api;

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use wixprint_shared::proto::ingest::ingest_admin_server::IngestAdminServer;

pub use config::Config;

/// The circuit breaker of the Wix API calls (registered when the order sync is on).
pub const WIX_API_BREAKER: &str = "wix-api";

/// Runs wix-ingest until `shutdown` is cancelled, then drains within the grace period.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let started_ms = wixprint_shared::time::now_ms();
    let telemetry =
        wixprint_shared::telemetry::Telemetry::start("wix-ingest", config.metrics_addr, shutdown.clone()).await?;
    let store = store::Store::open(&config.db_path, config.db_busy_timeout)?;
    let verifier = Arc::new(wix::WebhookVerifier::from_pem(&config.webhook_public_key_pem)?);
    let wake = Arc::new(Notify::new());

    let http = listener::bind(config.http_addr)
        .with_context(|| format!("binding the webhook listener on {}", config.http_addr))?;
    let grpc = TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("binding the admin gRPC listener on {}", config.grpc_addr))?;
    let http_addr = http.local_addr()?;
    let grpc_addr = grpc.local_addr()?;
    // Never waits for wix-print; a bind error (port taken, bad address) stops the start-up.
    let bus = wixprint_shared::bus::Bus::start(config.bus.clone(), shutdown.clone())
        .await
        .with_context(|| format!("starting the connectivity bus (INGEST_PUB_ADDR={})", config.bus.pub_addr))?;

    let tracker = TaskTracker::new();
    // Self-healing: the Wix API breaker and the recorded history.
    let healing = wixprint_shared::healing::Healing::new(store.db());
    healing.spawn_recorder(shutdown.clone());
    // E-mail alerts: the durable alert outbox in this database and its delivery loop (its own
    // task, through the `smtp` breaker). `alerts` is what the monitors raise through.
    let alert_service =
        wixprint_shared::alerts::AlertService::start(config.alerts.clone(), &healing, "wix-ingest", shutdown.clone())?;
    let alerts = alert_service.alerts.clone();
    let healing = healing.with_alerts(alerts.clone());
    let health = wixprint_shared::health::Health::new(&config.health, healing.clone());
    let (internet_monitor, internet) = internet::InternetMonitor::new(config.internet.clone(), store.clone());
    tracker.spawn(internet_monitor.run(shutdown.clone()));
    let outbox_flush = Arc::new(Notify::new());
    metrics::register(&telemetry, store.clone(), internet.watch(), shutdown.clone());
    wixprint_shared::telemetry::register_common(
        &telemetry,
        healing.breakers.clone(),
        health.clone(),
        "wix-print",
        &bus,
    );
    let app = webhook::router(webhook::WebhookState {
        verifier,
        store: store.clone(),
        outbox_wake: wake.clone(),
        max_body_bytes: config.max_body_bytes,
        body_timeout: config.listener.body_timeout,
        body_budget: Arc::new(tokio::sync::Semaphore::new(config.listener.body_budget_bytes)),
        reorder_window_ms: config.reorder_window_ms,
        instance_ids: Arc::new(config.wix_instance_ids.clone()),
        refusal_log: Arc::new(wixprint_shared::ratelimit::LogLimiter::per_minute(
            webhook::REFUSAL_LOG_LINES_PER_MINUTE,
        )),
    });
    tracing::info!(limits = ?config.listener, "webhook listener limits");
    tracker.spawn(listener::serve(http, app, config.listener.clone(), shutdown.clone()));

    let sync_handle = match &config.sync {
        None => sync::SyncHandle::off("order sync is off: set WIX_API_KEY_FILE and WIX_SITE_ID to turn it on"),
        Some(sc) => {
            let api =
                wix_api::WixApi::new(&sc.base_url, sc.api_key.clone(), &sc.site_id, std::time::Duration::from_secs(30))
                    .map_err(|e| anyhow::anyhow!("building the Wix API client: {e}"))?;
            let breaker = healing.breakers.add(WIX_API_BREAKER, config.wix_breaker);
            let (order_sync, handle) = sync::OrderSync::new(
                api,
                store.clone(),
                wake.clone(),
                sc.settings.clone(),
                breaker,
                Some(internet.watch()),
            );
            tracker.spawn(order_sync.run(shutdown.clone()));
            handle
        }
    };
    if config.sync.is_none() {
        tracing::info!("order sync is off (no WIX_API_KEY_FILE / WIX_SITE_ID); webhooks only");
    }
    let publisher = bus.clone();
    tracker.spawn(
        reactions::Reactions {
            internet: internet.watch(),
            publish: Box::new(move |components| publisher.publish(components)),
            breakers: healing.breakers.clone(),
            peer_arrived: bus.peer_arrived(),
            sync: sync_handle.clone(),
            outbox_flush: outbox_flush.clone(),
        }
        .run(shutdown.clone()),
    );
    tracker.spawn(
        alerting::AlertWatch {
            store: store.clone(),
            sync: sync_handle.clone(),
            internet: internet.watch(),
            healing: healing.clone(),
            bus: bus.clone(),
            health: health.clone(),
            thresholds: config.alert_thresholds.clone(),
            time_zone: config.time_zone.clone(),
            watcher: wixprint_shared::alerts::Watcher::new(alerts.clone()),
        }
        .run(shutdown.clone()),
    );
    let admin_auth = wixprint_shared::auth::ServerAuth::new("IngestAdmin", config.admin_token.clone());
    let routes = tonic::service::Routes::new(IngestAdminServer::with_interceptor(
        admin::Admin {
            store: store.clone(),
            print_service_url: config.print_service_url.clone(),
            started_ms,
            sync: sync_handle,
            outbox_wake: wake.clone(),
            time_zone: config.time_zone.clone(),
            internet,
            peer: bus.watch_peer(),
            healing: healing.clone(),
            health: health.clone(),
            alerts: alert_service.clone(),
        },
        admin_auth,
    ));
    let (routes, reporter) = wixprint_shared::grpc::with_health_and_reflection(routes)?;
    reporter.set_serving::<IngestAdminServer<admin::Admin>>().await;
    {
        use tonic::server::NamedService;
        let names = [<IngestAdminServer<admin::Admin> as NamedService>::NAME];
        wixprint_shared::grpc::not_serving_on_fatal(reporter.clone(), &names);
        // NOT_SERVING while a check is critical; the watchdog; controlled restarts.
        health.spawn(
            health::IngestHooks {
                store: store.clone(),
                retention: config.retention,
                outbox_backlog: config.outbox_backlog,
                outbox_age: config.outbox_age,
            },
            reporter.clone(),
            &names,
            shutdown.clone(),
        );
    }
    let grpc_shutdown = shutdown.clone();
    tracker.spawn(async move {
        let served = tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming_shutdown(wixprint_shared::grpc::incoming(grpc), grpc_shutdown.cancelled())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "admin gRPC server failed");
        }
    });

    let forwarder = outbox::Forwarder {
        store: store.clone(),
        client: outbox::Forwarder::client(
            &config.print_service_url,
            config.outbox_rpc_timeout,
            config.submit_token.as_ref(),
        )?,
        wake,
        flush: outbox_flush,
        backoff: config.outbox_backoff,
        dead_after: config.outbox_dead_after,
        batch: 64,
        reorder_window: std::time::Duration::from_millis(u64::try_from(config.reorder_window_ms).unwrap_or(0)),
    };
    tracker.spawn(forwarder.run(shutdown.clone()));
    tracker.spawn(wixprint_shared::retention::run(shutdown.clone(), store.clone(), config.retention));
    // The bus stops on the shutdown token; the drain waits until its PUB port is released.
    let bus_closed = bus.clone();
    tracker.spawn(async move { bus_closed.closed().await });
    tracker.close();

    tracing::info!(%http_addr, %grpc_addr, bus = %bus.local_addr(), print_bus = %config.bus.peer_addr,
        print_service = %config.print_service_url, db = %config.db_path.display(), "wix-ingest ready");
    drop(bus);
    wixprint_shared::notify::ready(&format!("webhooks on {http_addr}, admin on {grpc_addr}"));

    shutdown.cancelled().await;
    wixprint_shared::notify::stopping();
    if tokio::time::timeout(config.shutdown_grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            grace_ms = config.shutdown_grace.as_millis() as u64,
            "drain did not finish in time; exiting anyway (every acknowledged order is already on disk)"
        );
    }
    telemetry.shutdown().await;
    tracing::info!("wix-ingest stopped");
    Ok(())
}
