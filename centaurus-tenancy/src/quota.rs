//! Per-tenant quota: hard limits on pods, cpu, memory and VM pods, checked at admission.

use centaurus_core::model::{PodSpec, ResourceList};

/// What a tenant's pods use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Pod count.
    pub pods: i64,
    /// CPU requests in millicores.
    pub cpu_milli: i64,
    /// Memory requests in bytes.
    pub memory: i64,
    /// VM pods.
    pub vms: i64,
}

impl Usage {
    /// Adds one pod's requests.
    pub fn add(&mut self, spec: &PodSpec) {
        self.pods += 1;
        self.cpu_milli += spec.requested("cpu");
        self.memory += spec.requested("memory");
        self.vms += i64::from(spec.virtual_machine.is_some());
    }

    fn get(&self, name: &str) -> i64 {
        match name {
            "pods" => self.pods,
            "cpu" => self.cpu_milli,
            "memory" => self.memory,
            "vms" => self.vms,
            _ => 0,
        }
    }
}

fn limit_of(quota: &ResourceList, name: &str) -> Option<i64> {
    let q = quota.get(name)?;
    if name == "cpu" {
        q.milli_value().ok()
    } else {
        q.value().ok()
    }
}

/// Checks that admitting a pod with `spec` keeps `used` within `quota`. The error reads like
/// Kubernetes' quota admission: `exceeded quota: requested: pods=1, used: pods=2, limited: pods=2`.
pub fn check_pod(quota: &ResourceList, used: &Usage, spec: &PodSpec) -> Result<(), String> {
    let mut wanted = Usage::default();
    wanted.add(spec);
    let mut over = Vec::new();
    for name in ["pods", "cpu", "memory", "vms"] {
        if let Some(limit) = limit_of(quota, name)
            && wanted.get(name) > 0
            && used.get(name) + wanted.get(name) > limit
        {
            over.push(name);
        }
    }
    if over.is_empty() {
        return Ok(());
    }
    let show = |u: &Usage| -> String {
        over.iter()
            .map(|n| format!("{n}={}", u.get(n)))
            .collect::<Vec<_>>()
            .join(",")
    };
    let limited = over
        .iter()
        .map(|n| format!("{n}={}", quota.get(*n).map_or("", |q| q.0.as_str())))
        .collect::<Vec<_>>()
        .join(",");
    Err(format!(
        "exceeded quota: requested: {}, used: {}, limited: {limited}",
        show(&wanted),
        show(used)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use centaurus_core::model::{Container, Quantity, VirtualMachine};

    fn pod(cpu: &str, vm: bool) -> PodSpec {
        let mut resources = centaurus_core::model::ResourceRequirements::default();
        resources.requests.insert("cpu".into(), Quantity::new(cpu));
        if vm {
            PodSpec {
                virtual_machine: Some(VirtualMachine {
                    name: "vm".into(),
                    image: "tiny".into(),
                    resources,
                    ..Default::default()
                }),
                ..Default::default()
            }
        } else {
            PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: "busybox".into(),
                    resources,
                    ..Default::default()
                }],
                ..Default::default()
            }
        }
    }

    #[test]
    fn quota_counts_containers_and_vms_in_one_pool() {
        let quota: ResourceList = [("cpu", "1"), ("vms", "1"), ("pods", "3")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), Quantity::new(v)))
            .collect();
        let mut used = Usage::default();
        used.add(&pod("500m", false));
        used.add(&pod("250m", true));
        assert!(check_pod(&quota, &used, &pod("250m", false)).is_ok());
        let err = check_pod(&quota, &used, &pod("250m", true)).unwrap_err();
        assert_eq!(
            err,
            "exceeded quota: requested: vms=1, used: vms=1, limited: vms=1"
        );
        let err = check_pod(&quota, &used, &pod("300m", false)).unwrap_err();
        assert!(err.contains("cpu=300"), "{err}");
    }
}
