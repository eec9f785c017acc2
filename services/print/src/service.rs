//! gRPC services of wix-print: `PrintService.SubmitOrder` (the durable path from wix-ingest)
//! and `PrintAdmin` (what an operator asks with grpcurl).

use tonic::{Request, Response, Status};
use tracing::Instrument;
use tracing::field::Empty;

use wixprint_shared::proto::print::print_admin_server::PrintAdmin;
use wixprint_shared::proto::print::print_service_server::PrintService;
use wixprint_shared::proto::print::*;

use crate::dispatcher::render_job;
use crate::job::RecoveryState;
use crate::paper::{self, QueuePolicy};
use crate::printers::Printers;
use crate::store::{self, JobRecord, Store, TransitionRecord};

fn internal(e: anyhow::Error) -> Status {
    tracing::error!(error = format!("{e:#}"), "request failed");
    Status::unavailable(format!("{e:#}"))
}

pub struct Printing {
    pub store: Store,
    pub policy: QueuePolicy,
    pub printers: Printers,
}

#[tonic::async_trait]
impl PrintService for Printing {
    async fn submit_order(&self, req: Request<SubmitOrderRequest>) -> Result<Response<SubmitOrderResponse>, Status> {
        // A child of wix-ingest's `outbox.forward` when the metadata carries a valid W3C
        // traceparent; a new trace otherwise (garbage is ignored, never an error).
        let parent = wixprint_shared::traces::extract(req.metadata());
        let version = req.get_ref().version;
        let trace = wixprint_shared::traces::hop(parent, || {
            tracing::info_span!(target: wixprint_shared::traces::SPANS, "SubmitOrder", otel.kind = "server",
                otel.status_code = Empty, rpc.system = "grpc", rpc.method = "SubmitOrder", order.id = Empty,
                order.number = Empty, order.version = version, disposition = Empty, duplicate = Empty, jobs = Empty)
        });
        let span = trace.span().clone();
        let result = self.submit(req.into_inner(), &trace).instrument(span.clone()).await;
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        result
    }
}

impl Printing {
    async fn submit(
        &self,
        req: SubmitOrderRequest,
        trace: &wixprint_shared::traces::Hop,
    ) -> Result<Response<SubmitOrderResponse>, Status> {
        let SubmitOrderRequest { order, version, previous_version, received_at } = req;
        let received_ms = received_at.as_ref().and_then(|t| wixprint_shared::time::try_ms_from_timestamp(t).ok());
        let Some(order) = order else {
            return Err(Status::invalid_argument("order is required"));
        };
        // The rules the webhook keeps (items, quantities >= 1, text and amount sizes, times
        // whose milliseconds fit): a refusal names the field, and nothing is stored.
        wixprint_shared::validate::check_order(&order).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if version < 1 {
            return Err(Status::invalid_argument(format!("version must be >= 1, got {version}")));
        }
        if !(0..version).contains(&previous_version) {
            return Err(Status::invalid_argument(format!(
                "previous_version must be from 0 to version - 1 ({}), got {previous_version}",
                version - 1
            )));
        }
        let order_id = order.id.clone();
        let span = trace.span();
        span.record("order.id", order.id.as_str());
        span.record("order.number", order.number.as_str());
        // Stored with the jobs: each ticket's print span continues this trace.
        let traceparent = trace.traceparent();
        let commit = trace.child(|| {
            tracing::info_span!(target: wixprint_shared::traces::SPANS, "sqlite.commit",
                db.system.name = "sqlite", db.operation.name = "submit_order")
        });
        let outcome = self
            .store
            .submit_received(order, version, previous_version, self.policy.clone(), received_ms, traceparent)
            .instrument(commit)
            .await
            .map_err(internal)?;
        span.record("disposition", tracing::field::debug(outcome.disposition));
        span.record("duplicate", outcome.duplicate);
        span.record("jobs", outcome.job_ids.len() as i64);
        // New jobs, or jobs that changed (cancelled, now printing another version): the
        // dispatchers look again.
        if outcome.disposition != paper::Disposition::Recorded {
            self.printers.wake_all();
        }
        tracing::info!(%order_id, version, disposition = ?outcome.disposition,
            duplicate = outcome.duplicate, jobs = outcome.job_ids.len(), "order version received");
        if !outcome.duplicate {
            crate::metrics::order_received();
        }
        Ok(Response::new(SubmitOrderResponse {
            disposition: disposition_to_proto(outcome.disposition) as i32,
            job_ids: outcome.job_ids,
            duplicate: outcome.duplicate,
        }))
    }
}

