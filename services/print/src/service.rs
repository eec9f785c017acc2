//! gRPC services of wix-print: `PrintService.SubmitOrder` (the durable path from wix-ingest)
//! and `PrintAdmin` (what an operator asks with grpcurl).

use tonic::{Request, Response, Status};

use wixprint_shared::proto::print::print_admin_server::PrintAdmin;
use wixprint_shared::proto::print::print_service_server::PrintService;
use wixprint_shared::proto::print::*;

use crate::dispatcher::render_job;
use crate::printers::Printers;
use crate::store::{QueuePolicy, Store};

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
        let SubmitOrderRequest { order, version } = req.into_inner();
        let Some(order) = order else {
            return Err(Status::invalid_argument("order is required"));
        };
        if order.id.trim().is_empty() {
            return Err(Status::invalid_argument("order.id is required"));
        }
        if version < 1 {
            return Err(Status::invalid_argument(format!("version must be >= 1, got {version}")));
        }
        let order_id = order.id.clone();
        let resp = self.store.submit(order, version, self.policy.clone()).await.map_err(internal)?;
        if !resp.job_ids.is_empty() {
            self.printers.wake_all();
        }
        tracing::info!(%order_id, version, disposition = ?Disposition::try_from(resp.disposition).unwrap_or_default(),
            duplicate = resp.duplicate, jobs = resp.job_ids.len(), "order version received");
        Ok(Response::new(resp))
    }
}

pub struct Admin {
    pub store: Store,
    pub printers: Printers,
    /// For the routes: which printer a receipt type prints on.
    pub policy: QueuePolicy,
    pub started_ms: i64,
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
                }
            })
            .collect();
        Ok(Response::new(GetStatusResponse {
            jobs: counts.into_iter().map(|(s, count)| StateCount { state: s.to_proto() as i32, count }).collect(),
            printers,
            last_printed,
            orders,
            order_versions,
            version: wixprint_shared::VERSION.to_owned(),
            started_at: Some(wixprint_shared::time::timestamp_from_ms(self.started_ms)),
        }))
    }

    async fn list_jobs(&self, req: Request<ListJobsRequest>) -> Result<Response<ListJobsResponse>, Status> {
        let req = req.into_inner();
        let state = match JobState::try_from(req.state) {
            Ok(JobState::Unspecified) => None,
            Ok(s) => crate::store::JobState::from_proto(s),
            Err(_) => return Err(Status::invalid_argument(format!("unknown job state {}", req.state))),
        };
        let limit = match req.limit {
            0 => 100,
            n if n > 1000 => return Err(Status::invalid_argument("limit must be at most 1000")),
            n => n,
        };
        let order_id = Some(req.order_id).filter(|s| !s.is_empty());
        let jobs = self.store.list_jobs(state, order_id, limit).await.map_err(internal)?;
        Ok(Response::new(ListJobsResponse { jobs }))
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
        Ok(Response::new(GetJobResponse { job: Some(job), text, transitions }))
    }
}
