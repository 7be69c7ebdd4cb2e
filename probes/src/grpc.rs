//! gRPC probes: `grpc.health.v1.Health/Check` over plaintext HTTP/2, with the kubelet's
//! messages (kubernetes pkg/probe/grpc/grpc.go). The two messages are written by hand (no
//! codegen); the call goes through `tonic::client::Grpc` with the prost codec.

use std::time::{Duration, Instant};

use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Endpoint;

use crate::Outcome;

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    pub service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckResponse {
    #[prost(enumeration = "ServingStatus", tag = "1")]
    pub status: i32,
}

/// `grpc.health.v1.HealthCheckResponse.ServingStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ServingStatus {
    Unknown = 0,
    Serving = 1,
    NotServing = 2,
    ServiceUnknown = 3,
}

impl ServingStatus {
    /// The proto name, as Go's `String()` prints it.
    fn proto_name(v: i32) -> String {
        match ServingStatus::try_from(v) {
            Ok(ServingStatus::Unknown) => "UNKNOWN".into(),
            Ok(ServingStatus::Serving) => "SERVING".into(),
            Ok(ServingStatus::NotServing) => "NOT_SERVING".into(),
            Ok(ServingStatus::ServiceUnknown) => "SERVICE_UNKNOWN".into(),
            Err(_) => v.to_string(),
        }
    }
}

/// The full error chain, `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(&format!(": {c}"));
        cur = c.source();
    }
    s
}

/// One health check of `service` at `host:port`, bounded by `timeout`. SERVING is a success;
/// any other status, an error or a timeout is a failure with the kubelet's message.
pub async fn grpc(host: &str, port: u16, service: &str, timeout: Duration) -> Outcome {
    let target = crate::addr(host, port);
    let deadline = Instant::now() + timeout;
    let endpoint = match Endpoint::from_shared(format!("http://{target}"))
        .and_then(|e| e.user_agent("kube-probe/1.36"))
    {
        Ok(e) => e.connect_timeout(timeout),
        Err(e) => {
            return Outcome::Failure(format!(
                "error: failed to connect service at {target:?}: {}",
                chain(&e)
            ))
        }
    };
    let channel = match tokio::time::timeout(timeout, endpoint.connect()).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            return Outcome::Failure(format!(
                "error: failed to connect service at {target:?}: {}",
                chain(&e)
            ))
        }
        Err(_) => {
            return Outcome::Failure(format!(
                "timeout: failed to connect service {target:?} within {timeout:?}: context deadline exceeded"
            ))
        }
    };
    let mut client = tonic::client::Grpc::new(channel);
    let call = async {
        client.ready().await.map_err(|e| {
            tonic::Status::unavailable(format!("service was not ready: {}", chain(&e)))
        })?;
        let mut req = tonic::Request::new(HealthCheckRequest {
            service: service.to_string(),
        });
        req.set_timeout(deadline.saturating_duration_since(Instant::now()));
        client
            .unary::<_, HealthCheckResponse, _>(
                req,
                PathAndQuery::from_static("/grpc.health.v1.Health/Check"),
                tonic_prost::ProstCodec::default(),
            )
            .await
    };
    let left = deadline.saturating_duration_since(Instant::now());
    let resp = match tokio::time::timeout(left, call).await {
        Err(_) => {
            return Outcome::Failure(format!(
                "timeout: health rpc did not complete within {timeout:?}"
            ))
        }
        Ok(Err(st)) => {
            return Outcome::Failure(match st.code() {
                tonic::Code::Unimplemented => format!(
                    "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {}",
                    st.message()
                ),
                // tonic reports its own deadline (the grpc-timeout it sent) as Cancelled.
                _ if Instant::now() >= deadline => {
                    format!("timeout: health rpc did not complete within {timeout:?}")
                }
                tonic::Code::DeadlineExceeded => {
                    format!("timeout: health rpc did not complete within {timeout:?}")
                }
                code => format!(
                    "error: health rpc probe failed: rpc error: code = {code:?} desc = {}",
                    st.message()
                ),
            });
        }
        Ok(Ok(r)) => r.into_inner(),
    };
    if resp.status == ServingStatus::Serving as i32 {
        Outcome::Success
    } else {
        Outcome::Failure(format!(
            "service unhealthy (responded with {:?})",
            ServingStatus::proto_name(resp.status)
        ))
    }
}
