//! The scheduler's view of the region: every node with what is placed on it, kept from
//! watches and from the scheduler's own assumptions, and the search for a node.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use centaurus_core::model::{LABEL_ZONE, Node, Pod, Resource};

use crate::plugins::{FilterPlugin, ScorePlugin};
use crate::resources::Resources;

/// A pod as the scheduler sees it.
#[derive(Clone, Debug)]
pub struct PodInfo {
    /// Store key.
    pub key: String,
    /// The pod.
    pub pod: Arc<Pod>,
    /// What it requests.
    pub request: Resources,
    /// UID of its controller (a ReplicaSet), for spreading its siblings.
    pub owner: Option<String>,
}

impl PodInfo {
    /// Wraps a pod.
    pub fn new(pod: Pod) -> Self {
        Self {
            key: pod.key(),
            request: Resources::of_pod(&pod.spec),
            owner: pod.metadata.controller_ref().map(|r| r.uid.clone()),
            pod: Arc::new(pod),
        }
    }
}

/// A node and what the scheduler has placed on it.
#[derive(Clone, Debug)]
pub struct NodeState {
    /// The node's name.
    pub name: String,
    /// The node as last seen.
    pub node: Arc<Node>,
    /// Its availability zone (`topology.kubernetes.io/zone`), empty when unlabelled.
    pub zone: String,
    /// What pods may use.
    pub allocatable: Resources,
    /// What the pods placed on it request, and what other tenant partitions' schedulers
    /// booked on it ([`NodeState::foreign`]).
    pub requested: Resources,
    /// What other tenant partitions' schedulers booked on it (in its ledger), counted in
    /// `requested`.
    pub foreign: Resources,
    /// The resource partition it belongs to (an index into the scheduler's; 0 when there
    /// is one region).
    pub partition: usize,
    /// True when it runs container pods.
    pub runs_containers: bool,
    /// True when it runs VM pods.
    pub runs_vms: bool,
}

impl NodeState {
    /// Reads a node.
    pub fn new(node: Node) -> Self {
        let status = node.status.clone().unwrap_or_default();
        let types = &status.node_info.workload_types;
        let allocatable = if status.allocatable.is_empty() {
            Resources::of_list(&status.capacity)
        } else {
            Resources::of_list(&status.allocatable)
        };
        Self {
            name: node.metadata.name.clone(),
            zone: node
                .metadata
                .labels
                .get(LABEL_ZONE)
                .cloned()
                .unwrap_or_default(),
            allocatable,
            requested: Resources::default(),
            foreign: Resources::default(),
            partition: 0,
            runs_containers: types.is_empty() || types.iter().any(|t| t == "container"),
            runs_vms: types.iter().any(|t| t == "vm"),
            node: Arc::new(node),
        }
    }

    /// What is left.
    pub fn free(&self) -> Resources {
        self.allocatable.minus(self.requested)
    }
}

/// Takes one from `counts[owner][place]`, dropping entries that reach zero.
fn uncount(counts: &mut HashMap<String, HashMap<String, u32>>, owner: &str, place: &str) {
    if let Some(places) = counts.get_mut(owner) {
        if let Some(c) = places.get_mut(place) {
            *c -= 1;
            if *c == 0 {
                places.remove(place);
            }
        }
        if places.is_empty() {
            counts.remove(owner);
        }
    }
}

/// Where a placed pod is and what it takes.
#[derive(Clone, Debug)]
struct Placement {
    node: String,
    request: Resources,
    owner: Option<String>,
    zone: String,
}

/// Why no node was found: how many nodes each reason ruled out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unschedulable {
    /// Nodes considered.
    pub nodes: usize,
    /// Reason → number of nodes.
    pub reasons: BTreeMap<String, usize>,
}

impl std::fmt::Display for Unschedulable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0/{} nodes are available", self.nodes)?;
        let mut sep = ": ";
        for (reason, n) in &self.reasons {
            write!(f, "{sep}{n} {reason}")?;
            sep = ", ";
        }
        Ok(())
    }
}

/// Nodes and placements. Nodes are visited zone by zone in turn, each zone from where the
/// last search stopped, so consecutive pods see different nodes and every zone.
#[derive(Default)]
pub struct ClusterState {
    slots: Vec<Option<NodeState>>,
    free_slots: Vec<usize>,
    by_name: HashMap<String, usize>,
    zones: Vec<ZoneNodes>,
    placed: HashMap<String, Placement>,
    owner_zones: HashMap<String, HashMap<String, u32>>,
    /// Controller UID → node → its pods there.
    owner_nodes: HashMap<String, HashMap<String, u32>>,
    /// Placements on nodes not (yet) known, counted when the node appears.
    orphans: usize,
    /// The zone the next search starts in.
    zone_cursor: usize,
}

