//! Counts every call of the public API by method and status code, and times it, as a tower
//! layer around all services (`switchboard_grpc_requests_total`, `..._request_seconds`).
//!
//! The status of a failed call usually travels in the response headers (a trailers-only
//! response); that of a successful one, and of every streaming call, in the trailers at the end
//! of the body, so the body is watched until they pass. A call dropped before its status counts
//! as `DEADLINE_EXCEEDED` once its `grpc-timeout` has passed, else as `CANCELLED`. Only the
//! methods the node serves have their own label; any other path is `unknown`.

use crate::metrics::{GRPC_REQUEST_SECONDS, GRPC_REQUESTS_TOTAL};
use http_body::{Frame, SizeHint};
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
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
        // Recorded from the call's arrival: a call dropped before it is answered (its deadline
        // passed in tonic's timeout layer, outside this one, or the client went away) counts too.
        let mut call = Call {
            method: Some(method_label(request.uri().path())),
            started: Instant::now(),
            deadline: request.headers().get("grpc-timeout").and_then(|value| grpc_timeout(value.as_bytes())),
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = match response.await {
                Ok(response) => response,
                Err(error) => {
                    call.finish("UNKNOWN");
                    return Err(error);
                }
            };
            let (parts, body) = response.into_parts();
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
    method: Option<&'static str>,
    started: Instant,
    /// The client's deadline (`grpc-timeout`), if it gave one.
    deadline: Option<Duration>,
}

impl Call {
    fn finish(&mut self, code: &'static str) {
        let Some(method) = self.method.take() else { return };
        metrics::histogram!(GRPC_REQUEST_SECONDS, "method" => method).record(self.started.elapsed().as_secs_f64());
        metrics::counter!(GRPC_REQUESTS_TOTAL, "method" => method, "code" => code).increment(1);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // Dropped unanswered: by the deadline, if it has passed, else by the client.
        let expired = self.deadline.is_some_and(|deadline| self.started.elapsed() >= deadline);
        self.finish(if expired { "DEADLINE_EXCEEDED" } else { "CANCELLED" });
    }
}

/// A `grpc-timeout` header value (`<digits><unit>`, unit one of H M S m u n).
fn grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(amount.saturating_mul(3600)),
        b"M" => Duration::from_secs(amount.saturating_mul(60)),
        b"S" => Duration::from_secs(amount),
        b"m" => Duration::from_millis(amount),
        b"u" => Duration::from_micros(amount),
        b"n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Every method this node serves, as `Service/Method` labels: the public API's (package
/// `switchboard.v1` dropped), health's and reflection's, read from their descriptors once.
fn known_methods() -> &'static BTreeSet<String> {
    static KNOWN: OnceLock<BTreeSet<String>> = OnceLock::new();
    KNOWN.get_or_init(|| {
        let mut known = BTreeSet::new();
        for set in [
            switchboard_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ] {
            let Ok(set) = <prost_types::FileDescriptorSet as prost::Message>::decode(set) else { continue };
            for file in set.file {
                let package = file.package.unwrap_or_default();
                for service in file.service {
                    let service_name = service.name.unwrap_or_default();
                    for method in service.method {
                        let path = format!("{package}.{service_name}/{}", method.name.unwrap_or_default());
                        known.insert(path.strip_prefix("switchboard.v1.").map(str::to_owned).unwrap_or(path));
                    }
                }
            }
        }
        known
    })
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
/// kept) for a method this node serves; `unknown` for any other path, so that made-up paths add
/// no series.
fn method_label(path: &str) -> &'static str {
    let path = path.strip_prefix('/').unwrap_or(path);
    let path = path.strip_prefix("switchboard.v1.").unwrap_or(path);
    known_methods().get(path).map_or("unknown", String::as_str)
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
    use super::{code_label, grpc_timeout, method_label};

    #[test]
    fn methods_and_codes_are_named_as_operators_read_them() {
        assert_eq!(method_label("/switchboard.v1.Assignments/Claim"), "Assignments/Claim");
        assert_eq!(method_label("/switchboard.v1.Cluster/ExportSnapshot"), "Cluster/ExportSnapshot");
        assert_eq!(method_label("/grpc.health.v1.Health/Check"), "grpc.health.v1.Health/Check");
        assert_eq!(method_label("/switchboard.v1.Assignments/Nope"), "unknown");
        assert_eq!(method_label(&format!("/{}", "x".repeat(500))), "unknown");
        assert_eq!(code_label(b"0"), "OK");
        assert_eq!(code_label(b"14"), "UNAVAILABLE");
        assert_eq!(code_label(b"nonsense"), "UNKNOWN");
        assert_eq!(grpc_timeout(b"250m"), Some(std::time::Duration::from_millis(250)));
        assert_eq!(grpc_timeout(b"2S"), Some(std::time::Duration::from_secs(2)));
        assert_eq!(grpc_timeout(b"S"), None);
        assert_eq!(grpc_timeout(b""), None);
    }
}
