//! `wixprint.ingest.v1.IngestAdmin`: what an operator asks wix-ingest with grpcurl.

use tonic::{Request, Response, Status};

use wixprint_shared::proto::ingest::ingest_admin_server::IngestAdmin;
use wixprint_shared::proto::ingest::*;

use crate::store::Store;

pub struct Admin {
    pub store: Store,
    pub print_service_url: String,
    pub started_ms: i64,
}

fn internal(e: anyhow::Error) -> Status {
    Status::internal(format!("{e:#}"))
}

#[tonic::async_trait]
impl IngestAdmin for Admin {
    async fn get_status(&self, _: Request<GetStatusRequest>) -> Result<Response<GetStatusResponse>, Status> {
        let mut status = self.store.status().await.map_err(internal)?;
        status.print_service_url = self.print_service_url.clone();
        status.version = wixprint_shared::VERSION.to_owned();
        status.started_at = Some(wixprint_shared::time::timestamp_from_ms(self.started_ms));
        Ok(Response::new(status))
    }

    async fn list_orders(&self, req: Request<ListOrdersRequest>) -> Result<Response<ListOrdersResponse>, Status> {
        let limit = match req.get_ref().limit {
            0 => 100,
            n if n > 1000 => return Err(Status::invalid_argument("limit must be at most 1000")),
            n => n,
        };
        let orders = self.store.list_orders(limit).await.map_err(internal)?;
        Ok(Response::new(ListOrdersResponse { orders }))
    }

    async fn get_order(&self, req: Request<GetOrderRequest>) -> Result<Response<GetOrderResponse>, Status> {
        let id = req.into_inner().id;
        if id.trim().is_empty() {
            return Err(Status::invalid_argument("id is required"));
        }
        match self.store.get_order(id.clone()).await.map_err(internal)? {
            Some(o) => Ok(Response::new(o)),
            None => Err(Status::not_found(format!("no order with id {id:?}"))),
        }
    }
}
