//! Request bodies in, objects and tables out.

use centaurus_core::model::ResourceInfo;
use centaurus_core::store::KeyValue;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};

/// The deepest nesting a request body may have: serde_json's own limit, so that a JSON
/// body and the same object in YAML are judged alike.
pub const MAX_DEPTH: usize = 128;

/// The YAML parser's budget for one request body. Deep nesting is refused while parsing, at
/// the first opener past [`MAX_DEPTH`], so a hostile body costs what its first levels cost
/// (a parse that built the whole tree first spent minutes on 100,000 nested `[`).
fn yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = MAX_DEPTH;
    budget.flow_nesting_limit = MAX_DEPTH;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

/// Decodes a request body (JSON, or YAML when the content type says so) into a JSON
/// object. Errors are 400 with the parse position; nesting deeper than [`MAX_DEPTH`] is
/// refused. CPU-bound: servers run it off the threads that serve other requests.
pub fn decode_body(content_type: Option<&str>, body: &[u8]) -> ApiResult<Value> {
    let ct = content_type
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim();
    let value: Value = match ct {
        "application/json" | "" | "*/*" => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("unable to decode JSON body: {e}")))?,
        "application/yaml" | "application/x-yaml" | "text/yaml" => {
            serde_saphyr::from_slice_with_options(body, yaml_options())
                .map_err(|e| ApiError::bad_request(format!("unable to decode YAML body: {e}")))?
        }
        crate::protobuf::CONTENT_TYPE => crate::protobuf::decode(body)?,
        other => {
            return Err(ApiError::unsupported_media_type(format!(
                "the body of type {other:?} is not supported; send application/json or application/yaml"
            )));
        }
    };
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    Ok(value)
}

/// A stored value as an API object: its `resourceVersion` is the revision that wrote it.
pub fn object_of(kv: &KeyValue) -> ApiResult<Value> {
    let mut v: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored object {} is corrupt: {e}", kv.key)))?;
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "resourceVersion".into(),
            Value::String(kv.mod_revision.to_string()),
        );
    }
    Ok(v)
}

/// True when the `Accept` header asks for server-side `Table` output (kubectl get).
pub fn wants_table(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("as=Table"))
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Human age, as kubectl prints it: `45s`, `12m`, `5h`, `3d`.
pub fn age(created: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(created) else {
        return "<unknown>".into();
    };
    let secs = (now - t.with_timezone(&chrono::Utc)).num_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// A column of a kind's table: name, priority (1: only with `-o wide`) and cell.
type Column = (
    &'static str,
    u8,
    fn(&Value, chrono::DateTime<chrono::Utc>) -> Value,
);

fn age_cell(v: &Value, now: chrono::DateTime<chrono::Utc>) -> Value {
    json!(age(str_at(v, "/metadata/creationTimestamp"), now))
}

fn or_none(s: &str) -> Value {
    json!(if s.is_empty() { "<none>" } else { s })
}

fn int_at(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn pod_status(v: &Value) -> Value {
    if v.pointer("/metadata/deletionTimestamp").is_some() {
        return json!("Terminating");
    }
    // As kubectl prints pods: a container's waiting or terminated reason
    // (CrashLoopBackOff, Error, Completed) says more than the phase, unless others of its
    // containers still run.
    let reason = v
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| {
            ["/state/waiting/reason", "/state/terminated/reason"]
                .iter()
                .find_map(|p| c.pointer(p).and_then(Value::as_str))
        })
        .find(|r| !r.is_empty());
    let phase = str_at(v, "/status/phase");
    match reason {
        Some("Completed") if phase == "Running" => json!(phase),
        Some(r) => json!(r),
        _ => json!(if phase.is_empty() { "Pending" } else { phase }),
    }
}

/// `ready/total` workloads of a pod: its containers, or its VM.
fn pod_ready(v: &Value) -> Value {
    if v.pointer("/spec/virtualMachine").is_some() {
        let ready = v.pointer("/status/virtualMachineStatus/ready") == Some(&json!(true));
        return json!(format!("{}/1", u8::from(ready)));
    }
    let total = v
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let ready = v
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| c.get("ready") == Some(&json!(true)))
        .count();
    json!(format!("{ready}/{total}"))
}

