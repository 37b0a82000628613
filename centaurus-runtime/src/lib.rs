//! Node runtimes and the unified node agent: container pods through runc, VM pods through
//! QEMU, simulated pods for scale tests, all behind one CRI-shaped [`Runtime`] trait.
//!
//! Only the trait is defined so far; implementations come with the compute work.

use async_trait::async_trait;
use centaurus_core::model::Pod;

/// Runs the workloads of pods on one node.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Creates the pod's sandbox and starts its containers or VM.
    async fn run_pod(&self, pod: &Pod) -> Result<(), String>;
    /// Stops and removes everything the pod had.
    async fn remove_pod(&self, pod: &Pod) -> Result<(), String>;
}