pub struct Admin {
    pub store: Store,
    pub printers: Printers,
    /// For the routes: which printer a receipt type prints on.
    pub policy: QueuePolicy,
    pub bus: wixprint_shared::bus::Bus,
    pub timeouts: crate::printer::Timeouts,
    pub started_ms: i64,
    pub healing: wixprint_shared::healing::Healing,
    pub health: wixprint_shared::health::Health,
    /// E-mail alerts: `SendTestAlert`, `ListAlerts`, `GetStatus.alerts`.
    pub alerts: wixprint_shared::alerts::AlertService,
}

#[tonic::async_trait]
impl PrintAdmin for Admin {
    async fn get_status(&self, _: Request<GetStatusRequest>) -> Result<Response<GetStatusResponse>, Status> {
        let counts = self.store.counts().await.map_err(internal)?;
        let (orders, order_versions) = self.store.order_counts().await.map_err(internal)?;
        let last_printed = self.store.last_printed().await.map_err(internal)?;
        let printers = self
            .printers
            .iter()
            .map(|h| {
                let p = h.monitor.get();
                PrinterStatus {
                    name: p.name,
                    url: p.url,
                    state: p.state.as_str().to_owned(),
                    detail: p.detail,
                    since: Some(wixprint_shared::time::timestamp_from_ms(p.since_ms)),
                    last_checked: wixprint_shared::time::opt_timestamp(Some(p.last_checked_ms)),
                    checks: p.checks,
                    confirm_mode: h.link.confirm_mode().to_owned(),
                }
            })
            .collect();
        Ok(Response::new(GetStatusResponse {
            jobs: counts.into_iter().map(|(s, count)| StateCount { state: s.to_proto() as i32, count }).collect(),
            printers,
            last_printed: last_printed.map(job_to_proto),
            orders,
            order_versions,
            version: wixprint_shared::VERSION.to_owned(),
            started_at: Some(wixprint_shared::time::timestamp_from_ms(self.started_ms)),
            connectivity: crate::connectivity::components(&self.printers),
            peer: Some(self.bus.peer()),
            alerts: self.alerts.status(),
        }))
    }

    async fn get_connectivity(
        &self,
        _: Request<GetConnectivityRequest>,
    ) -> Result<Response<GetConnectivityResponse>, Status> {
        Ok(Response::new(GetConnectivityResponse {
            components: crate::connectivity::components(&self.printers),
            peer: Some(self.bus.peer()),
        }))
    }

    async fn check_connectivity(
        &self,
        _: Request<CheckConnectivityRequest>,
    ) -> Result<Response<GetConnectivityResponse>, Status> {
        // One printer after the other; each read is bounded by the connect and status timeouts.
        let probes = self.printers.iter().map(|h| async move {
            // On the printer's one connection; while a job holds it, the dispatcher's own
            // reads are the fresh ones.
            let (state, detail) = match h.link.probe_if_idle().await {
                Some((state, detail)) => {
                    h.monitor.set(state, detail.clone());
                    (state, detail)
                }
                None => {
                    let o = h.monitor.get();
                    (o.state, o.detail)
                }
            };
            wixprint_shared::proto::events::Component {
                kind: wixprint_shared::connectivity::KIND_PRINTER.into(),
                name: h.name.clone(),
                state: state.as_str().into(),
                since: Some(wixprint_shared::time::timestamp_from_ms(h.monitor.get().since_ms)),
                detail,
            }
        });
        let mut components = Vec::new();
        for p in probes {
            components.push(p.await);
        }
        Ok(Response::new(GetConnectivityResponse { components, peer: Some(self.bus.peer()) }))
    }

