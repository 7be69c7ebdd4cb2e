//! gRPC channels over unix sockets.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// A socket could not be dialled.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to {}: {source}", path.display())]
pub struct DialError {
    pub path: PathBuf,
    #[source]
    pub source: tonic::transport::Error,
}

/// The socket path of an endpoint as plugins write it: `unix:///x.sock`, `unix://x.sock` or a
/// plain path.
pub fn socket_path(endpoint: &str) -> PathBuf {
    PathBuf::from(endpoint.strip_prefix("unix://").unwrap_or(endpoint))
}

/// The endpoint settings; its URI is never used to connect: the connectors always dial the
/// socket path.
fn endpoint() -> Endpoint {
    Endpoint::from_static("http://[::1]:50051").connect_timeout(Duration::from_secs(5))
}

/// Connects to a unix socket now (fails if nothing listens).
pub async fn dial(path: &Path) -> Result<Channel, DialError> {
    let p = path.to_path_buf();
    endpoint()
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let p = p.clone();
            async move { UnixStream::connect(p).await.map(TokioIo::new) }
        }))
        .await
        .map_err(|source| DialError {
            path: path.to_path_buf(),
            source,
        })
}

/// A channel that connects on first use and reconnects after the peer restarts.
pub fn dial_lazy(path: &Path) -> Channel {
    let p = path.to_path_buf();
    endpoint().connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
        let p = p.clone();
        async move { UnixStream::connect(p).await.map(TokioIo::new) }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_become_paths() {
        assert_eq!(
            socket_path("unix:///csi/csi.sock"),
            PathBuf::from("/csi/csi.sock")
        );
        assert_eq!(socket_path("/csi/csi.sock"), PathBuf::from("/csi/csi.sock"));
        assert_eq!(socket_path("unix://csi.sock"), PathBuf::from("csi.sock"));
    }
}
