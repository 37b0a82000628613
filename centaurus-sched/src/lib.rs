//! Scheduling: one resource pool for container and VM pods.
//!
//! The plug-in points are [`FilterPlugin`] and [`ScorePlugin`]; the queue, the node cache,
//! the default plugins and the binder come with the compute work.

use centaurus_core::model::{Node, Pod};

/// Rules a node out for a pod.
pub trait FilterPlugin: Send + Sync + 'static {
    /// The plugin's name, for events and logs.
    fn name(&self) -> &'static str;
    /// `Err(reason)` when `node` cannot run `pod`.
    fn filter(&self, pod: &Pod, node: &Node) -> Result<(), String>;
}

/// Ranks the nodes that passed every filter.
pub trait ScorePlugin: Send + Sync + 'static {
    /// The plugin's name.
    fn name(&self) -> &'static str;
    /// A score from 0 (worst) to 100 (best).
    fn score(&self, pod: &Pod, node: &Node) -> u8;
}
