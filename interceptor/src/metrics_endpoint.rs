//! [`serve_metrics`]: `GET /metrics` over HTTP/1.1 on a [`Listener`], for
//! services that export the `metrics` facade's series (tokend, resource
//! services, tokend-gate) with a Prometheus recorder of their choice.
//!
//! Unlike an exporter's own listener, it keeps the listener's limits: a
//! capped number of connections, a deadline for the first bytes, and no
//! idle keep-alive connection left open (each scrape closes its
//! connection, so nobody can hold hundreds open).

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_stream::StreamExt;
use tracing::debug;

use crate::listener::Listener;

/// The content type of the Prometheus text exposition.
const EXPOSITION: &str = "text/plain; version=0.0.4";

/// Serves `render()` (a Prometheus text exposition) on `GET /metrics` of
/// `listener`'s connections, on a task of its own, for the process's life.
/// Other paths are 404, other methods 405. Must be called within a Tokio
/// runtime.
pub fn serve_metrics(listener: Listener, render: impl Fn() -> String + Send + Sync + 'static) {
    let render = Arc::new(render);
    let mut incoming = listener.plaintext();
    tokio::spawn(async move {
        while let Some(connection) = incoming.next().await {
            let Ok(connection) = connection else { continue };
            let render = Arc::clone(&render);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let render = Arc::clone(&render);
                    async move { Ok::<_, Infallible>(answer(&request, || render())) }
                });
                let served = hyper::server::conn::http1::Builder::new()
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(connection), service)
                    .await;
                if let Err(err) = served {
                    debug!(error = %err, "metrics connection ended with an error");
                }
            });
        }
    });
}

/// The answer to one request.
fn answer(request: &Request<Incoming>, render: impl Fn() -> String) -> Response<Full<Bytes>> {
    let status = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => {
            let mut response = Response::new(Full::new(Bytes::from(render())));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(EXPOSITION));
            return response;
        }
        (_, "/metrics") => StatusCode::METHOD_NOT_ALLOWED,
        _ => StatusCode::NOT_FOUND,
    };
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}
