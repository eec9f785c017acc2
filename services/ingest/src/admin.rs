//! `wixprint.ingest.v1.IngestAdmin`: what an operator asks wix-ingest with grpcurl.

use tonic::{Request, Response, Status};

use wixprint_shared::proto::ingest::ingest_admin_server::IngestAdmin;
use wixprint_shared::proto::ingest::*;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use wixprint_shared::connectivity::MAX_LIST_LIMIT;
use wixprint_shared::proto::events::PeerStatus;
use wixprint_shared::proto::order::{Order, OrderStatus, PaymentStatus};

use crate::internet::InternetHandle;
use crate::store::{self, Store};
use crate::sync::SyncHandle;
use wixprint_shared::time::opt_timestamp;

pub struct Admin {
    pub store: Store,
    pub print_service_url: String,
    pub started_ms: i64,
    pub sync: SyncHandle,
    pub outbox_wake: Arc<Notify>,
    pub time_zone: jiff::tz::TimeZone,
    pub internet: InternetHandle,
    /// wix-print as the connectivity bus sees it.
    pub peer: watch::Receiver<PeerStatus>,
    pub healing: wixprint_shared::healing::Healing,
    pub health: wixprint_shared::health::Health,
    /// E-mail alerts: `SendTestAlert`, `ListAlerts`, `GetStatus.alerts`.
    pub alerts: wixprint_shared::alerts::AlertService,
}

/// Longest `kind` / `name` filter accepted by ListConnectivityEvents.
const MAX_FILTER_LEN: usize = 100;

/// An optional filter: empty means none; too long is refused, naming the field.
fn filter(field: &str, value: &str) -> Result<Option<String>, Status> {
    let v = value.trim();
    if v.chars().count() > MAX_FILTER_LEN {
        return Err(Status::invalid_argument(format!("{field} is longer than {MAX_FILTER_LEN} characters")));
    }
    Ok((!v.is_empty()).then(|| v.to_owned()))
}

/// Bounds for phone orders typed in by staff (or a script): generous, never unbounded.
const MAX_LOCAL_ITEMS: usize = 200;
const MAX_LOCAL_QUANTITY: u32 = 1000;
const MAX_LOCAL_TEXT: usize = 500;
const MAX_LOCAL_NOTE: usize = wixprint_shared::validate::MAX_NOTE_CHARS;

/// Removes control characters (NUL included) and trims; `None` when longer than `max`.
fn clean(field: &str, text: &str, max: usize) -> Result<String, Status> {
    let t: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let t = t.split_whitespace().collect::<Vec<_>>().join(" ");
    if t.chars().count() > max {
        return Err(Status::invalid_argument(format!("{field} is longer than {max} characters")));
    }
    Ok(t)
}

/// Longest amount typed into a phone order (the shared rule allows more for Wix's own).
const MAX_LOCAL_AMOUNT: usize = 16;

fn money(field: &str, value: &str) -> Result<String, Status> {
    let v = value.trim();
    if v.len() > MAX_LOCAL_AMOUNT {
        return Err(Status::invalid_argument(format!("{field} is longer than {MAX_LOCAL_AMOUNT} characters")));
    }
    wixprint_shared::validate::check_amount(field, v).map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(v.to_owned())
}

