//! Resource amounts in the units the scheduler compares: millicores, bytes and counts.

use centaurus_core::model::{PodSpec, ResourceList};

/// An amount of every resource the scheduler accounts. Containers and VMs draw on the same
/// `cpu`, `memory` and `pods`; VM pods also take one `vm` slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Resources {
    /// CPU in millicores.
    pub cpu_milli: i64,
    /// Memory in bytes.
    pub memory: i64,
    /// Pod count.
    pub pods: i64,
    /// VM pod count.
    pub vms: i64,
}

impl Resources {
    /// What a pod with `spec` requests: its containers' or VM's requests, one pod, and one
    /// VM slot for a VM pod.
    pub fn of_pod(spec: &PodSpec) -> Self {
        Self {
            cpu_milli: spec.requested("cpu"),
            memory: spec.requested("memory"),
            pods: 1,
            vms: i64::from(spec.virtual_machine.is_some()),
        }
    }

    /// Reads `cpu`, `memory`, `pods` and `vm` from a node's capacity or allocatable list;
    /// a missing or unreadable name counts as zero.
    pub fn of_list(list: &ResourceList) -> Self {
        let get = |name: &str, milli: bool| {
            list.get(name)
                .and_then(|q| if milli { q.milli_value() } else { q.value() }.ok())
                .unwrap_or(0)
        };
        Self {
            cpu_milli: get("cpu", true),
            memory: get("memory", false),
            pods: get("pods", false),
            vms: get("vm", false),
        }
    }

    /// The sum.
    pub fn plus(self, o: Self) -> Self {
        Self {
            cpu_milli: self.cpu_milli + o.cpu_milli,
            memory: self.memory + o.memory,
            pods: self.pods + o.pods,
            vms: self.vms + o.vms,
        }
    }

    /// The difference.
    pub fn minus(self, o: Self) -> Self {
        Self {
            cpu_milli: self.cpu_milli - o.cpu_milli,
            memory: self.memory - o.memory,
            pods: self.pods - o.pods,
            vms: self.vms - o.vms,
        }
    }

    /// The names of the resources in which `self` exceeds `limit`.
    pub fn exceeding(&self, limit: &Self) -> Vec<&'static str> {
        let mut over = Vec::new();
        for (name, have, max) in [
            ("cpu", self.cpu_milli, limit.cpu_milli),
            ("memory", self.memory, limit.memory),
            ("pods", self.pods, limit.pods),
            ("vm", self.vms, limit.vms),
        ] {
            if have > max {
                over.push(name);
            }
        }
        over
    }
}