fn pod_restarts(v: &Value) -> Value {
    let n: i64 = v
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| int_at(c, "/restartCount"))
        .sum();
    json!(n)
}

fn node_status(v: &Value) -> Value {
    let ready = v
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| str_at(c, "/type") == "Ready"))
        .map(|c| str_at(c, "/status") == "True");
    let mut s = match ready {
        Some(true) => "Ready",
        Some(false) => "NotReady",
        None => "Unknown",
    }
    .to_owned();
    if v.pointer("/spec/unschedulable") == Some(&json!(true)) {
        s.push_str(",SchedulingDisabled");
    }
    json!(s)
}

fn node_roles(v: &Value) -> Value {
    let roles: Vec<&str> = v
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/"))
        .filter(|r| !r.is_empty())
        .collect();
    or_none(&roles.join(","))
}

fn node_address(v: &Value, kind: &str) -> Value {
    let a = v
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|a| str_at(a, "/type") == kind)
        .map_or("", |a| str_at(a, "/address"));
    or_none(a)
}

/// A job's state as kubectl names it.
fn job_status(v: &Value) -> Value {
    let conditions = v.pointer("/status/conditions").and_then(Value::as_array);
    let holds = |t: &str| {
        conditions.is_some_and(|c| c.iter().any(|c| c["type"] == t && c["status"] == "True"))
    };
    json!(if holds("Complete") {
        "Complete"
    } else if holds("Failed") {
        "Failed"
    } else if holds("Suspended") {
        "Suspended"
    } else {
        "Running"
    })
}

/// A field of each container (or the VM) of a pod template, comma-separated.
fn template_containers(v: &Value, template: &str, field: &str) -> Value {
    let spec = v.pointer(&format!("{template}/spec"));
    let containers = spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .chain(spec.and_then(|s| s.get("virtualMachine")));
    let all: Vec<&str> = containers
        .filter_map(|c| c.pointer(field).and_then(Value::as_str))
        .collect();
    or_none(&all.join(","))
}

/// A quota's `used/hard` pairs, as kubectl shows them: the `limits.*` names in the LIMIT
/// column, the others in REQUEST.
fn quota_cells(v: &Value, limits: bool) -> Value {
    let hard = v
        .pointer("/status/hard")
        .or_else(|| v.pointer("/spec/hard"));
    let cells: Vec<String> = hard
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("limits.") == limits)
        .map(|(k, h)| {
            let used = v
                .pointer(&format!(
                    "/status/used/{}",
                    k.replace('~', "~0").replace('/', "~1")
                ))
                .and_then(Value::as_str)
                .unwrap_or("0");
            format!("{k}: {used}/{}", h.as_str().unwrap_or(""))
        })
        .collect();
    json!(cells.join(", "))
}

/// A binding's subjects of `kind`, comma-separated (service accounts as `NAMESPACE/NAME`).
fn subjects(v: &Value, kind: &str) -> Value {
    let names: Vec<String> = v
        .get("subjects")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|s| str_at(s, "/kind") == kind)
        .map(|s| match str_at(s, "/namespace") {
            "" => str_at(s, "/name").to_owned(),
            ns => format!("{ns}/{}", str_at(s, "/name")),
        })
        .collect();
    json!(names.join(","))
}