#[derive(Default)]
struct ZoneNodes {
    zone: String,
    slots: Vec<usize>,
    cursor: usize,
}

/// A read-only view for score plugins.
pub struct ClusterView<'a> {
    state: &'a ClusterState,
    owner_zones: Option<&'a HashMap<String, u32>>,
    owner_nodes: Option<&'a HashMap<String, u32>>,
    least: u32,
    least_on_feasible: u32,
}

impl ClusterView<'_> {
    /// Pods of the scheduled pod's controller on node `node`.
    pub fn siblings_on_node(&self, node: &str) -> u32 {
        self.owner_nodes
            .and_then(|n| n.get(node).copied())
            .unwrap_or(0)
    }

    /// The fewest siblings any node that passed the filters holds.
    pub fn fewest_siblings_on_a_feasible_node(&self) -> u32 {
        self.least_on_feasible
    }

    /// Pods of the scheduled pod's controller in `zone`.
    pub fn siblings_in_zone(&self, zone: &str) -> u32 {
        self.owner_zones
            .and_then(|z| z.get(zone).copied())
            .unwrap_or(0)
    }

    /// The fewest siblings any zone with nodes holds.
    pub fn fewest_siblings(&self) -> u32 {
        self.least
    }

    /// Number of zones with nodes.
    pub fn zone_count(&self) -> usize {
        self.state.zones.len()
    }
}

impl ClusterState {
    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.by_name.len()
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> Option<&NodeState> {
        self.by_name.get(name).and_then(|&s| self.slots[s].as_ref())
    }

