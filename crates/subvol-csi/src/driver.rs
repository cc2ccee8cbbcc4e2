//! What every service shares: where the pool is and which node this is.
//! The pool is opened for each call, so the driver holds no state of its
//! own: a restarted driver sees what the pool and the kernel's tables show,
//! as the CLI does.

use crate::status::status;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use subvol_pool::Pool;
use tonic::Status;

/// How long a call waits for the pool lock before it fails
/// (FAILED_PRECONDITION; the CO retries). Below the sidecars' call timeouts.
const LOCK_WAIT: Duration = Duration::from_secs(50);

#[derive(Clone)]
pub(crate) struct Driver {
    pub pool_dir: Arc<PathBuf>,
    pub node_id: Arc<String>,
    /// NodeGetInfo's max_volumes_per_node (0: no limit of the driver's own;
    /// loop devices are made on demand).
    pub max_volumes: i64,
    /// See `Config::background`.
    pub background: Option<fn(&std::path::Path, &[String]) -> bool>,
}

impl Driver {
    /// Runs `f` with the pool on a blocking thread (pool calls do I/O and
    /// may wait for the pool lock).
    pub(crate) async fn with_pool<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Pool) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        let dir = self.pool_dir.clone();
        let background = self.background;
        tokio::task::spawn_blocking(move || {
            let mut pool = Pool::open(&dir).map_err(status)?;
            pool.set_lock_wait(LOCK_WAIT, Box::new(|| {}));
            if let Some(start) = background {
                pool.set_background(Box::new(start));
            }
            f(&pool)
        })
        .await
        .map_err(|e| Status::internal(format!("the call failed inside the driver: {e}")))?
    }
}