/// The columns of a kind's table after its name, as kubectl prints them (with our extra
/// columns where they help); every kind has at least its age. Kinds are named by their
/// store range, unique where plurals are not (core `endpoints` is `serviceendpoints`).
fn columns(store: &str) -> Vec<Column> {
    match store {
        "services" => vec![
            ("Type", 0, |v, _| json!(str_at(v, "/spec/type"))),
            ("Cluster-IP", 0, |v, _| {
                or_none(str_at(v, "/spec/clusterIP"))
            }),
            ("External-IP", 0, |_, _| json!("<none>")),
            ("Port(s)", 0, |v, _| {
                let ports: Vec<String> = list_at(v, "/spec/ports")
                    .map(|p| format!("{}/{}", int_at(p, "/port"), str_at(p, "/protocol")))
                    .collect();
                or_none(&ports.join(","))
            }),
            ("Age", 0, age_cell),
            ("Selector", 1, |v, _| {
                let pairs: Vec<String> = (v.pointer("/spec/selector").and_then(Value::as_object))
                    .into_iter()
                    .flatten()
                    .map(|(k, x)| format!("{k}={}", x.as_str().unwrap_or("")))
                    .collect();
                or_none(&pairs.join(","))
            }),
        ],
        "serviceendpoints" => vec![
            ("Endpoints", 0, |v, _| {
                let all: Vec<String> = list_at(v, "/subsets")
                    .flat_map(|s| {
                        let ports: Vec<i64> =
                            list_at(s, "/ports").map(|p| int_at(p, "/port")).collect();
                        list_at(s, "/addresses").flat_map(move |a| {
                            let ip = str_at(a, "/ip").to_owned();
                            let ports = if ports.is_empty() {
                                vec![None]
                            } else {
                                ports.iter().copied().map(Some).collect()
                            };
                            ports.into_iter().map(move |p| match p {
                                Some(p) => format!("{ip}:{p}"),
                                None => ip.clone(),
                            })
                        })
                    })
                    .collect();
                or_none(&first_three(&all))
            }),
            ("Age", 0, age_cell),
        ],
        "networkpolicies" => vec![
            ("Pod-Selector", 0, |v, _| {
                let s = v.pointer("/spec/podSelector");
                let mut terms: Vec<String> = (s.and_then(|s| s.pointer("/matchLabels")))
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                    .map(|(k, x)| format!("{k}={}", x.as_str().unwrap_or("")))
                    .collect();
                terms.extend(list_at(v, "/spec/podSelector/matchExpressions").map(|r| {
                    let values: Vec<&str> =
                        list_at(r, "/values").filter_map(Value::as_str).collect();
                    format!(
                        "{} {} ({})",
                        str_at(r, "/key"),
                        str_at(r, "/operator"),
                        values.join(",")
                    )
                }));
                json!(if terms.is_empty() {
                    "<none>".to_owned()
                } else {
                    terms.join(",")
                })
            }),
            ("Age", 0, age_cell),
        ],
        "endpointslices" => vec![
            ("AddressType", 0, |v, _| json!(str_at(v, "/addressType"))),
            ("Ports", 0, |v, _| {
                let ports: Vec<String> = list_at(v, "/ports")
                    .map(|p| int_at(p, "/port").to_string())
                    .collect();
                json!(if ports.is_empty() {
                    "<unset>".to_owned()
                } else {
                    ports.join(",")
                })
            }),
            ("Endpoints", 0, |v, _| {
                let all: Vec<String> = list_at(v, "/endpoints")
                    .flat_map(|e| list_at(e, "/addresses"))
                    .filter_map(|a| a.as_str().map(str::to_owned))
                    .collect();
                or_none(&first_three(&all))
            }),
            ("Age", 0, age_cell),
        ],
        "pods" => vec![
            ("Ready", 0, |v, _| pod_ready(v)),
            ("Status", 0, |v, _| pod_status(v)),
            ("Restarts", 0, |v, _| pod_restarts(v)),
            ("Age", 0, age_cell),
            ("IP", 1, |v, _| or_none(str_at(v, "/status/podIP"))),
            ("Node", 1, |v, _| or_none(str_at(v, "/spec/nodeName"))),
            ("Nominated Node", 1, |v, _| {
                or_none(str_at(v, "/status/nominatedNodeName"))
            }),
            ("Readiness Gates", 1, |_, _| json!("<none>")),
            ("Type", 1, |v, _| {
                json!(if v.pointer("/spec/virtualMachine").is_some() {
                    "vm"
                } else {
                    "container"
                })
            }),
        ],
        "tenants" | "namespaces" => vec![
            ("Status", 0, |v, _| {
                let p = str_at(v, "/status/phase");
                json!(if p.is_empty() { "Active" } else { p })
            }),
            ("Age", 0, age_cell),
        ],
        "deployments" => vec![
            ("Ready", 0, |v, _| {
                json!(format!(
                    "{}/{}",
                    int_at(v, "/status/readyReplicas"),
                    v.pointer("/spec/replicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(1)
                ))
            }),
            ("Up-to-date", 0, |v, _| {
                json!(int_at(v, "/status/updatedReplicas"))
            }),
            ("Available", 0, |v, _| {
                json!(int_at(v, "/status/availableReplicas"))
            }),
            ("Age", 0, age_cell),
        ],
        "statefulsets" => vec![
            ("Ready", 0, |v, _| {
                json!(format!(
                    "{}/{}",
                    int_at(v, "/status/readyReplicas"),
                    v.pointer("/spec/replicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(1)
                ))
            }),
            ("Age", 0, age_cell),
            ("Containers", 1, |v, _| {
                template_containers(v, "/spec/template", "/name")
            }),
            ("Images", 1, |v, _| {
                template_containers(v, "/spec/template", "/image")
            }),
        ],
        "daemonsets" => vec![
            ("Desired", 0, |v, _| {
                json!(int_at(v, "/status/desiredNumberScheduled"))
            }),
            ("Current", 0, |v, _| {
                json!(int_at(v, "/status/currentNumberScheduled"))
            }),
            ("Ready", 0, |v, _| json!(int_at(v, "/status/numberReady"))),
            ("Up-to-date", 0, |v, _| {
                json!(int_at(v, "/status/updatedNumberScheduled"))
            }),
            ("Available", 0, |v, _| {
                json!(int_at(v, "/status/numberAvailable"))
            }),
            ("Node Selector", 0, |v, _| {
                let selector: Vec<String> = v
                    .pointer("/spec/template/spec/nodeSelector")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect();
                or_none(&selector.join(","))
            }),
            ("Age", 0, age_cell),
            ("Containers", 1, |v, _| {
                template_containers(v, "/spec/template", "/name")
            }),
            ("Images", 1, |v, _| {
                template_containers(v, "/spec/template", "/image")
            }),
        ],
        "replicasets" => vec![
            ("Desired", 0, |v, _| {
                json!(
                    v.pointer("/spec/replicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(1)
                )
            }),
            ("Current", 0, |v, _| json!(int_at(v, "/status/replicas"))),
            ("Ready", 0, |v, _| json!(int_at(v, "/status/readyReplicas"))),
            ("Age", 0, age_cell),
        ],
        "nodes" => vec![
            ("Status", 0, |v, _| node_status(v)),
            ("Roles", 0, |v, _| node_roles(v)),
            ("Age", 0, age_cell),
            ("Version", 0, |v, _| {
                json!(str_at(v, "/status/nodeInfo/kubeletVersion"))
            }),
            ("Internal-IP", 1, |v, _| node_address(v, "InternalIP")),
            ("External-IP", 1, |v, _| node_address(v, "ExternalIP")),
            ("OS-Image", 1, |v, _| {
                or_none(str_at(v, "/status/nodeInfo/osImage"))
            }),
            ("Kernel-Version", 1, |v, _| {
                or_none(str_at(v, "/status/nodeInfo/kernelVersion"))
            }),
            ("Container-Runtime", 1, |v, _| {
                or_none(str_at(v, "/status/nodeInfo/containerRuntimeVersion"))
            }),
            ("Zone", 1, |v, _| {
                or_none(str_at(v, "/metadata/labels/topology.kubernetes.io~1zone"))
            }),
        ],
        "jobs" => vec![
            ("Status", 0, |v, _| job_status(v)),
            ("Completions", 0, |v, _| {
                let done = int_at(v, "/status/succeeded");
                json!(
                    match v.pointer("/spec/completions").and_then(Value::as_i64) {
                        Some(c) => format!("{done}/{c}"),
                        None => format!("{done}/1 of {}", int_at(v, "/spec/parallelism").max(1)),
                    }
                )
            }),
            ("Duration", 0, |v, now| {
                let start = str_at(v, "/status/startTime");
                if start.is_empty() {
                    return json!("");
                }
                let end = chrono::DateTime::parse_from_rfc3339(str_at(v, "/status/completionTime"))
                    .map_or(now, |t| t.with_timezone(&chrono::Utc));
                json!(age(start, end))
            }),
            ("Age", 0, age_cell),
            ("Containers", 1, |v, _| {
                template_containers(v, "/spec/template", "/name")
            }),
            ("Images", 1, |v, _| {
                template_containers(v, "/spec/template", "/image")
            }),
        ],
        "cronjobs" => vec![
            ("Schedule", 0, |v, _| json!(str_at(v, "/spec/schedule"))),
            ("Timezone", 0, |v, _| or_none(str_at(v, "/spec/timeZone"))),
            ("Suspend", 0, |v, _| {
                json!(if v.pointer("/spec/suspend") == Some(&json!(true)) {
                    "True"
                } else {
                    "False"
                })
            }),
            ("Active", 0, |v, _| {
                json!(
                    v.pointer("/status/active")
                        .and_then(Value::as_array)
                        .map_or(0, Vec::len)
                )
            }),
            ("Last Schedule", 0, |v, now| {
                let t = str_at(v, "/status/lastScheduleTime");
                or_none(&if t.is_empty() {
                    String::new()
                } else {
                    age(t, now)
                })
            }),
            ("Age", 0, age_cell),
            ("Containers", 1, |v, _| {
                template_containers(v, "/spec/jobTemplate/spec/template", "/name")
            }),
            ("Images", 1, |v, _| {
                template_containers(v, "/spec/jobTemplate/spec/template", "/image")
            }),
        ],
        "configmaps" => vec![
            ("Data", 0, |v, _| {
                json!(map_len(v, "/data") + map_len(v, "/binaryData"))
            }),
            ("Age", 0, age_cell),
        ],
        "resourcequotas" => vec![
            ("Age", 0, age_cell),
            ("Request", 0, |v, _| quota_cells(v, false)),
            ("Limit", 0, |v, _| quota_cells(v, true)),
        ],
        "roles" | "clusterroles" | "limitranges" => vec![("Created At", 0, |v, _| {
            json!(str_at(v, "/metadata/creationTimestamp"))
        })],
        "rolebindings" | "clusterrolebindings" => vec![
            ("Role", 0, |v, _| {
                json!(format!(
                    "{}/{}",
                    str_at(v, "/roleRef/kind"),
                    str_at(v, "/roleRef/name")
                ))
            }),
            ("Age", 0, age_cell),
            ("Users", 1, |v, _| subjects(v, "User")),
            ("Groups", 1, |v, _| subjects(v, "Group")),
            ("ServiceAccounts", 1, |v, _| subjects(v, "ServiceAccount")),
        ],
        "secrets" => vec![
            ("Type", 0, |v, _| json!(str_at(v, "/type"))),
            ("Data", 0, |v, _| json!(map_len(v, "/data"))),
            ("Age", 0, age_cell),
        ],
        // Core `v1` names first, then `events.k8s.io/v1`'s (the same objects).
        "events" => vec![
            ("Last Seen", 0, |v, now| {
                let at = [
                    "/series/lastObservedTime",
                    "/lastTimestamp",
                    "/deprecatedLastTimestamp",
                    "/eventTime",
                    "/firstTimestamp",
                    "/deprecatedFirstTimestamp",
                    "/metadata/creationTimestamp",
                ]
                .into_iter()
                .map(|p| str_at(v, p))
                .find(|t| !t.is_empty())
                .unwrap_or_default();
                json!(age(at, now))
            }),
            ("Type", 0, |v, _| json!(str_at(v, "/type"))),
            ("Reason", 0, |v, _| json!(str_at(v, "/reason"))),
            ("Object", 0, |v, _| {
                let o = either(v, "/involvedObject", "/regarding");
                json!(format!(
                    "{}/{}",
                    str_at(o, "/kind").to_lowercase(),
                    str_at(o, "/name")
                ))
            }),
            ("Subobject", 1, |v, _| {
                json!(str_at(
                    either(v, "/involvedObject", "/regarding"),
                    "/fieldPath"
                ))
            }),
            ("Source", 1, |v, _| {
                let s = either(v, "/source", "/deprecatedSource");
                let (c, h) = (str_at(s, "/component"), str_at(s, "/host"));
                json!(if h.is_empty() {
                    c.to_owned()
                } else {
                    format!("{c}, {h}")
                })
            }),
            ("Message", 0, |v, _| {
                json!(str_at(either(v, "/message", "/note"), ""))
            }),
            ("First Seen", 1, |v, now| {
                let s = either(v, "/firstTimestamp", "/deprecatedFirstTimestamp");
                json!(age(str_at(s, ""), now))
            }),
            ("Count", 1, |v, _| {
                let n = int_at(v, "/count").max(int_at(v, "/deprecatedCount"));
                json!(n.max(int_at(v, "/series/count")).max(1))
            }),
        ],
        _ => vec![("Age", 0, age_cell)],
    }
}

/// The value at `a`, or at `b` when `a` has none (`Null` when neither has).
fn either<'v>(v: &'v Value, a: &str, b: &str) -> &'v Value {
    v.pointer(a)
        .or_else(|| v.pointer(b))
        .unwrap_or(&Value::Null)
}

/// Where a kind's table shows the name: first, or (events, as Kubernetes prints them)
/// last and only with `-o wide`.
fn name_last(plural: &str) -> bool {
    plural == "events"
}

/// The array at `pointer`'s items (none when absent).
fn list_at<'v>(v: &'v Value, pointer: &str) -> impl Iterator<Item = &'v Value> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// The first three items, and how many more there are, as kubectl lists addresses.
fn first_three(all: &[String]) -> String {
    match all.len() {
        0..=3 => all.join(","),
        n => format!("{} + {} more...", all[..3].join(","), n - 3),
    }
}