    async fn list_connectivity_events(
        &self,
        req: Request<ListConnectivityEventsRequest>,
    ) -> Result<Response<ListConnectivityEventsResponse>, Status> {
        let req = req.into_inner();
        if req.limit > wixprint_shared::connectivity::MAX_LIST_LIMIT {
            return Err(Status::invalid_argument(format!(
                "limit must be at most {}",
                wixprint_shared::connectivity::MAX_LIST_LIMIT
            )));
        }
        for (field, v) in [("kind", &req.kind), ("name", &req.name)] {
            if v.len() > 100 {
                return Err(Status::invalid_argument(format!("{field} must be at most 100 characters")));
            }
        }
        let kind = Some(req.kind).filter(|s| !s.is_empty());
        let name = Some(req.name).filter(|s| !s.is_empty());
        let events = self.store.connectivity_events(kind, name, req.limit).await.map_err(internal)?;
        Ok(Response::new(ListConnectivityEventsResponse { events }))
    }

    async fn get_recovery(&self, req: Request<GetRecoveryRequest>) -> Result<Response<RecoverySession>, Status> {
        let req = req.into_inner();
        let row = if req.session_id != 0 {
            self.store.recovery(req.session_id).await.map_err(internal)?
        } else {
            let printer = if req.printer.is_empty() {
                self.printers.names()[0].to_owned()
            } else if self.printers.get(&req.printer).is_some() {
                req.printer.clone()
            } else {
                return Err(Status::not_found(format!("no printer named {:?}", req.printer)));
            };
            self.store.open_recovery(&printer).await.map_err(internal)?
        };
        match row {
            Some(r) => Ok(Response::new(crate::recovery::to_proto(&r, wixprint_shared::time::now_ms()))),
            None if req.session_id != 0 => Err(Status::not_found(format!("no recovery session {}", req.session_id))),
            None => Err(Status::not_found("no recovery session is open for that printer")),
        }
    }

    async fn pause_recovery(&self, req: Request<RecoveryControlRequest>) -> Result<Response<RecoverySession>, Status> {
        let s = self.session(req.into_inner().session_id).await?;
        if !matches!(s.state, RecoveryState::Processing | RecoveryState::Validating | RecoveryState::Paused) {
            return Err(Status::failed_precondition(format!(
                "session {} is {}; only an open session pauses",
                s.id, s.state
            )));
        }
        if let Some(h) = self.printers.get(&s.printer) {
            h.gate.set_paused(true);
        }
        self.store
            .set_recovery_state(s.id, RecoveryState::Paused, crate::recovery::OPERATOR, false)
            .await
            .map_err(internal)?;
        tracing::info!(session = s.id, printer = %s.printer, "recovery paused by the operator");
        self.session_reply(s.id).await
    }

    async fn resume_recovery(&self, req: Request<RecoveryControlRequest>) -> Result<Response<RecoverySession>, Status> {
        let s = self.session(req.into_inner().session_id).await?;
        match s.state {
            RecoveryState::Paused | RecoveryState::Processing | RecoveryState::Validating => {}
            RecoveryState::Cancelled => {
                let n = self.store.release_recovery_jobs(s.id).await.map_err(internal)?;
                tracing::info!(session = s.id, jobs = n, "cancelled recovery resumed; held jobs print");
            }
            other => {
                return Err(Status::failed_precondition(format!("session {} is {other}; nothing to resume", s.id)));
            }
        }
        self.store.set_recovery_state(s.id, RecoveryState::Processing, "", false).await.map_err(internal)?;
        if let Some(h) = self.printers.get(&s.printer) {
            h.gate.set_paused(false);
            h.wake.notify_one();
        }
        self.session_reply(s.id).await
    }

