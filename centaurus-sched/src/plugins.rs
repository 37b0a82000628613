//! The plug-in points, [`FilterPlugin`] and [`ScorePlugin`], and the default plugins.

use std::sync::Arc;

use crate::cluster::{ClusterView, NodeState, PodInfo};

/// Rules a node out for a pod.
pub trait FilterPlugin: Send + Sync + 'static {
    /// The plugin's name, for logs.
    fn name(&self) -> &'static str;
    /// `Err(reason)` when `node` cannot run `pod`; equal reasons are counted together in
    /// the pod's `Unschedulable` message, so keep them free of node names.
    fn filter(&self, pod: &PodInfo, node: &NodeState) -> Result<(), String>;
}

/// Ranks the nodes that passed every filter.
pub trait ScorePlugin: Send + Sync + 'static {
    /// The plugin's name.
    fn name(&self) -> &'static str;
    /// A score from 0 (worst) to 100 (best).
    fn score(&self, pod: &PodInfo, node: &NodeState, cluster: &ClusterView<'_>) -> u8;
}

/// Nodes marked `unschedulable` take no new pods.
pub struct NodeUnschedulable;

impl FilterPlugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        "NodeUnschedulable"
    }
    fn filter(&self, pod: &PodInfo, node: &NodeState) -> Result<(), String> {
        let tolerated = pod
            .pod
            .spec
            .tolerations
            .iter()
            .any(|t| t.tolerates("node.kubernetes.io/unschedulable", "", "NoSchedule"));
        if node.node.spec.unschedulable && !tolerated {
            Err("node(s) were unschedulable".into())
        } else {
            Ok(())
        }
    }
}

/// Container pods need a node that runs containers, VM pods one that runs VMs.
pub struct WorkloadType;

impl FilterPlugin for WorkloadType {
    fn name(&self) -> &'static str {
        "WorkloadType"
    }
    fn filter(&self, pod: &PodInfo, node: &NodeState) -> Result<(), String> {
        if pod.pod.is_vm() && !node.runs_vms {
            Err("node(s) do not run VM pods".into())
        } else if !pod.pod.is_vm() && !node.runs_containers {
            Err("node(s) do not run container pods".into())
        } else {
            Ok(())
        }
    }
}

/// The pod's requests fit in what the node has left, counting container and VM pods in
/// one pool of cpu, memory and pods, plus VM slots.
pub struct NodeResourcesFit;

impl FilterPlugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }
    fn filter(&self, pod: &PodInfo, node: &NodeState) -> Result<(), String> {
        let over = node
            .requested
            .plus(pod.request)
            .exceeding(&node.allocatable);
        // A pod that requests none of a resource is not stopped by someone else's excess.
        let over: Vec<_> = over
            .into_iter()
            .filter(|r| match *r {
                "cpu" => pod.request.cpu_milli > 0,
                "memory" => pod.request.memory > 0,
                "vm" => pod.request.vms > 0,
                _ => true,
            })
            .collect();
        if over.is_empty() {
            Ok(())
        } else {
            Err(format!("Insufficient {}", over.join(", ")))
        }
    }
}

/// The node carries every label of the pod's `nodeSelector`.
pub struct NodeSelector;

impl FilterPlugin for NodeSelector {
    fn name(&self) -> &'static str {
        "NodeSelector"
    }
    fn filter(&self, pod: &PodInfo, node: &NodeState) -> Result<(), String> {
        let labels = &node.node.metadata.labels;
        if pod
            .pod
            .spec
            .node_selector
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
        {
            Ok(())
        } else {
            Err("node(s) didn't match Pod's node selector".into())
        }
    }
}

/// Every `NoSchedule` and `NoExecute` taint of the node is tolerated by the pod.
pub struct TaintToleration;

impl FilterPlugin for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }
    fn filter(&self, pod: &PodInfo, node: &NodeState) -> Result<(), String> {
        for taint in &node.node.spec.taints {
            if taint.effect == "PreferNoSchedule" {
                continue;
            }
            let ok = pod
                .pod
                .spec
                .tolerations
                .iter()
                .any(|t| t.tolerates(&taint.key, &taint.value, &taint.effect));
            if !ok {
                return Err(format!(
                    "node(s) had untolerated taint {{{}: {}}}",
                    taint.key, taint.value
                ));
            }
        }
        Ok(())
    }
}

/// Prefers nodes with the most cpu and memory left, in proportion to their size.
pub struct LeastAllocated;

impl ScorePlugin for LeastAllocated {
    fn name(&self) -> &'static str {
        "LeastAllocated"
    }
    fn score(&self, pod: &PodInfo, node: &NodeState, _: &ClusterView<'_>) -> u8 {
        let after = node.requested.plus(pod.request);
        let free = |used: i64, total: i64| {
            if total <= 0 {
                0
            } else {
                ((total - used).max(0) * 100 / total) as u64
            }
        };
        let cpu = free(after.cpu_milli, node.allocatable.cpu_milli);
        let mem = free(after.memory, node.allocatable.memory);
        ((cpu + mem) / 2) as u8
    }
}

/// Spreads the pods of one controller over availability zones: a node in a zone holding
/// the fewest of the pod's siblings scores 100, one sibling more 50, and so on.
pub struct ZoneSpread;

impl ScorePlugin for ZoneSpread {
    fn name(&self) -> &'static str {
        "ZoneSpread"
    }
    fn score(&self, pod: &PodInfo, node: &NodeState, cluster: &ClusterView<'_>) -> u8 {
        if pod.owner.is_none() || cluster.zone_count() < 2 {
            return 100;
        }
        let excess = cluster.siblings_in_zone(&node.zone) - cluster.fewest_siblings();
        (100 / (1 + excess)) as u8
    }
}

/// Spreads the pods of one controller over nodes (as kube-scheduler's default
/// `kubernetes.io/hostname` spread does), so losing a node loses as few of them as can be:
/// a node scores 100 less one for each sibling it holds beyond the fewest any feasible node
/// holds (linear, so every sibling more costs the same however many there are).
pub struct NodeSpread;

impl ScorePlugin for NodeSpread {
    fn name(&self) -> &'static str {
        "NodeSpread"
    }
    fn score(&self, pod: &PodInfo, node: &NodeState, cluster: &ClusterView<'_>) -> u8 {
        if pod.owner.is_none() {
            return 100;
        }
        let excess =
            cluster.siblings_on_node(&node.name) - cluster.fewest_siblings_on_a_feasible_node();
        100 - excess.min(100) as u8
    }
}

/// The default filters.
pub fn default_filters() -> Vec<Arc<dyn FilterPlugin>> {
    vec![
        Arc::new(NodeUnschedulable),
        Arc::new(WorkloadType),
        Arc::new(NodeSelector),
        Arc::new(TaintToleration),
        Arc::new(NodeResourcesFit),
    ]
}

/// The default scores and their weights: zone spread outweighs node spread and packing
/// together (a zone with the fewest siblings scores 550 more than one with a sibling more;
/// the other two span 500), and a sibling less on a node (4) outweighs the free share one
/// small pod takes (LeastAllocated's 0 to 3 points).
pub fn default_scores() -> Vec<(Arc<dyn ScorePlugin>, u32)> {
    vec![
        (Arc::new(ZoneSpread), 11),
        (Arc::new(NodeSpread), 4),
        (Arc::new(LeastAllocated), 1),
    ]
}