/// Validates and normalises a phone order; every refusal names the field.
fn local_order(mut o: Order) -> Result<Order, Status> {
    if o.line_items.is_empty() {
        return Err(Status::invalid_argument("order.line_items: a local order needs at least one item"));
    }
    if o.line_items.len() > MAX_LOCAL_ITEMS {
        return Err(Status::invalid_argument(format!("order.line_items: at most {MAX_LOCAL_ITEMS} items")));
    }
    for (i, item) in o.line_items.iter_mut().enumerate() {
        item.name = clean(&format!("line_items[{i}].name"), &item.name, MAX_LOCAL_TEXT)?;
        if item.name.is_empty() {
            return Err(Status::invalid_argument(format!("line_items[{i}].name is empty")));
        }
        if item.quantity == 0 || item.quantity > MAX_LOCAL_QUANTITY {
            return Err(Status::invalid_argument(format!(
                "line_items[{i}].quantity {} is outside 1..={MAX_LOCAL_QUANTITY}",
                item.quantity
            )));
        }
        item.unit_price = money(&format!("line_items[{i}].unit_price"), &item.unit_price)?;
        item.line_total = money(&format!("line_items[{i}].line_total"), &item.line_total)?;
        if item.modifiers.len() > 50 {
            return Err(Status::invalid_argument(format!("line_items[{i}].modifiers: at most 50")));
        }
        for (j, m) in item.modifiers.iter_mut().enumerate() {
            m.group = clean(&format!("line_items[{i}].modifiers[{j}].group"), &m.group, MAX_LOCAL_TEXT)?;
            m.name = clean(&format!("line_items[{i}].modifiers[{j}].name"), &m.name, MAX_LOCAL_TEXT)?;
            m.price = money(&format!("line_items[{i}].modifiers[{j}].price"), &m.price)?;
        }
    }
    o.buyer_note = clean("buyer_note", &o.buyer_note, MAX_LOCAL_NOTE)?;
    if let Some(f) = o.fulfillment.as_mut() {
        f.instructions = clean("fulfillment.instructions", &f.instructions, MAX_LOCAL_TEXT)?;
        if let Some(c) = f.contact.as_mut() {
            c.first_name = clean("fulfillment.contact.first_name", &c.first_name, 100)?;
            c.last_name = clean("fulfillment.contact.last_name", &c.last_name, 100)?;
            c.phone = clean("fulfillment.contact.phone", &c.phone, 50)?;
        }
        if let Some(a) = f.address.as_mut() {
            for (name, v) in [
                ("line1", &mut a.line1),
                ("line2", &mut a.line2),
                ("postal_code", &mut a.postal_code),
                ("city", &mut a.city),
            ] {
                *v = clean(&format!("fulfillment.address.{name}"), v, MAX_LOCAL_TEXT)?;
            }
        }
    }
    if let Some(p) = o.price_summary.as_mut() {
        for (name, v) in [
            ("subtotal", &mut p.subtotal),
            ("discount", &mut p.discount),
            ("shipping", &mut p.shipping),
            ("fees", &mut p.fees),
            ("tax", &mut p.tax),
            ("total", &mut p.total),
            ("balance_due", &mut p.balance_due),
            ("paid", &mut p.paid),
        ] {
            *v = money(&format!("price_summary.{name}"), v)?;
        }
        let iso = p.currency.len() == 3 && p.currency.chars().all(|c| c.is_ascii_uppercase());
        if !p.currency.is_empty() && !iso {
            return Err(Status::invalid_argument(format!(
                "price_summary.currency {:?} is not an ISO 4217 code",
                p.currency
            )));
        }
    }
    let now = wixprint_shared::time::timestamp_from_ms(wixprint_shared::time::now_ms());
    o.status = OrderStatus::Approved as i32;
    if PaymentStatus::try_from(o.payment_status).unwrap_or_default() == PaymentStatus::Unspecified {
        o.payment_status = PaymentStatus::NotPaid as i32;
    }
    o.created_at = Some(now);
    o.updated_at = Some(now);
    o.entity_event_sequence = 0;
    o.catalog_app_ids.clear();
    // The rules wix-print's SubmitOrder enforces (promised times whose milliseconds fit ...):
    // a phone order it would refuse is refused here, before it is stored.
    wixprint_shared::validate::check_order_content(&o).map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(o)
}

/// Longest `client_request_id`.
const MAX_REQUEST_ID: usize = 100;

/// `client_request_id`: optional; printable ASCII, at most [`MAX_REQUEST_ID`] characters.
fn request_id(raw: &str) -> Result<Option<String>, Status> {
    let id = raw.trim();
    if id.is_empty() {
        return Ok(None);
    }
    if id.len() > MAX_REQUEST_ID || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Status::invalid_argument(format!(
            "client_request_id must be at most {MAX_REQUEST_ID} printable ASCII characters without spaces"
        )));
    }
    Ok(Some(id.to_owned()))
}

fn internal(e: anyhow::Error) -> Status {
    Status::internal(format!("{e:#}"))
}