    async fn cancel_recovery(&self, req: Request<RecoveryControlRequest>) -> Result<Response<RecoverySession>, Status> {
        let s = self.session(req.into_inner().session_id).await?;
        if !matches!(s.state, RecoveryState::Processing | RecoveryState::Validating | RecoveryState::Paused) {
            return Err(Status::failed_precondition(format!(
                "session {} is {}; only an open session cancels",
                s.id, s.state
            )));
        }
        // Keep the rest (held), then let the printer go on with new orders.
        let held = self.store.hold_recovery_jobs(s.id).await.map_err(internal)?;
        self.store.set_recovery_state(s.id, RecoveryState::Cancelled, "", true).await.map_err(internal)?;
        self.store
            .set_recovery_summary(s.id, format!("cancelled by the operator; {held} tickets kept as held"))
            .await
            .map_err(internal)?;
        if let Some(h) = self.printers.get(&s.printer) {
            h.gate.set_min_interval(None);
            h.gate.set_paused(false);
            h.wake.notify_one();
        }
        tracing::warn!(session = s.id, printer = %s.printer, held, "recovery cancelled; the rest of the backlog is held");
        self.session_reply(s.id).await
    }

    async fn list_recovery_sessions(
        &self,
        req: Request<ListRecoverySessionsRequest>,
    ) -> Result<Response<ListRecoverySessionsResponse>, Status> {
        let req = req.into_inner();
        let limit = match req.limit {
            0 => 20,
            n if n > 1000 => return Err(Status::invalid_argument("limit must be at most 1000")),
            n => n,
        };
        let printer = Some(req.printer).filter(|p| !p.is_empty());
        let now = wixprint_shared::time::now_ms();
        let rows = self.store.list_recoveries(printer, limit).await.map_err(internal)?;
        Ok(Response::new(ListRecoverySessionsResponse {
            sessions: rows.iter().map(|r| crate::recovery::to_proto(r, now)).collect(),
        }))
    }

    async fn get_recovery_stats(
        &self,
        _: Request<GetRecoveryStatsRequest>,
    ) -> Result<Response<GetRecoveryStatsResponse>, Status> {
        let now = wixprint_shared::time::now_ms();
        let rows = self.store.list_recoveries(None, u32::MAX).await.map_err(internal)?;
        let sessions: Vec<RecoverySession> = rows.iter().map(|r| crate::recovery::to_proto(r, now)).collect();
        let completed: Vec<&RecoverySession> =
            sessions.iter().filter(|s| s.state == RecoveryState::Completed.as_str()).collect();
        let mean = |v: Vec<u64>| if v.is_empty() { 0 } else { v.iter().sum::<u64>() / v.len() as u64 };
        let latencies: Vec<u64> = sessions.iter().filter(|s| s.done > 0).map(|s| s.start_latency_ms).collect();
        Ok(Response::new(GetRecoveryStatsResponse {
            sessions: sessions.len() as u64,
            completed: completed.len() as u64,
            cancelled: sessions.iter().filter(|s| s.state == RecoveryState::Cancelled.as_str()).count() as u64,
            tickets_recovered: sessions.iter().map(|s| s.done).sum(),
            mean_duration_ms: mean(completed.iter().map(|s| s.duration_ms).collect()),
            max_duration_ms: completed.iter().map(|s| s.duration_ms).max().unwrap_or(0),
            mean_start_latency_ms: mean(latencies.clone()),
            max_start_latency_ms: latencies.into_iter().max().unwrap_or(0),
            last: sessions.first().cloned(),
        }))
    }

    async fn get_queue_status(
        &self,
        _: Request<GetQueueStatusRequest>,
    ) -> Result<Response<GetQueueStatusResponse>, Status> {
        let (rows, oldest) = self.store.queue_counts().await.map_err(internal)?;
        let waiting_state = |s: store::JobState| store::JobState::WAITING.contains(&s);
        let waiting = rows.iter().filter(|r| waiting_state(r.1)).map(|r| r.3).sum();
        let printers = self
            .printers
            .iter()
            .map(|h| PrinterQueue {
                printer: h.name.clone(),
                waiting: rows.iter().filter(|r| r.0 == h.name && waiting_state(r.1)).map(|r| r.3).sum(),
                paused: h.gate.is_paused(),
            })
            .collect();
        let counts = rows
            .into_iter()
            .map(|(printer, state, priority, count)| QueueCount {
                printer,
                state: state.to_proto() as i32,
                priority: priority.as_sql(),
                priority_name: priority.name().into(),
                count,
            })
            .collect();
        Ok(Response::new(GetQueueStatusResponse {
            counts,
            waiting,
            oldest_waiting_ms: oldest.map_or(0, |t| (wixprint_shared::time::now_ms() - t).max(0) as u64),
            printers,
        }))
    }

