//! gRPC plumbing every service mounts: `grpc.health.v1` and server reflection in both
//! `v1` and `v1alpha` (grpcurl 1.8.6 only speaks v1alpha; newer clients try v1 first).

use tonic::service::Routes;
use tonic_health::server::HealthReporter;
use tonic_reflection::server::Builder;

/// Adds health and reflection (v1 + v1alpha) to `routes`. The reporter starts with every
/// service NOT_SERVING until the caller marks them serving.
pub fn with_health_and_reflection(routes: Routes) -> anyhow::Result<(Routes, HealthReporter)> {
    let builder = || {
        Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let (reporter, health) = tonic_health::server::health_reporter();
    let routes = routes.add_service(health).add_service(builder().build_v1()?).add_service(builder().build_v1alpha()?);
    Ok((routes, reporter))
}

/// Health turns NOT_SERVING (every listed service and the server as a whole) the moment a
/// fatal condition is triggered, so a health check sees the trouble before the process exits.
pub fn not_serving_on_fatal(reporter: HealthReporter, services: &[&'static str]) {
    let services = services.to_vec();
    tokio::spawn(async move {
        crate::fatal::wait().await;
        for name in services.into_iter().chain([""]) {
            reporter.set_service_status(name, tonic_health::ServingStatus::NotServing).await;
        }
    });
}

/// The accepted connections of a gRPC listener, with Nagle's algorithm off: a small reply
/// (every admin answer, every `SubmitOrder` acknowledgement) otherwise waits for the peer's
/// delayed ACK, about 40 ms on Linux.
pub fn incoming(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        if let Ok(stream) = &conn {
            let _ = stream.set_nodelay(true);
        }
        conn
    })
}