fn map_len(v: &Value, pointer: &str) -> usize {
    v.pointer(pointer)
        .and_then(Value::as_object)
        .map_or(0, |m| m.len())
}

/// The column definitions of a `Table` of `info`'s kind.
pub fn table_columns(info: &ResourceInfo) -> Value {
    let last = name_last(info.plural);
    let name = json!({"name": "Name", "type": "string", "format": "name", "description": "Name of the object", "priority": u8::from(last)});
    let mut defs: Vec<Value> = columns(info.store)
        .iter()
        .map(|(name, priority, _)| json!({"name": name, "type": "string", "format": "", "description": "", "priority": priority}))
        .collect();
    if last {
        defs.push(name);
    } else {
        defs.insert(0, name);
    }
    Value::Array(defs)
}

/// Makes the rows of a `Table` of one kind.
pub struct TableRows {
    columns: Vec<Column>,
    name_last: bool,
    now: chrono::DateTime<chrono::Utc>,
}

impl TableRows {
    /// Rows of `info`'s kind, ages counted from now.
    pub fn new(info: &ResourceInfo) -> Self {
        Self {
            columns: columns(info.store),
            name_last: name_last(info.plural),
            now: chrono::Utc::now(),
        }
    }

    /// The row of `o`: its cells and its metadata.
    pub fn row(&self, o: &Value) -> Value {
        let mut cells: Vec<Value> = self
            .columns
            .iter()
            .map(|(_, _, f)| f(o, self.now))
            .collect();
        let name = json!(str_at(o, "/metadata/name"));
        if self.name_last {
            cells.push(name);
        } else {
            cells.insert(0, name);
        }
        let mut partial = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1"});
        partial["metadata"] = o.get("metadata").cloned().unwrap_or(json!({}));
        json!({"cells": cells, "object": partial})
    }
}