    async fn list_jobs(&self, req: Request<ListJobsRequest>) -> Result<Response<ListJobsResponse>, Status> {
        let req = req.into_inner();
        let state = match JobState::try_from(req.state) {
            Ok(JobState::Unspecified) => None,
            Ok(s) => store::JobState::from_proto(s),
            Err(_) => return Err(Status::invalid_argument(format!("unknown job state {}", req.state))),
        };
        let limit = match req.limit {
            0 => 100,
            n if n > 1000 => return Err(Status::invalid_argument("limit must be at most 1000")),
            n => n,
        };
        let order_id = Some(req.order_id).filter(|s| !s.is_empty());
        let jobs = self.store.list_jobs(state, order_id, limit).await.map_err(internal)?;
        Ok(Response::new(ListJobsResponse { jobs: jobs.into_iter().map(job_to_proto).collect() }))
    }

    async fn preview_receipt(
        &self,
        req: Request<PreviewReceiptRequest>,
    ) -> Result<Response<PreviewReceiptResponse>, Status> {
        let req = req.into_inner();
        let receipt_type = match ReceiptType::try_from(req.receipt_type) {
            Ok(ReceiptType::Unspecified) | Err(_) => {
                return Err(Status::invalid_argument(
                    "receipt_type is required (RECEIPT_TYPE_KITCHEN, RECEIPT_TYPE_DRIVER, RECEIPT_TYPE_CUSTOMER)",
                ));
            }
            Ok(t) => t,
        };
        let printer = if req.printer.is_empty() { self.policy.printer_for(receipt_type) } else { req.printer.as_str() };
        let Some(handle) = self.printers.get(printer) else {
            return Err(Status::not_found(format!(
                "no printer named {:?} (configured: {})",
                req.printer,
                self.printers.names().join(", ")
            )));
        };
        let printer = handle.name.clone();
        let mut layout = (*handle.layout).clone();
        if req.width != 0 {
            if !(24..=80).contains(&req.width) {
                return Err(Status::invalid_argument(format!("width {} is outside 24..=80", req.width)));
            }
            layout.set_width(req.width as usize);
        }
        let (order, version) = match req.source {
            Some(preview_receipt_request::Source::OrderId(id)) => {
                match self.store.latest_order(id.clone()).await.map_err(internal)? {
                    Some(found) => found,
                    None => return Err(Status::not_found(format!("no order with id {id:?}"))),
                }
            }
            Some(preview_receipt_request::Source::Order(order)) => (order, 0),
            None => return Err(Status::invalid_argument("give an order_id or an inline order")),
        };
        let text = crate::receipt::render(&order, receipt_type, &layout, None).to_text(&layout);
        Ok(Response::new(PreviewReceiptResponse { text, width: layout.width as u32, printer, version }))
    }

    async fn list_breakers(
        &self,
        _: Request<wixprint_shared::proto::events::ListBreakersRequest>,
    ) -> Result<Response<wixprint_shared::proto::events::ListBreakersResponse>, Status> {
        Ok(Response::new(wixprint_shared::proto::events::ListBreakersResponse {
            breakers: self.healing.breakers.snapshots(),
        }))
    }

    async fn reset_breaker(
        &self,
        req: Request<wixprint_shared::proto::events::ResetBreakerRequest>,
    ) -> Result<Response<wixprint_shared::proto::events::Breaker>, Status> {
        Ok(Response::new(self.healing.breakers.reset(&req.into_inner().name, "ResetBreaker")?))
    }

    async fn get_health(
        &self,
        _: Request<wixprint_shared::proto::events::GetHealthRequest>,
    ) -> Result<Response<wixprint_shared::proto::events::GetHealthResponse>, Status> {
        Ok(Response::new(self.health.get().await?))
    }

