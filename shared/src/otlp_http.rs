//! OTLP/HTTP's client (issue 13): the exporter's `HttpClient`, as hyper HTTP/1.1 on the
//! process's own tokio runtime, instead of the reqwest stack the crate would bring.
//!
//! The exporters call it from their own threads (the periodic metric reader, the batch span
//! processor); each request runs as a task on the runtime that was current when the client was
//! made, on a fresh connection (one request every export interval: nothing worth pooling).
//! A collector is a peer like any other: the whole exchange has the export timeout, the
//! answer's body is read up to [`MAX_RESPONSE`] and no further, and only `http://` endpoints
//! are spoken to (a collector off this machine is reached through a local one, like the
//! metrics endpoint; TLS would need a root store and a crypto stack here for one use).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use opentelemetry_http::{HttpClient, HttpError};

/// The most of a collector's answer that is read (OTLP answers are a few bytes; a partial
/// success names at most a count and a message).
pub const MAX_RESPONSE: usize = 64 * 1024;

/// An OTLP/HTTP client bound to the current tokio runtime.
#[derive(Debug, Clone)]
pub struct Client {
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

impl Client {
    /// Must be called inside the runtime (as the exporters are built).
    pub fn new(timeout: Duration) -> Client {
        Client { runtime: tokio::runtime::Handle::current(), timeout }
    }
}

#[tonic::async_trait]
impl HttpClient for Client {
    async fn send_bytes(&self, request: http::Request<Bytes>) -> Result<http::Response<Bytes>, HttpError> {
        let timeout = self.timeout;
        let task = self.runtime.spawn(async move {
            match tokio::time::timeout(timeout, send(request)).await {
                Ok(answer) => answer,
                Err(_) => Err(format!("no answer within {} ms", timeout.as_millis()).into()),
            }
        });
        task.await.map_err(|e| -> HttpError { format!("export task failed: {e}").into() })?
    }
}

async fn send(request: http::Request<Bytes>) -> Result<http::Response<Bytes>, HttpError> {
    let (mut parts, body) = request.into_parts();
    if parts.uri.scheme_str() != Some("http") {
        return Err(format!("{}: only http:// OTLP endpoints are supported (use a local collector)", parts.uri).into());
    }
    let host = parts.uri.host().ok_or("the OTLP endpoint has no host")?.trim_matches(['[', ']']).to_owned();
    let port = parts.uri.port_u16().unwrap_or(80);
    let authority = parts.uri.authority().map(|a| a.as_str().to_owned()).unwrap_or_default();
    let stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    let connection = tokio::spawn(conn);
    // Origin form and a Host header, as an HTTP/1.1 server expects.
    parts.uri = parts.uri.path_and_query().map_or("/", |p| p.as_str()).parse()?;
    parts.headers.insert(http::header::HOST, http::HeaderValue::from_str(&authority)?);
    let answer = sender.send_request(http::Request::from_parts(parts, Full::new(body))).await;
    let result = match answer {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            match Limited::new(body, MAX_RESPONSE).collect().await {
                Ok(b) => Ok(http::Response::from_parts(parts, b.to_bytes())),
                Err(e) => Err(format!("reading the collector's answer: {e}").into()),
            }
        }
        Err(e) => Err(e.into()),
    };
    connection.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-connection server that answers with `reply` (or never, when `None`).
    async fn server(reply: Option<Vec<u8>>) -> (String, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/metrics", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") || !got.ends_with(b"payload") {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            match reply {
                Some(r) => {
                    let _ = s.write_all(&r).await;
                }
                None => tokio::time::sleep(Duration::from_secs(30)).await,
            }
            got
        });
        (url, task)
    }

    fn post(url: &str) -> http::Request<Bytes> {
        http::Request::post(url)
            .header("content-type", "application/x-protobuf")
            .body(Bytes::from_static(b"payload"))
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_goes_out_in_origin_form_with_its_host_and_the_answer_comes_back() {
        let (url, seen) = server(Some(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec())).await;
        let client = Client::new(Duration::from_secs(5));
        let answer = client.send_bytes(post(&url)).await.unwrap();
        assert_eq!((answer.status().as_u16(), answer.body().as_ref()), (200, &b"ok"[..]));
        let seen = String::from_utf8(seen.await.unwrap()).unwrap();
        let host = url.trim_start_matches("http://").split('/').next().unwrap();
        assert!(seen.starts_with("POST /v1/metrics HTTP/1.1\r\n"), "{seen}");
        assert!(seen.to_ascii_lowercase().contains(&format!("host: {host}\r\n")), "{seen}");
        assert!(seen.ends_with("\r\n\r\npayload"), "{seen}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hostile_collector_gets_a_timeout_a_size_limit_and_no_tls() {
        // Silent: the export gives up after its timeout.
        let (url, _silent) = server(None).await;
        let client = Client::new(Duration::from_millis(300));
        let started = std::time::Instant::now();
        let e = client.send_bytes(post(&url)).await.unwrap_err().to_string();
        assert!(e.contains("no answer within 300 ms"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(3));
        // Huge: read up to the limit, then refused.
        let mut huge = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", 10 * MAX_RESPONSE).into_bytes();
        huge.extend(std::iter::repeat_n(b'x', 10 * MAX_RESPONSE));
        let (url, _) = server(Some(huge)).await;
        let e = Client::new(Duration::from_secs(5)).send_bytes(post(&url)).await.unwrap_err().to_string();
        assert!(e.contains("reading the collector's answer"), "{e}");
        // Garbage instead of HTTP: an error, not a panic.
        let (url, _) = server(Some(b"\x00\xffnot http at all\r\n\r\n".to_vec())).await;
        assert!(Client::new(Duration::from_secs(5)).send_bytes(post(&url)).await.is_err());
        // https:// is refused before anything is sent.
        let e = Client::new(Duration::from_secs(5)).send_bytes(post("https://127.0.0.1:4318/v1/traces")).await;
        assert!(e.unwrap_err().to_string().contains("only http://"));
    }
}