#[tonic::async_trait]
impl IngestAdmin for Admin {
    async fn get_status(&self, _: Request<GetStatusRequest>) -> Result<Response<GetStatusResponse>, Status> {
        let c = self.store.counts().await.map_err(internal)?;
        let now = wixprint_shared::time::now_ms();
        Ok(Response::new(GetStatusResponse {
            orders: c.orders,
            webhook_events: c.webhook_events,
            outbox_pending: c.outbox_pending,
            outbox_delivered: c.outbox_delivered,
            outbox_rejected: c.outbox_rejected,
            outbox_dead: c.outbox_dead,
            outbox_oldest_dead_secs: c.outbox_oldest_dead_ms.map_or(0.0, |ms| (now - ms).max(0) as f64 / 1000.0),
            held_events: c.held_events,
            outbox_oldest_pending_secs: c.outbox_oldest_pending_ms.map_or(0.0, |ms| (now - ms).max(0) as f64 / 1000.0),
            last_webhook_at: opt_timestamp(c.last_webhook_ms),
            outbox_last_error: c.outbox_last_error.unwrap_or_default(),
            print_service_url: self.print_service_url.clone(),
            version: wixprint_shared::VERSION.to_owned(),
            started_at: Some(wixprint_shared::time::timestamp_from_ms(self.started_ms)),
            sync: Some(self.sync.status()),
            connectivity: vec![self.internet.component()],
            peer: Some(self.peer.borrow().clone()),
            alerts: self.alerts.status(),
        }))
    }

    async fn list_orders(&self, req: Request<ListOrdersRequest>) -> Result<Response<ListOrdersResponse>, Status> {
        let limit = match req.get_ref().limit {
            0 => 100,
            n if n > 1000 => return Err(Status::invalid_argument("limit must be at most 1000")),
            n => n,
        };
        let orders = self.store.list_orders(limit).await.map_err(internal)?;
        Ok(Response::new(ListOrdersResponse { orders: orders.into_iter().map(summary_to_proto).collect() }))
    }

    async fn submit_local_order(
        &self,
        req: Request<SubmitLocalOrderRequest>,
    ) -> Result<Response<SubmitLocalOrderResponse>, Status> {
        let req = req.into_inner();
        let request_id = request_id(&req.client_request_id)?;
        let order = req.order.ok_or_else(|| Status::invalid_argument("order is required"))?;
        let order = local_order(order)?;
        let day = jiff::Timestamp::now().to_zoned(self.time_zone.clone()).strftime("%Y%m%d").to_string();
        let (id, version) = self.store.record_local_order(order, day, request_id).await.map_err(|e| {
            match e.downcast_ref::<store::RequestIdReused>() {
                Some(reused) => Status::already_exists(reused.to_string()),
                None => internal(e),
            }
        })?;
        self.outbox_wake.notify_one();
        tracing::info!(order_id = %id, "local order stored");
        Ok(Response::new(SubmitLocalOrderResponse { number: id.clone(), id, version }))
    }

    async fn sync_now(&self, _: Request<SyncNowRequest>) -> Result<Response<SyncNowResponse>, Status> {
        let status = self.sync.sync_now(Duration::from_secs(120)).await;
        Ok(Response::new(SyncNowResponse { status: Some(status) }))
    }

    async fn get_connectivity(
        &self,
        _: Request<GetConnectivityRequest>,
    ) -> Result<Response<GetConnectivityResponse>, Status> {
        Ok(Response::new(GetConnectivityResponse {
            components: vec![self.internet.component()],
            peer: Some(self.peer.borrow().clone()),
        }))
    }

    async fn check_connectivity(
        &self,
        _: Request<CheckConnectivityRequest>,
    ) -> Result<Response<GetConnectivityResponse>, Status> {
        let internet = self.internet.check_now().await.map_err(|e| Status::unavailable(format!("{e:#}")))?;
        Ok(Response::new(GetConnectivityResponse {
            components: vec![internet],
            peer: Some(self.peer.borrow().clone()),
        }))
    }

    async fn list_connectivity_events(
        &self,
        req: Request<ListConnectivityEventsRequest>,
    ) -> Result<Response<ListConnectivityEventsResponse>, Status> {
        let req = req.into_inner();
        if req.limit > MAX_LIST_LIMIT {
            return Err(Status::invalid_argument(format!("limit must be at most {MAX_LIST_LIMIT}")));
        }
        let (kind, name) = (filter("kind", &req.kind)?, filter("name", &req.name)?);
        let events = self.store.list_connectivity(kind, name, req.limit).await.map_err(internal)?;
        Ok(Response::new(ListConnectivityEventsResponse { events }))
    }

    async fn list_dead_letters(
        &self,
        req: Request<ListDeadLettersRequest>,
    ) -> Result<Response<ListDeadLettersResponse>, Status> {
        let limit = match req.get_ref().limit {
            0 => 100,
            n if n > 1000 => return Err(Status::invalid_argument("limit must be at most 1000")),
            n => n,
        };
        let rows = self.store.list_dead_letters(limit).await.map_err(internal)?;
        Ok(Response::new(ListDeadLettersResponse {
            dead_letters: rows
                .into_iter()
                .map(|d| DeadLetter {
                    id: d.id,
                    order_id: d.order_id,
                    version: d.version,
                    attempts: d.attempts,
                    refusals: d.refusals,
                    last_error: d.last_error.unwrap_or_default(),
                    created_at: opt_timestamp(d.created_ms),
                })
                .collect(),
        }))
    }