    async fn list_healing_events(
        &self,
        req: Request<wixprint_shared::proto::events::ListHealingEventsRequest>,
    ) -> Result<Response<wixprint_shared::proto::events::ListHealingEventsResponse>, Status> {
        Ok(Response::new(self.healing.list(req.into_inner()).await?))
    }

    async fn send_test_alert(
        &self,
        req: Request<wixprint_shared::proto::events::SendTestAlertRequest>,
    ) -> Result<Response<wixprint_shared::proto::events::SendTestAlertResponse>, Status> {
        Ok(Response::new(self.alerts.send_test(req.into_inner()).await?))
    }

    async fn list_alerts(
        &self,
        req: Request<wixprint_shared::proto::events::ListAlertsRequest>,
    ) -> Result<Response<wixprint_shared::proto::events::ListAlertsResponse>, Status> {
        Ok(Response::new(self.alerts.list(req.into_inner()).await?))
    }

    async fn list_dead_letters(
        &self,
        req: Request<ListDeadLettersRequest>,
    ) -> Result<Response<ListDeadLettersResponse>, Status> {
        let req = req.into_inner();
        let printer = self.printer_filter(&req.printer)?;
        if req.limit > 1000 {
            return Err(Status::invalid_argument(format!("limit: at most 1000, got {}", req.limit)));
        }
        let limit = if req.limit == 0 { 100 } else { req.limit };
        let (jobs, total) = self.store.dead_letters(printer, limit).await.map_err(internal)?;
        Ok(Response::new(ListDeadLettersResponse { dead_letters: jobs.into_iter().map(dead_letter).collect(), total }))
    }

    async fn requeue_job(&self, req: Request<RequeueJobRequest>) -> Result<Response<RequeueResponse>, Status> {
        let id = req.into_inner().id;
        if id <= 0 {
            return Err(Status::invalid_argument(format!("id: a job id is positive, got {id}")));
        }
        let jobs = self
            .store
            .requeue_dead(Some(vec![id]), None, self.policy.max_attempts)
            .await
            .map_err(internal)?
            .map_err(requeue_refused)?;
        self.wake_printers(&jobs);
        tracing::info!(job_id = id, "dead letter requeued by an operator");
        Ok(Response::new(RequeueResponse { jobs: jobs.into_iter().map(job_to_proto).collect() }))
    }

    async fn requeue_dead_letters(
        &self,
        req: Request<RequeueDeadLettersRequest>,
    ) -> Result<Response<RequeueResponse>, Status> {
        let printer = self.printer_filter(&req.into_inner().printer)?;
        let jobs = self
            .store
            .requeue_dead(None, printer, self.policy.max_attempts)
            .await
            .map_err(internal)?
            .map_err(requeue_refused)?;
        self.wake_printers(&jobs);
        tracing::info!(jobs = jobs.len(), "dead letters requeued by an operator");
        Ok(Response::new(RequeueResponse { jobs: jobs.into_iter().map(job_to_proto).collect() }))
    }

    async fn get_job(&self, req: Request<GetJobRequest>) -> Result<Response<GetJobResponse>, Status> {
        let id = req.into_inner().id;
        let Some((job, printable, transitions)) = self.store.get_job(id).await.map_err(internal)? else {
            return Err(Status::not_found(format!("no job with id {id}")));
        };
        let layout = self
            .printers
            .get(&job.printer)
            .map_or_else(|| self.printers.iter().next().expect("a printer").layout.clone(), |h| h.layout.clone());
        let text = render_job(&printable, &layout).to_text(&layout);
        Ok(Response::new(GetJobResponse {
            job: Some(job_to_proto(job)),
            text,
            transitions: transitions.into_iter().map(transition_to_proto).collect(),
        }))
    }
}

impl Admin {
    /// An optional printer filter: empty = all, else a configured printer's name.
    fn printer_filter(&self, name: &str) -> Result<Option<String>, Status> {
        if name.is_empty() {
            return Ok(None);
        }
        if self.printers.get(name).is_none() {
            let known: Vec<&str> = self.printers.iter().map(|h| h.name.as_str()).collect();
            return Err(Status::invalid_argument(format!(
                "printer: no printer {name:?} (configured: {})",
                known.join(", ")
            )));
        }
        Ok(Some(name.to_owned()))
    }