    /// Every node.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeState> {
        self.slots.iter().flatten()
    }

    /// Adds or replaces a node, keeping what is placed on it.
    pub fn upsert_node(&mut self, node: Node) {
        self.upsert_node_of(0, node);
    }

    /// Adds or replaces a node of resource partition `partition`, keeping what is placed
    /// and booked on it.
    pub fn upsert_node_of(&mut self, partition: usize, node: Node) {
        let mut state = NodeState::new(node);
        state.partition = partition;
        if let Some(&slot) = self.by_name.get(&state.name) {
            let old = self.slots[slot].take().expect("indexed slots are filled");
            state.requested = old.requested;
            state.foreign = old.foreign;
            if old.zone != state.zone {
                self.unindex_zone(&old.zone, slot);
                self.index_zone(&state.zone, slot);
            }
            self.slots[slot] = Some(state);
            return;
        }
        let slot = match self.free_slots.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        if self.orphans > 0 {
            for p in self.placed.values_mut() {
                if p.node == state.name {
                    state.requested = state.requested.plus(p.request);
                    if let Some(zones) = p.owner.as_ref().and_then(|o| self.owner_zones.get_mut(o))
                    {
                        if let Some(c) = zones.get_mut(&p.zone) {
                            *c -= 1;
                        }
                        *zones.entry(state.zone.clone()).or_default() += 1;
                    }
                    p.zone.clone_from(&state.zone);
                    self.orphans -= 1;
                }
            }
        }
        self.by_name.insert(state.name.clone(), slot);
        self.index_zone(&state.zone, slot);
        self.slots[slot] = Some(state);
    }

    /// Sets what other partitions' schedulers booked on `node` (nothing for an unknown
    /// node).
    pub fn set_foreign(&mut self, node: &str, foreign: Resources) {
        if let Some(n) = self.by_name.get(node).and_then(|&s| self.slots[s].as_mut()) {
            n.requested = n.requested.minus(n.foreign).plus(foreign);
            n.foreign = foreign;
        }
    }

    /// Forgets a node. Its placements stay counted until their pods go.
    pub fn remove_node(&mut self, name: &str) {
        if let Some(slot) = self.by_name.remove(name) {
            let old = self.slots[slot].take().expect("indexed slots are filled");
            self.unindex_zone(&old.zone, slot);
            self.free_slots.push(slot);
            self.orphans += self.placed.values().filter(|p| p.node == name).count();
        }
    }

    fn index_zone(&mut self, zone: &str, slot: usize) {
        match self.zones.iter_mut().find(|z| z.zone == zone) {
            Some(z) => z.slots.push(slot),
            None => self.zones.push(ZoneNodes {
                zone: zone.to_owned(),
                slots: vec![slot],
                cursor: 0,
            }),
        }
    }

    fn unindex_zone(&mut self, zone: &str, slot: usize) {
        if let Some(i) = self.zones.iter().position(|z| z.zone == zone) {
            self.zones[i].slots.retain(|&s| s != slot);
            if self.zones[i].slots.is_empty() {
                self.zones.remove(i);
            }
        }
    }

    /// The node `pod` is placed on, if any.
    pub fn placement(&self, pod_key: &str) -> Option<&str> {
        self.placed.get(pod_key).map(|p| p.node.as_str())
    }

    /// Counts `pod` on `node` (a binding seen or assumed). Placing a pod again elsewhere
    /// moves it.
    pub fn place(&mut self, pod: &PodInfo, node: &str) {
        if self.placement(&pod.key) == Some(node) {
            return;
        }
        self.unplace(&pod.key);
        let zone = match self.by_name.get(node).and_then(|&s| self.slots[s].as_mut()) {
            Some(n) => {
                n.requested = n.requested.plus(pod.request);
                n.zone.clone()
            }
            None => {
                self.orphans += 1;
                String::new()
            }
        };
        if let Some(owner) = &pod.owner {
            *self
                .owner_zones
                .entry(owner.clone())
                .or_default()
                .entry(zone.clone())
                .or_default() += 1;
            *self
                .owner_nodes
                .entry(owner.clone())
                .or_default()
                .entry(node.to_owned())
                .or_default() += 1;
        }
        self.placed.insert(
            pod.key.clone(),
            Placement {
                node: node.to_owned(),
                request: pod.request,
                owner: pod.owner.clone(),
                zone,
            },
        );
    }

    /// Stops counting the pod at `pod_key`; returns the node it was on.
    pub fn unplace(&mut self, pod_key: &str) -> Option<String> {
        let p = self.placed.remove(pod_key)?;
        if let Some(n) = self
            .by_name
            .get(&p.node)
            .and_then(|&s| self.slots[s].as_mut())
        {
            n.requested = n.requested.minus(p.request);
        } else {
            self.orphans = self.orphans.saturating_sub(1);
        }
        if let Some(owner) = &p.owner {
            uncount(&mut self.owner_zones, owner, &p.zone);
            uncount(&mut self.owner_nodes, owner, &p.node);
        }
        Some(p.node)
    }

    /// Finds the best node for `pod`: visits nodes zone by zone until `enough` pass every
    /// filter (or all were seen), then picks the highest weighted score.
    pub fn select(
        &mut self,
        pod: &PodInfo,
        filters: &[Arc<dyn FilterPlugin>],
        scores: &[(Arc<dyn ScorePlugin>, u32)],
        enough: usize,
    ) -> Result<String, Unschedulable> {
        let mut feasible: Vec<usize> = Vec::with_capacity(enough.min(1024));
        let mut why = Unschedulable {
            nodes: self.by_name.len(),
            ..Default::default()
        };
        let zone_count = self.zones.len();
        let mut seen = vec![0usize; zone_count];
        let mut exhausted = 0;
        let mut z = self.zone_cursor % zone_count.max(1);
        self.zone_cursor = self.zone_cursor.wrapping_add(1);
        'search: while exhausted < zone_count {
            let zone = &mut self.zones[z];
            if seen[z] < zone.slots.len() {
                let slot = zone.slots[zone.cursor % zone.slots.len()];
                zone.cursor = (zone.cursor + 1) % zone.slots.len();
                seen[z] += 1;
                if seen[z] == zone.slots.len() {
                    exhausted += 1;
                }
                let node = self.slots[slot].as_ref().expect("indexed slots are filled");
                match filters.iter().try_for_each(|f| f.filter(pod, node)) {
                    Ok(()) => {
                        feasible.push(slot);
                        if feasible.len() >= enough {
                            break 'search;
                        }
                    }
                    Err(reason) => *why.reasons.entry(reason).or_default() += 1,
                }
            }
            z = (z + 1) % zone_count;
        }
        if feasible.is_empty() {
            return Err(why);
        }
        let owner_zones = pod.owner.as_ref().and_then(|o| self.owner_zones.get(o));
        let least = self
            .zones
            .iter()
            .map(|z| {
                owner_zones
                    .and_then(|c| c.get(&z.zone).copied())
                    .unwrap_or(0)
            })
            .min()
            .unwrap_or(0);
        let owner_nodes = pod.owner.as_ref().and_then(|o| self.owner_nodes.get(o));
        let least_on_feasible = feasible
            .iter()
            .map(|&slot| {
                let node = self.slots[slot].as_ref().expect("indexed slots are filled");
                owner_nodes
                    .and_then(|c| c.get(&node.name).copied())
                    .unwrap_or(0)
            })
            .min()
            .unwrap_or(0);
        let view = ClusterView {
            state: self,
            owner_zones,
            owner_nodes,
            least,
            least_on_feasible,
        };
        let mut best = (0u64, feasible[0]);
        for (i, &slot) in feasible.iter().enumerate() {
            let node = self.slots[slot].as_ref().expect("indexed slots are filled");
            let total: u64 = scores
                .iter()
                .map(|(s, w)| u64::from(s.score(pod, node, &view)) * u64::from(*w))
                .sum();
            if i == 0 || total > best.0 {
                best = (total, slot);
            }
        }
        Ok(self.slots[best.1]
            .as_ref()
            .expect("indexed slots are filled")
            .name
            .clone())
    }
}
