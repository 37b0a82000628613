//! CPU-bound request work (decoding bodies, applying patches, encoding lists) runs here,
//! on the blocking pool, so it never holds the threads that serve requests, watches and
//! heartbeats. At most `jobs` run at once, and one tenant holds at most half of them, so
//! a tenant that floods the server with costly requests waits for its own turn and never
//! for another tenant's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

use crate::error::{ApiError, ApiResult};

/// Work this small (in bytes of input) runs inline: handing it over would cost more.
pub(crate) const INLINE: usize = 16 * 1024;

/// The pool of CPU-bound request work.
pub(crate) struct CpuPool {
    jobs: Semaphore,
    share: usize,
    tenants: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl CpuPool {
    /// A pool running `jobs` jobs at once, half of them at most for one tenant.
    pub(crate) fn new(jobs: usize) -> Self {
        let jobs = jobs.max(1);
        Self {
            jobs: Semaphore::new(jobs),
            share: jobs.div_ceil(2),
            tenants: Mutex::default(),
        }
    }

    /// Runs `work` for `tenant`: inline when its input is `size` bytes or fewer
    /// ([`INLINE`]), else on the blocking pool once the tenant's share and the pool allow.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        tenant: &str,
        size: usize,
        work: impl FnOnce() -> ApiResult<T> + Send + 'static,
    ) -> ApiResult<T> {
        if size <= INLINE {
            return work();
        }
        let share = self
            .tenants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(tenant.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.share)))
            .clone();
        let stopping = |_| ApiError::internal("the server is stopping");
        let _mine = share.acquire().await.map_err(stopping)?;
        let _job = self.jobs.acquire().await.map_err(stopping)?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| ApiError::internal(format!("request work failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_tenant_never_holds_the_whole_pool() {
        let pool = Arc::new(CpuPool::new(2));
        // A hostile tenant queues slow jobs.
        let mut hostile = Vec::new();
        for _ in 0..6 {
            let pool = pool.clone();
            hostile.push(tokio::spawn(async move {
                pool.run("mallory", INLINE + 1, || {
                    std::thread::sleep(Duration::from_millis(200));
                    Ok(())
                })
                .await
            }));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = Instant::now();
        pool.run("acme", INLINE + 1, || Ok(())).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(150),
            "another tenant waited {:?}",
            started.elapsed()
        );
        for h in hostile {
            h.await.unwrap().unwrap();
        }
    }
}
