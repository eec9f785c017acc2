//! The outbox never blocks on one row (issue 10 §6), with the real binaries: wix-ingest
//! forwards to wix-print through a test proxy that refuses one order with a non-permanent
//! status (as wix-print answers a store failure); later orders print promptly, the refused
//! row becomes a dead letter after `INGEST_OUTBOX_DEAD_AFTER` refusals, and `RequeueOutbox`
//! sends it again.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::OnceCell;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use wixprint_shared::proto::ingest::{GetOrderRequest, GetStatusRequest, ListDeadLettersRequest, RequeueOutboxRequest};
use wixprint_shared::proto::print::print_service_client::PrintServiceClient;
use wixprint_shared::proto::print::print_service_server::{PrintService, PrintServiceServer};
use wixprint_shared::proto::print::{SubmitOrderRequest, SubmitOrderResponse};
use wixprint_tests::harness::{Stack, StackOptions, wait_until};
use wixprint_tests::webhook::distinct_order;

const T: Duration = Duration::from_secs(30);
const PICKUP: &str = "order_created.pickup.json";
const DEAD_AFTER: u32 = 3;

/// Forwards `SubmitOrder` to the real wix-print, except for the order it is told to refuse.
#[derive(Clone, Default)]
struct Proxy {
    upstream: Arc<OnceCell<PrintServiceClient<Channel>>>,
    refuse: Arc<Mutex<Option<String>>>,
    refused: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl PrintService for Proxy {
    async fn submit_order(&self, req: Request<SubmitOrderRequest>) -> Result<Response<SubmitOrderResponse>, Status> {
        let id = req.get_ref().order.as_ref().map(|o| o.id.clone()).unwrap_or_default();
        if self.refuse.lock().unwrap().as_deref() == Some(id.as_str()) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(Status::unavailable("print.db is busy (refused by the test proxy)"));
        }
        let mut upstream = self.upstream.get().ok_or_else(|| Status::internal("test proxy has no upstream"))?.clone();
        // Pass wix-ingest's submit token on: the proxy is transparent.
        let auth = req.metadata().get("authorization").cloned();
        let mut forwarded = Request::new(req.into_inner());
        if let Some(auth) = auth {
            forwarded.metadata_mut().insert("authorization", auth);
        }
        upstream.submit_order(forwarded).await
    }
}

async fn printed_orders(stack: &Stack) -> BTreeSet<String> {
    stack.jobs().await.unwrap().into_iter().filter(|j| j.printed_at.is_some()).map(|j| j.order_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_order_backs_off_alone_becomes_a_dead_letter_and_is_requeued() {
    let proxy = Proxy::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = listener.local_addr().unwrap();
    let server = PrintServiceServer::new(proxy.clone());
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(server)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    let stack = Stack::start(
        StackOptions::default()
            .ingest_env("PRINT_SERVICE_URL", format!("http://{proxy_addr}"))
            .ingest_env("INGEST_OUTBOX_DEAD_AFTER", DEAD_AFTER.to_string()),
    )
    .await
    .expect("stack starts");
    let channel = Channel::from_shared(format!("http://{}", stack.print_grpc)).unwrap().connect_lazy();
    proxy.upstream.set(PrintServiceClient::new(channel)).unwrap();

    let events: Vec<_> = (1..=3).map(|n| distinct_order(PICKUP, n)).collect();
    let ids: Vec<String> = events.iter().map(|e| e["entityId"].as_str().unwrap().to_owned()).collect();
    *proxy.refuse.lock().unwrap() = Some(ids[0].clone());
    for e in &events {
        stack.send_event(e).await.unwrap();
    }
    let sent = Instant::now();

    // The orders after the refused one print while it is refused.
    let later: BTreeSet<String> = ids[1..].iter().cloned().collect();
    let waited = wait_until(T, "the later orders printed", || {
        let stack = &stack;
        let later = later.clone();
        async move { Ok(printed_orders(stack).await.is_superset(&later)) }
    })
    .await;
    if let Err(e) = waited {
        panic!("{e:#}\n{}", stack.logs());
    }
    let took = sent.elapsed();
    assert!(took < Duration::from_secs(5), "later orders took {took:?} behind a refused one");
    assert!(!printed_orders(&stack).await.contains(&ids[0]));

    // Refused DEAD_AFTER times: a dead letter, shown in GetStatus and ListDeadLetters.
    let mut admin = stack.ingest_admin().await.unwrap();
    let dead = wait_until(T, "the refused order listed as a dead letter", || {
        let mut admin = admin.clone();
        async move {
            let list = admin.list_dead_letters(ListDeadLettersRequest { limit: 0 }).await?.into_inner();
            Ok(!list.dead_letters.is_empty())
        }
    })
    .await;
    if let Err(e) = dead {
        panic!("{e:#}\n{}", stack.logs());
    }
    let list = admin.list_dead_letters(ListDeadLettersRequest { limit: 0 }).await.unwrap().into_inner().dead_letters;
    assert_eq!(list.len(), 1, "{list:?}");
    let letter = &list[0];
    assert_eq!((letter.order_id.as_str(), letter.refusals), (ids[0].as_str(), DEAD_AFTER), "{letter:?}");
    assert!(letter.last_error.contains("print.db is busy"), "{letter:?}");
    assert_eq!(proxy.refused.load(Ordering::SeqCst), DEAD_AFTER as usize, "a dead letter is not retried");
    let st = admin.get_status(GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!((st.outbox_dead, st.outbox_pending, st.outbox_delivered), (1, 0, 2), "{st:?}");
    assert!(st.outbox_oldest_dead_secs >= 0.0);

    // Bad requeue requests get a clear error and change nothing.
    let err = admin.requeue_outbox(RequeueOutboxRequest { id: 0 }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let err = admin.requeue_outbox(RequeueOutboxRequest { id: 999_999 }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    let delivered = admin.get_order(GetOrderRequest { id: ids[1].clone() }).await.unwrap().into_inner().outbox;
    let err = admin.requeue_outbox(RequeueOutboxRequest { id: delivered[0].id }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("delivered"), "{err:?}");
    let again = admin.get_status(GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!((again.outbox_dead, again.outbox_pending, again.outbox_delivered), (1, 0, 2));

    // wix-print takes it now: the operator requeues it and it prints.
    *proxy.refuse.lock().unwrap() = None;
    let requeued = admin.requeue_outbox(RequeueOutboxRequest { id: letter.id }).await.unwrap().into_inner();
    assert_eq!((requeued.order_id.as_str(), requeued.state.as_str()), (ids[0].as_str(), "pending"));
    let all: BTreeSet<String> = ids.iter().cloned().collect();
    wait_until(T, "the requeued order printed", || {
        let stack = &stack;
        let all = all.clone();
        async move { Ok(printed_orders(stack).await.is_superset(&all)) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
    stack.wait_quiet(T).await.unwrap();
    let st = admin.get_status(GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!((st.outbox_dead, st.outbox_pending, st.outbox_delivered), (0, 0, 3), "{st:?}");
    assert!(
        admin
            .list_dead_letters(ListDeadLettersRequest { limit: 0 })
            .await
            .unwrap()
            .into_inner()
            .dead_letters
            .is_empty()
    );
}