    async fn requeue_outbox(
        &self,
        req: Request<RequeueOutboxRequest>,
    ) -> Result<Response<RequeueOutboxResponse>, Status> {
        let id = req.into_inner().id;
        if id <= 0 {
            return Err(Status::invalid_argument(format!("id must be a positive outbox row id (got {id})")));
        }
        match self.store.requeue_outbox(id).await.map_err(internal)? {
            store::Requeue::Requeued { order_id, version } => {
                tracing::info!(id, %order_id, version, "dead outbox row requeued by an operator");
                self.outbox_wake.notify_one();
                Ok(Response::new(RequeueOutboxResponse {
                    id,
                    order_id,
                    version,
                    state: store::OutboxState::Pending.as_sql().to_owned(),
                }))
            }
            store::Requeue::NotFound => Err(Status::not_found(format!("no outbox row with id {id}"))),
            store::Requeue::NotDead(state) => Err(Status::failed_precondition(format!(
                "outbox row {id} is {}; only dead rows are requeued",
                state.as_sql()
            ))),
        }
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

    async fn get_order(&self, req: Request<GetOrderRequest>) -> Result<Response<GetOrderResponse>, Status> {
        let id = req.into_inner().id;
        if id.trim().is_empty() {
            return Err(Status::invalid_argument("id is required"));
        }
        match self.store.get_order(id.clone()).await.map_err(internal)? {
            Some(o) => Ok(Response::new(detail_to_proto(o))),
            None => Err(Status::not_found(format!("no order with id {id:?}"))),
        }
    }
}

fn summary_to_proto(s: store::OrderSummary) -> OrderSummary {
    OrderSummary {
        id: s.id,
        number: s.number,
        status: s.status,
        source: s.source,
        version: s.version,
        created_at: opt_timestamp(s.created_ms),
        received_at: opt_timestamp(s.received_ms),
        delivered: s.delivered,
    }
}

fn detail_to_proto(d: store::OrderDetail) -> GetOrderResponse {
    GetOrderResponse {
        summary: Some(summary_to_proto(d.summary)),
        order: Some(d.order),
        outbox: d
            .outbox
            .into_iter()
            .map(|e| OutboxEntry {
                id: e.id,
                version: e.version,
                state: e.state.as_sql().to_owned(),
                attempts: e.attempts,
                last_error: e.last_error.unwrap_or_default(),
                created_at: opt_timestamp(e.created_ms),
                delivered_at: opt_timestamp(e.delivered_ms),
            })
            .collect(),
        events: d
            .events
            .into_iter()
            .map(|e| WebhookEvent {
                event_id: e.event_id,
                event_type: e.event_type,
                sequence: e.sequence,
                received_at: opt_timestamp(e.received_ms),
                outcome: e.outcome,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wixprint_shared::proto::order::{Fulfillment, LineItem};

    fn phone_order() -> Order {
        Order {
            line_items: vec![LineItem { name: "Pad Thai".into(), quantity: 2, ..Default::default() }],
            ..Default::default()
        }
    }

    #[test]
    fn a_phone_order_with_a_time_whose_milliseconds_overflow_is_refused_naming_the_field() {
        let mut o = phone_order();
        o.fulfillment = Some(Fulfillment {
            promised_from: Some(prost_types::Timestamp { seconds: i64::MAX, nanos: 0 }),
            ..Default::default()
        });
        let err = local_order(o).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().starts_with("order.fulfillment.promised_from: seconds 9223372036854775807"), "{err:?}");
        assert!(local_order(phone_order()).is_ok());
    }

    #[test]
    fn phone_order_amounts_follow_the_one_money_type() {
        let mut o = phone_order();
        o.line_items[0].unit_price = " 19.50 ".into();
        assert_eq!(local_order(o.clone()).unwrap().line_items[0].unit_price, "19.50");
        for bad in ["12,50", ".5", "1e3", "1.0000001", "12345678901234567"] {
            o.line_items[0].unit_price = bad.into();
            let err = local_order(o.clone()).unwrap_err();
            assert!(err.message().contains("line_items[0].unit_price"), "{bad}: {err:?}");
        }
    }
}
