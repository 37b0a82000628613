//! Simulated pods: every workload is running as soon as it starts. Hollow nodes use it to
//! put the control plane under the load of a large region on one machine.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use centaurus_core::model::{self, Pod, PodAction};

use crate::{Result, Runtime, RuntimeError, SandboxNetwork, WorkloadState, WorkloadStatus};

/// A runtime that only keeps state in memory.
#[derive(Default)]
pub struct HollowRuntime {
    workloads: Mutex<HashMap<(String, String), WorkloadStatus>>,
}

impl HollowRuntime {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), WorkloadStatus>> {
        self.workloads.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Workloads held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl Runtime for HollowRuntime {
    fn name(&self) -> &'static str {
        "hollow"
    }

    fn poll_interval(&self) -> Option<std::time::Duration> {
        None
    }

    async fn create_sandbox(&self, _: &Pod, _: &SandboxNetwork) -> Result<()> {
        Ok(())
    }

    async fn stop_sandbox(&self, pod_uid: &str) -> Result<()> {
        for (k, w) in self.lock().iter_mut() {
            if k.0 == pod_uid {
                w.state = WorkloadState::Exited {
                    code: 0,
                    reason: "Completed".into(),
                    started_at: None,
                    finished_at: model::now(),
                };
            }
        }
        Ok(())
    }

    async fn remove_sandbox(&self, pod_uid: &str) -> Result<()> {
        self.lock().retain(|k, _| k.0 != pod_uid);
        Ok(())
    }

    async fn create_workload(&self, pod: &Pod, name: &str) -> Result<()> {
        let uid = &pod.metadata.uid;
        self.lock().insert(
            (uid.clone(), name.to_owned()),
            WorkloadStatus {
                name: name.to_owned(),
                state: WorkloadState::Created,
                id: format!("hollow://{uid}/{name}"),
                ready: false,
                reboots: 0,
            },
        );
        Ok(())
    }

    async fn start_workload(&self, pod_uid: &str, name: &str) -> Result<()> {
        let mut w = self.lock();
        let s = w
            .get_mut(&(pod_uid.to_owned(), name.to_owned()))
            .ok_or_else(|| RuntimeError::NotFound(format!("workload {pod_uid}/{name}")))?;
        s.state = WorkloadState::Running {
            started_at: model::now(),
        };
        s.ready = true;
        Ok(())
    }

    async fn stop_workload(&self, pod_uid: &str, name: &str, _: std::time::Duration) -> Result<()> {
        if let Some(s) = self.lock().get_mut(&(pod_uid.to_owned(), name.to_owned())) {
            s.state = WorkloadState::Exited {
                code: 0,
                reason: "Completed".into(),
                started_at: None,
                finished_at: model::now(),
            };
        }
        Ok(())
    }

    async fn remove_workload(&self, pod_uid: &str, name: &str) -> Result<()> {
        self.lock().remove(&(pod_uid.to_owned(), name.to_owned()));
        Ok(())
    }

    async fn workload_status(&self, pod_uid: &str, name: &str) -> Result<WorkloadStatus> {
        self.lock()
            .get(&(pod_uid.to_owned(), name.to_owned()))
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound(format!("workload {pod_uid}/{name}")))
    }

    async fn logs(&self, pod_uid: &str, name: &str) -> Result<Vec<u8>> {
        self.workload_status(pod_uid, name).await?;
        Ok(format!("hollow workload {name} of pod {pod_uid}\n").into_bytes())
    }

    async fn usage(
        &self,
        pod_uid: &str,
        name: &str,
    ) -> Result<Option<centaurus_core::remote::Usage>> {
        let running = matches!(
            self.lock()
                .get(&(pod_uid.to_owned(), name.to_owned()))
                .map(|w| &w.state),
            Some(WorkloadState::Running { .. })
        );
        Ok(running.then(|| crate::usage::simulated(&format!("{pod_uid}/{name}"))))
    }

    async fn vm_action(&self, pod_uid: &str, name: &str, action: &PodAction) -> Result<String> {
        let mut w = self.lock();
        let s = w
            .get_mut(&(pod_uid.to_owned(), name.to_owned()))
            .ok_or_else(|| RuntimeError::NotFound(format!("workload {pod_uid}/{name}")))?;
        if action.reboot_action.is_some() {
            s.reboots += 1;
            return Ok("rebooted".into());
        }
        Ok("done (simulated)".into())
    }
}
