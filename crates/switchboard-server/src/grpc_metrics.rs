//! Counts every call of the public API by method and status code, and times it, as a tower
//! layer around all services (`switchboard_grpc_requests_total`, `..._request_seconds`).
//!
//! The status of a failed call usually travels in the response headers (a trailers-only
//! response); that of a successful one, and of every streaming call, in the trailers at the end
//! of the body, so the body is watched until they pass. A body dropped before its status (the
//! client went away) counts as `CANCELLED`.

use crate::metrics::{GRPC_REQUEST_SECONDS, GRPC_REQUESTS_TOTAL};
use http_body::{Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;
use tonic::body::Body;

/// The layer: `Server::builder().layer(GrpcMetricsLayer)`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct GrpcMetricsLayer;

impl<S> tower_layer::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics { inner }
    }
}

/// The services, measured.
#[derive(Clone, Debug)]
pub(crate) struct GrpcMetrics<S> {
    inner: S,
}

impl<S, B> tower_service::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = method_label(request.uri().path());
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            let (parts, body) = response.into_parts();
            let mut call = Call { method: Some(method), started };
            if let Some(code) = parts.headers.get("grpc-status").map(|value| code_label(value.as_bytes())) {
                call.finish(code);
                return Ok(http::Response::from_parts(parts, body));
            }
            Ok(http::Response::from_parts(parts, Body::new(Watched { inner: body, call })))
        })
    }
}

/// One call whose status is not recorded yet.
struct Call {
    /// `None` once recorded.
    method: Option<String>,
    started: Instant,
}

impl Call {
    fn finish(&mut self, code: &'static str) {
        let Some(method) = self.method.take() else { return };
        // A call to no method gets UNIMPLEMENTED from the router: made-up paths share one series.
        let method = if code == "UNIMPLEMENTED" { "unknown".to_owned() } else { method };
        metrics::histogram!(GRPC_REQUEST_SECONDS, "method" => method.clone())
            .record(self.started.elapsed().as_secs_f64());
        metrics::counter!(GRPC_REQUESTS_TOTAL, "method" => method, "code" => code).increment(1);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish("CANCELLED");
    }
}

/// A response body whose trailers (or error) give the call's status.
struct Watched {
    inner: Body,
    call: Call,
}

impl http_body::Body for Watched {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = trailers.get("grpc-status").map_or("UNKNOWN", |value| code_label(value.as_bytes()));
                    self.call.finish(code);
                }
            }
            Poll::Ready(Some(Err(status))) => self.call.finish(code_name(status.code())),
            // The body ended without trailers: no status reached the client.
            Poll::Ready(None) => self.call.finish("UNKNOWN"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `Service/Method` from `/package.Service/Method` (`switchboard.v1.` dropped, other packages
/// kept), at most 128 bytes.
fn method_label(path: &str) -> String {
    let path = path.strip_prefix('/').unwrap_or(path);
    let path = path.strip_prefix("switchboard.v1.").unwrap_or(path);
    let mut end = path.len().min(128);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    path[..end].to_owned()
}

fn code_label(value: &[u8]) -> &'static str {
    code_name(tonic::Code::from_bytes(value))
}

/// The canonical upper-case name of a gRPC status code.
pub(crate) fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::{code_label, method_label};

    #[test]
    fn methods_and_codes_are_named_as_operators_read_them() {
        assert_eq!(method_label("/switchboard.v1.Assignments/Claim"), "Assignments/Claim");
        assert_eq!(method_label("/grpc.health.v1.Health/Check"), "grpc.health.v1.Health/Check");
        assert_eq!(method_label(&format!("/{}", "x".repeat(500))).len(), 128);
        assert_eq!(code_label(b"0"), "OK");
        assert_eq!(code_label(b"14"), "UNAVAILABLE");
        assert_eq!(code_label(b"nonsense"), "UNKNOWN");
    }
}
