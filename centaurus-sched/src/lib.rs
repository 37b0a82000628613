//! Scheduling: one resource pool for container and VM pods.
//!
//! - [`SchedulingQueue`]: pods by priority, with backoff for those that fit nowhere.
//! - [`ClusterState`]: every node and what is placed on it, fed by watches; the search
//!   visits zones in turn and stops after a fixed number of feasible nodes.
//! - [`FilterPlugin`] and [`ScorePlugin`]: the plug-in points, with the defaults —
//!   resource fit over cpu, memory, pods and VM slots, workload type, node selector,
//!   taints, zone spread of a controller's pods and least-allocated packing.
//! - [`Binder`]: optimistic binding; [`LedgerBinder`] lets several schedulers share nodes,
//!   [`PartitionBinder`] the schedulers of several tenant partitions the nodes of several
//!   resource partitions.
//! - [`Scheduler`]: the loop that ties them together.

pub mod binder;
pub mod cluster;
pub mod plugins;
pub mod queue;
pub mod resources;
pub mod scheduler;

pub use binder::{BindError, Binder, LedgerBinder, PartitionBinder, PodBinder};
pub use cluster::{ClusterState, NodeState, PodInfo, Unschedulable};
pub use plugins::{FilterPlugin, ScorePlugin};
pub use queue::SchedulingQueue;
pub use resources::Resources;
pub use scheduler::{DEFAULT_SCHEDULER, Scheduler, SchedulerConfig, SchedulerStats};