    fn wake_printers(&self, jobs: &[JobRecord]) {
        for j in jobs {
            if let Some(h) = self.printers.get(&j.printer) {
                h.wake.notify_one();
            }
        }
    }

    async fn session(&self, id: i64) -> Result<crate::store::RecoveryRow, Status> {
        if id <= 0 {
            return Err(Status::invalid_argument("session_id is required"));
        }
        self.store
            .recovery(id)
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("no recovery session {id}")))
    }

    async fn session_reply(&self, id: i64) -> Result<Response<RecoverySession>, Status> {
        let row = self.session(id).await?;
        Ok(Response::new(crate::recovery::to_proto(&row, wixprint_shared::time::now_ms())))
    }
}

fn disposition_to_proto(d: paper::Disposition) -> Disposition {
    match d {
        paper::Disposition::Queued => Disposition::Queued,
        paper::Disposition::Recorded => Disposition::Recorded,
        paper::Disposition::NotPrintable => Disposition::NotPrintable,
        paper::Disposition::Filtered => Disposition::Filtered,
        paper::Disposition::Cancelled => Disposition::Cancelled,
        paper::Disposition::Changed => Disposition::Changed,
        paper::Disposition::TooOld => Disposition::TooOld,
    }
}

fn job_to_proto(j: JobRecord) -> Job {
    use wixprint_shared::time::opt_timestamp;
    Job {
        id: j.id,
        order_id: j.order_id,
        order_number: j.order_number,
        version: j.version,
        receipt_type: j.receipt_type as i32,
        copy: j.copy,
        state: j.state.to_proto() as i32,
        attempts: j.attempts,
        priority: j.priority.as_sql(),
        reprint: j.reprint,
        printer: j.printer,
        last_error: j.last_error.unwrap_or_default(),
        created_at: opt_timestamp(Some(j.created_ms)),
        updated_at: opt_timestamp(Some(j.updated_ms)),
        printed_at: opt_timestamp(j.printed_ms),
        next_attempt_at: opt_timestamp(Some(j.next_attempt_ms)),
        kind: j.kind.name().to_owned(),
        failure_class: j.failure_class.map(|c| c.as_str().to_owned()).unwrap_or_default(),
    }
}

fn transition_to_proto(t: TransitionRecord) -> JobTransition {
    JobTransition {
        from_state: t.from.map_or("", store::JobState::as_sql).to_owned(),
        to_state: t.to.as_sql().to_owned(),
        at: wixprint_shared::time::opt_timestamp(Some(t.at_ms)),
        detail: t.detail,
        failure_class: t.failure_class.map(|c| c.as_str().to_owned()).unwrap_or_default(),
    }
}

/// A dead job as `ListDeadLetters` shows it.
fn dead_letter(j: JobRecord) -> DeadLetter {
    let class = j.failure_class.unwrap_or(wixprint_shared::failure::FailureClass::Transient);
    DeadLetter {
        reason: match class {
            wixprint_shared::failure::FailureClass::Permanent => "permanent",
            _ => "attempts_exhausted",
        }
        .into(),
        failure_class: class.as_str().into(),
        attempts: j.attempts,
        last_error: j.last_error.clone().unwrap_or_default(),
        dead_at: wixprint_shared::time::opt_timestamp(Some(j.updated_ms)),
        job: Some(job_to_proto(j)),
    }
}

fn requeue_refused(r: store::RequeueRefused) -> Status {
    match r {
        store::RequeueRefused::NotFound(id) => Status::not_found(format!("id: no job {id}")),
        store::RequeueRefused::NotDead(id, state) => {
            Status::failed_precondition(format!("id: job {id} is {state}, not dead; only dead letters are requeued"))
        }
        store::RequeueRefused::Cancelled(id) => Status::failed_precondition(format!(
            "id: job {id} belongs to a cancelled order; its STORNO covers it, it is not printed again"
        )),
    }
}
