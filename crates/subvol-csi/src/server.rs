//! Serving: a Unix socket, the three services, a clean stop on SIGTERM or
//! SIGINT (the socket file goes with it).

use crate::authority::Rewrite;
use crate::driver::Driver;
use crate::proto::controller_server::ControllerServer;
use crate::proto::identity_server::IdentityServer;
use crate::proto::node_server::NodeServer;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_stream::StreamExt;

/// What `subvol csi` was given.
#[derive(Debug, Clone)]
pub struct Config {
    /// `unix:///path/csi.sock`, `unix:/path/csi.sock` or a plain path.
    pub endpoint: String,
    pub node_id: String,
    pub pool: PathBuf,
    /// NodeGetInfo's max_volumes_per_node (0: none of the driver's own).
    pub max_volumes: i64,
    /// How new snapshots get their manifests off the call's path (the CLI
    /// starts a detached copy of itself); `None` builds them inside
    /// CreateSnapshot.
    pub background: Option<fn(&std::path::Path, &[String]) -> bool>,
}

/// The socket path of an endpoint.
fn socket_path(endpoint: &str) -> Result<PathBuf, String> {
    let path = endpoint.strip_prefix("unix://").or_else(|| endpoint.strip_prefix("unix:")).unwrap_or(endpoint);
    if !path.starts_with('/') {
        return Err(format!("endpoint {endpoint:?} is not a Unix socket path; give unix:///path/csi.sock"));
    }
    Ok(PathBuf::from(path))
}

/// Removes a socket left by a driver that died (only a socket: never a
/// file that is something else).
fn remove_stale(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|e| format!("cannot remove the old socket {}: {e}", path.display()))
        }
        Ok(_) => Err(format!("{} exists and is not a socket; remove it or choose another endpoint", path.display())),
        Err(_) => Ok(()),
    }
}

/// Serves until SIGTERM or SIGINT. Errors are one line for the CLI.
pub fn serve(config: Config) -> Result<(), String> {
    if config.node_id.is_empty() {
        return Err("--node-id is required and must not be empty".into());
    }
    let path = socket_path(&config.endpoint)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        remove_stale(&path)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let listener = tokio::net::UnixListener::bind(&path)
            .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
        // Whoever can connect can mount and unmount as root: root only.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(|e| format!("cannot restrict {}: {e}", path.display()))?;
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener).map(|c| c.map(Rewrite::new));
        let driver = Driver {
            pool_dir: Arc::new(config.pool.clone()),
            node_id: Arc::new(config.node_id.clone()),
            max_volumes: config.max_volumes,
            background: config.background,
        };
        eprintln!(
            "subvol csi: serving {} for node {} on {} (pool {})",
            crate::DRIVER_NAME,
            config.node_id,
            path.display(),
            config.pool.display()
        );
        let stop = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
        };
        let served = tonic::transport::Server::builder()
            .add_service(IdentityServer::new(driver.clone()))
            .add_service(ControllerServer::new(driver.clone()))
            .add_service(NodeServer::new(driver))
            .serve_with_incoming_shutdown(incoming, stop)
            .await;
        let _ = std::fs::remove_file(&path);
        served.map_err(|e| format!("the gRPC server failed: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(socket_path("unix:///csi/csi.sock").unwrap(), PathBuf::from("/csi/csi.sock"));
        assert_eq!(socket_path("unix:/csi/csi.sock").unwrap(), PathBuf::from("/csi/csi.sock"));
        assert_eq!(socket_path("/csi/csi.sock").unwrap(), PathBuf::from("/csi/csi.sock"));
        assert!(socket_path("tcp://0.0.0.0:9000").is_err());
    }
}