/// Objects as a `meta.k8s.io/v1` `Table`, the form kubectl prints.
pub fn table(
    info: &ResourceInfo,
    objects: &[Value],
    resource_version: &str,
    cont: Option<&str>,
) -> Value {
    let rows = TableRows::new(info);
    let rows: Vec<Value> = objects.iter().map(|o| rows.row(o)).collect();
    let mut meta = json!({"resourceVersion": resource_version});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": table_columns(info), "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_report_where_they_break() {
        let e = decode_body(None, b"{\"a\": [1, 2,}").unwrap_err();
        assert_eq!(e.code, 400);
        assert!(e.message.contains("line 1 column"), "{}", e.message);
        let e = decode_body(Some("application/yaml"), b"a: [1\nb: 2").unwrap_err();
        assert!(e.message.contains("line"), "{}", e.message);
        assert_eq!(
            decode_body(Some("application/yaml"), b"a: 1").unwrap()["a"],
            1
        );
        assert_eq!(decode_body(None, b"[1]").unwrap_err().code, 400);
        let yaml = decode_body(
            Some("application/yaml"),
            b"metadata:\n  name: web\n  labels: {app: web}\nspec:\n  containers:\n  - name: c\n    args: [sh, -c, 'echo hi']\n",
        )
        .unwrap();
        assert_eq!(yaml["spec"]["containers"][0]["args"][2], "echo hi");
        assert_eq!(yaml["metadata"]["labels"]["app"], "web");
        assert_eq!(decode_body(Some("text/plain"), b"x").unwrap_err().code, 415);
    }

    #[test]
    fn tables_have_kubernetes_columns() {
        let registry = crate::region::registry();
        let info = |plural: &str| {
            registry
                .kinds()
                .find(|k| k.plural == plural)
                .cloned()
                .unwrap()
        };
        let names = |plural: &str| -> Vec<(String, i64)> {
            table_columns(&info(plural))
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    (
                        c["name"].as_str().unwrap().to_owned(),
                        c["priority"].as_i64().unwrap(),
                    )
                })
                .collect()
        };
        let shown = |plural: &str, wide: bool| -> Vec<String> {
            names(plural)
                .into_iter()
                .filter(|(_, p)| wide || *p == 0)
                .map(|(n, _)| n.to_uppercase())
                .collect()
        };
        assert_eq!(
            shown("pods", false),
            ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
        );
        assert_eq!(
            shown("pods", true)[5..],
            ["IP", "NODE", "NOMINATED NODE", "READINESS GATES", "TYPE"]
        );
        assert_eq!(
            shown("nodes", false),
            ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
        );
        assert_eq!(
            shown("nodes", true)[5..9],
            ["INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION"]
        );
        assert_eq!(shown("configmaps", false), ["NAME", "DATA", "AGE"]);
        assert_eq!(
            shown("daemonsets", false),
            [
                "NAME",
                "DESIRED",
                "CURRENT",
                "READY",
                "UP-TO-DATE",
                "AVAILABLE",
                "NODE SELECTOR",
                "AGE"
            ]
        );
        assert_eq!(
            shown("jobs", false),
            ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
        );
        assert_eq!(
            shown("cronjobs", false),
            [
                "NAME",
                "SCHEDULE",
                "TIMEZONE",
                "SUSPEND",
                "ACTIVE",
                "LAST SCHEDULE",
                "AGE"
            ]
        );
        let job = json!({"spec": {"completions": 3, "template": {"spec": {"containers": [
                {"name": "a", "image": "busybox"}, {"name": "b", "image": "alpine"}]}}},
            "status": {"succeeded": 3, "conditions": [{"type": "Complete", "status": "True"}],
                "startTime": "2026-01-01T00:00:00Z", "completionTime": "2026-01-01T00:00:42Z"}});
        let cells: Vec<Value> = columns("jobs")
            .iter()
            .map(|(_, _, cell)| cell(&job, chrono::Utc::now()))
            .collect();
        assert_eq!(cells[..3], [json!("Complete"), json!("3/3"), json!("42s")]);
        assert_eq!(cells[4..], [json!("a,b"), json!("busybox,alpine")]);
        assert_eq!(shown("secrets", false), ["NAME", "TYPE", "DATA", "AGE"]);
        assert_eq!(
            shown("events", false),
            ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
        );
        assert_eq!(
            shown("deployments", false),
            ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
        );
        assert_eq!(
            shown("replicasets", false),
            ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]
        );
        let pod = json!({"metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 1, "state": {"running": {}}}]}});
        let row = &table(&info("pods"), &[pod], "1", None)["rows"][0]["cells"];
        assert_eq!((row[1].as_str(), row[3].as_i64()), (Some("1/2"), Some(3)));
    }

    #[test]
    fn pod_rows_say_why_a_container_waits() {
        let info = crate::region::registry()
            .by_plural("", "v1", "pods")
            .cloned()
            .unwrap();
        let status = |pod: Value| table(&info, &[pod], "1", None)["rows"][0]["cells"][2].clone();
        let pod = |phase: &str, state: Value| {
            json!({"metadata": {"name": "p"}, "status": {"phase": phase,
                "containerStatuses": [{"name": "c", "state": state}]}})
        };
        assert_eq!(
            status(pod(
                "Running",
                json!({"waiting": {"reason": "CrashLoopBackOff"}})
            )),
            "CrashLoopBackOff"
        );
        assert_eq!(status(pod("Running", json!({"running": {}}))), "Running");
        assert_eq!(
            status(pod("Failed", json!({"terminated": {"reason": "Error"}}))),
            "Error"
        );
        assert_eq!(
            status(pod(
                "Succeeded",
                json!({"terminated": {"reason": "Completed"}})
            )),
            "Completed",
            "as kubectl shows a pod that ran to completion"
        );
        assert_eq!(
            status(pod(
                "Running",
                json!({"terminated": {"reason": "Completed"}})
            )),
            "Running",
            "one container done, others running"
        );
    }

    /// `{"a": ` (or `a: [`, or `- `) nested `depth` times around `1`.
    fn nested(depth: usize, open: &str, close: &str) -> Vec<u8> {
        format!("{}1{}", open.repeat(depth), close.repeat(depth)).into_bytes()
    }

    #[test]
    fn nesting_is_limited_alike_in_json_and_yaml() {
        let yaml = Some("application/yaml");
        for (ct, open, close) in [
            (None, "{\"a\":", "}"),
            (yaml, "{a: ", "}"),
            (yaml, "{a: [", "]}"),
        ] {
            let ok = nested(MAX_DEPTH / 2 - 1, open, close);
            assert!(
                decode_body(ct, &ok).is_ok(),
                "{}",
                String::from_utf8_lossy(&ok)
            );
            let deep = nested(MAX_DEPTH + 1, open, close);
            assert_eq!(decode_body(ct, &deep).unwrap_err().code, 400);
        }
        // Block nesting: `- - - ... 1` is a sequence MAX_DEPTH + 1 deep.
        let block = format!("a:\n  {}1\n", "- ".repeat(MAX_DEPTH + 1));
        assert_eq!(decode_body(yaml, block.as_bytes()).unwrap_err().code, 400);
    }

    #[test]
    fn a_hostile_yaml_body_is_refused_at_its_first_levels() {
        // 100,000 nested flow sequences in 200 KB: the whole parse took 111 s before the
        // depth budget; now it stops at MAX_DEPTH. Timed loosely: the point is the order of
        // magnitude, on any machine.
        let body = nested(100_000, "[", "]");
        let started = std::time::Instant::now();
        let e = decode_body(Some("application/yaml"), &body).unwrap_err();
        assert_eq!(e.code, 400, "{}", e.message);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "refused after {:?}",
            started.elapsed()
        );
    }
}
