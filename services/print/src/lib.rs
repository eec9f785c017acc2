//! wix-print: the edge to paper. Receives order versions over gRPC (idempotent on order id +
//! version), keeps a persistent print queue in SQLite, renders receipts to ESC/POS and prints
//! them one at a time, marking a job printed only when the printer confirms.
#![forbid(unsafe_code)]

pub mod alerting;
pub mod changes;
pub mod config;
pub mod connectivity;
pub mod dispatcher;
pub mod glyphs;
pub mod health;
pub mod job;
pub mod metrics;
pub mod paper;
pub mod printer;
pub mod printers;
pub mod priority;
pub mod receipt;
pub mod recovery;
pub mod service;
pub mod store;

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use wixprint_shared::proto::print::print_admin_server::PrintAdminServer;
use wixprint_shared::proto::print::print_service_server::PrintServiceServer;

pub use config::Config;

/// Runs wix-print until `shutdown` is cancelled, then drains within the grace period.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let started_ms = wixprint_shared::time::now_ms();
    let telemetry =
        wixprint_shared::telemetry::Telemetry::start("wix-print", config.metrics_addr, shutdown.clone()).await?;
    let store = store::Store::open_with_horizon(&config.db_path, config.retry_backoff.max() * 2)?;
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

    // Self-healing: breakers (one per printer transport) and their recorded history.
    let healing = wixprint_shared::healing::Healing::new(store.db());
    healing.spawn_recorder(shutdown.clone());
    // E-mail alerts: the durable alert outbox in this database and its delivery loop (its own
    // task, through the `smtp` breaker). `alerts` is what the monitors raise through.
    let alert_service =
        wixprint_shared::alerts::AlertService::start(config.alerts.clone(), &healing, "wix-print", shutdown.clone())?;
    let alerts = alert_service.alerts.clone();
    let healing = healing.with_alerts(alerts.clone());

    let changes = tokio::sync::broadcast::Sender::new(256);
    let timeouts = printer::Timeouts {
        connect: config.connect_timeout,
        status: config.status_timeout,
        confirm: config.confirm_timeout,
        poll: config.offline_poll,
    };
    let printers = printers::Printers::new(
        config
            .printers
            .iter()
            .map(|p| printers::PrinterHandle {
                name: p.name.clone(),
                url: p.url.clone(),
                layout: Arc::new(layout_for(&config, p)),
                monitor: printer::Monitor::with_changes(&p.name, &p.url, config.status_debounce, changes.clone()),
                link: printer::Link::with_breaker(
                    &p.name,
                    &p.url,
                    timeouts,
                    config.confirm_mode.fixed(),
                    healing.breakers.add(format!("printer:{}", p.name), config.breaker),
                ),
                wake: Arc::new(Notify::new()),
                backup: p.backup.clone(),
                gate: printers::Gate::default(),
            })
            .collect(),
    );
    let policy = paper::QueuePolicy {
        receipt_types: config.receipt_types.clone(),
        storno_types: config.storno_types.clone(),
        max_attempts: config.max_attempts,
        routes: config.routes.clone(),
        default_printer: config.printers[0].name.clone(),
        copies: config.copies.clone(),
        priority: priority::Rules {
            allergy_words: config.allergy_words.clone(),
            high_total: config.high_priority_total.clone(),
        },
        restaurant_app_id: config.restaurant_app_id.clone(),
        reprint_driver_when_paid: config.reprint_driver_when_paid,
        late_window_ms: config.late_window.as_millis().min(i64::MAX as u128) as i64,
    };

    let tracker = TaskTracker::new();
    let health = wixprint_shared::health::Health::new(&config.health, healing.clone());
    tracker.spawn(wixprint_shared::retention::run(shutdown.clone(), store.clone(), config.retention));
    metrics::register(&telemetry, store.clone(), printers.clone(), shutdown.clone());
    // The bus never waits for wix-ingest; a PUB port that cannot be bound is a startup error.
    let bus = wixprint_shared::bus::Bus::start(config.bus.clone(), shutdown.clone())
        .await
        .with_context(|| format!("starting the connectivity bus on {}", config.bus.pub_addr))?;
    wixprint_shared::telemetry::register_common(
        &telemetry,
        healing.breakers.clone(),
        health.clone(),
        "wix-ingest",
        &bus,
    );
    tracker.spawn(connectivity::run(
        store.clone(),
        printers.clone(),
        bus.clone(),
        changes.subscribe(),
        config.connectivity_retention,
        healing.breakers.clone(),
        shutdown.clone(),
    ));
    tracker.spawn(
        recovery::RecoveryManager {
            store: store.clone(),
            printers: printers.clone(),
            timeouts,
            rate: config.recovery_rate,
        }
        .run(changes.subscribe(), shutdown.clone()),
    );
    // SubmitOrder and the admin service each want their own token (open without one, which
    // the config allows only on loopback); health and reflection are never guarded.
    use wixprint_shared::auth::ServerAuth;
    let routes = tonic::service::Routes::new(PrintServiceServer::with_interceptor(
        service::Printing { store: store.clone(), policy: policy.clone(), printers: printers.clone() },
        ServerAuth::new("PrintService", config.submit_token.clone()),
    ))
    .add_service(PrintAdminServer::with_interceptor(
        service::Admin {
            store: store.clone(),
            printers: printers.clone(),
            policy: policy.clone(),
            bus: bus.clone(),
            timeouts,
            started_ms,
            healing: healing.clone(),
            health: health.clone(),
            alerts: alert_service.clone(),
        },
        ServerAuth::new("PrintAdmin", config.admin_token.clone()),
    ));
    let (routes, reporter) = wixprint_shared::grpc::with_health_and_reflection(routes)?;
    reporter.set_serving::<PrintServiceServer<service::Printing>>().await;
    reporter.set_serving::<PrintAdminServer<service::Admin>>().await;
    {
        use tonic::server::NamedService;
        let names = [
            <PrintServiceServer<service::Printing> as NamedService>::NAME,
            <PrintAdminServer<service::Admin> as NamedService>::NAME,
        ];
        wixprint_shared::grpc::not_serving_on_fatal(reporter.clone(), &names);
        // NOT_SERVING while a check is critical; the watchdog; controlled restarts.
        health.spawn(
            health::PrintHooks {
                store: store.clone(),
                printers: printers.clone(),
                retention: config.retention,
                queue_age: config.queue_age,
                printer_stuck: config.printer_stuck,
            },
            reporter.clone(),
            &names,
            shutdown.clone(),
        );
    }

    tracker.spawn(
        alerting::AlertWatch {
            store: store.clone(),
            printers: printers.clone(),
            healing: healing.clone(),
            bus: bus.clone(),
            health: health.clone(),
            thresholds: config.alert_thresholds,
            watcher: wixprint_shared::alerts::Watcher::new(alerts.clone()),
        }
        .run(shutdown.clone()),
    );

    // The gRPC server stops on its own token, after the dispatcher: a SubmitOrder arriving
    // during the drain is still committed (and printed after the restart).
    let grpc_stop = CancellationToken::new();
    let grpc_stop_rx = grpc_stop.clone();
    let server = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming_shutdown(wixprint_shared::grpc::incoming(grpc), grpc_stop_rx.cancelled())
            .await
    });

    for handle in printers.iter() {
        let failover = handle.backup.as_deref().and_then(|b| printers.get(b)).map(|b| dispatcher::Failover {
            backup: b.name.clone(),
            backup_monitor: b.monitor.clone(),
            backup_wake: b.wake.clone(),
            after: config.failover_after,
        });
        let mut buzzing = (*handle.layout).clone();
        buzzing.buzzer = true;
        let dispatcher = dispatcher::Dispatcher {
            store: store.clone(),
            printer: handle.name.clone(),
            url: handle.url.clone(),
            monitor: handle.monitor.clone(),
            link: handle.link.clone(),
            layout: handle.layout.clone(),
            buzzer: config.buzzer.clone(),
            buzzer_layout: Arc::new(buzzing),
            failover,
            timeouts,
            retry_backoff: config.retry_backoff,
            wake: handle.wake.clone(),
            gate: handle.gate.clone(),
            idle_poll: config.status_poll,
            grace: config.shutdown_grace,
            heartbeat: health.watchdog().heartbeat(format!("dispatcher {}", handle.name)),
        };
        tracker.spawn(dispatcher.run(shutdown.clone()));
    }
    tracker.close();

    let described = config
        .printers
        .iter()
        .map(|p| format!("{} {} ({} columns)", p.name, p.url, p.width))
        .collect::<Vec<_>>()
        .join(", ");
    tracing::info!(%grpc_addr, printers = %described, db = %config.db_path.display(), "wix-print ready");
    wixprint_shared::notify::ready(&format!("gRPC on {grpc_addr}, printers {described}"));

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
    telemetry.shutdown().await;
    tracing::info!("wix-print stopped");
    Ok(())
}

/// The receipt layout of printer `p`: its width and code page, everything else shared.
fn layout_for(config: &Config, p: &config::PrinterConfig) -> receipt::Layout {
    let mut layout = receipt::Layout::new(p.width);
    layout.code_page = p.code_page;
    layout.time_zone = config.time_zone.clone();
    layout.restaurant = config.restaurant.clone();
    layout.allergy_words = config.allergy_words.clone();
    layout.language = config.language.clone();
    layout.labels = config.labels.clone();
    layout
}
