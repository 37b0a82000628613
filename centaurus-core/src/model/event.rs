//! `Event` (core `v1`): what happened to an object, reported by the component that saw it.
//!
//! Events live in the space of the object they are about (its tenant and namespace;
//! cluster-scoped objects' events in the `system` tenant's `default`), so a tenant sees
//! only its own. Repeats of one event are one object with a `count`
//! ([`Event::dedup_name`]); events expire after a time to live.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::validation::{Errors, FieldError};
use super::{ObjectMeta, Resource, SYSTEM_TENANT, Time};

/// `type` of an event about normal operation.
pub const EVENT_NORMAL: &str = "Normal";
/// `type` of an event about something that may need attention.
pub const EVENT_WARNING: &str = "Warning";
/// The namespace of events about cluster-scoped objects (Nodes).
pub const CLUSTER_EVENTS_NAMESPACE: &str = "default";
/// The group serving Events in their newer shape (`events.k8s.io/v1`).
pub const EVENTS_GROUP: &str = "events.k8s.io";
/// The fields `events.k8s.io/v1` names otherwise than core `v1` (core name, its name):
/// the same objects are served in both groups, kept in the core shape.
pub const EVENTS_V1_RENAMES: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];
/// Most bytes of an event's message (Kubernetes' limit); longer ones are cut.
pub const MAX_EVENT_MESSAGE: usize = 1024;

/// A reference to an object (`v1` ObjectReference), with the tenant beside the namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    /// Kind (`Pod`, `ReplicaSet`, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Its `apiVersion`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    /// Tenant (empty for cluster-scoped objects).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tenant: String,
    /// Namespace (empty for cluster-scoped objects).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// UID.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// The resourceVersion seen.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
    /// A part of the object (`spec.containers{web}`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub field_path: String,
}

impl ObjectReference {
    /// A reference to `obj`.
    pub fn to<R: Resource>(obj: &R) -> Self {
        let m = obj.meta();
        Self {
            kind: R::KIND.to_owned(),
            api_version: R::api_version(),
            tenant: m.tenant.clone(),
            namespace: m.namespace.clone(),
            name: m.name.clone(),
            uid: m.uid.clone(),
            resource_version: m.resource_version.clone(),
            field_path: String::new(),
        }
    }

    /// The same reference to a part of the object.
    pub fn with_field_path(mut self, path: impl Into<String>) -> Self {
        self.field_path = path.into();
        self
    }
}

/// The component that reported an event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EventSource {
    /// Component (`default-scheduler`, `kubelet`, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub component: String,
    /// Host it runs on (a node agent's node).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
}

/// Something that happened to an object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// `v1`.
    #[serde(default)]
    pub api_version: String,
    /// `Event`.
    #[serde(default)]
    pub kind: String,
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The object it is about.
    #[serde(default)]
    pub involved_object: ObjectReference,
    /// Short, machine-readable reason in UpperCamelCase (`Scheduled`, `BackOff`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// What happened, for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Who reported it.
    #[serde(default)]
    pub source: EventSource,
    /// When it first happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_timestamp: Option<Time>,
    /// When it last happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_timestamp: Option<Time>,
    /// How many times it happened.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub count: i32,
    /// `Normal` or `Warning`.
    #[serde(default, rename = "type", skip_serializing_if = "String::is_empty")]
    pub type_: String,
    /// When it first happened, to the microsecond (`events.k8s.io` clients set this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<Time>,
    /// A series of repeats, as `events.k8s.io` clients report them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub series: Option<serde_json::Value>,
    /// What was done (`events.k8s.io` clients).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub action: String,
    /// A second object involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub related: Option<ObjectReference>,
    /// The reporting controller (`events.k8s.io` clients).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reporting_component: String,
    /// Its instance.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reporting_instance: String,
}
crate::impl_resource!(
    Event,
    kind = "Event",
    group = "",
    version = "v1",
    plural = "events",
    scope = Namespaced,
    short = ["ev"],
    validate = validate_event,
    defaults = default_event
);

fn is_zero(n: &i32) -> bool {
    *n == 0
}

fn default_event(e: &mut Event) {
    if e.type_.is_empty() {
        e.type_ = EVENT_NORMAL.to_owned();
    }
    if e.count == 0 && (e.first_timestamp.is_some() || e.last_timestamp.is_some()) {
        e.count = 1;
    }
}

fn validate_event(e: &Event) -> Result<(), Vec<FieldError>> {
    let mut errs = Errors::default();
    if e.type_ != EVENT_NORMAL && e.type_ != EVENT_WARNING {
        errs.push(
            "type",
            format!("must be Normal or Warning, not {:?}", e.type_),
        );
    }
    if e.involved_object.name.is_empty() && e.involved_object.kind.is_empty() {
        errs.push("involvedObject", "names no object");
    }
    if e.count < 0 {
        errs.push("count", "must not be negative");
    }
    if e.reason.len() > 128 {
        errs.push("reason", "must be at most 128 bytes");
    }
    if e.message.len() > 4 * MAX_EVENT_MESSAGE {
        errs.push(
            "message",
            format!("must be at most {} bytes", 4 * MAX_EVENT_MESSAGE),
        );
    }
    errs.into_result()
}

impl Event {
    /// The tenant and namespace an event about `regarding` lives in.
    pub fn space_of(regarding: &ObjectReference) -> (&str, &str) {
        if regarding.namespace.is_empty() {
            (SYSTEM_TENANT, CLUSTER_EVENTS_NAMESPACE)
        } else {
            (regarding.tenant.as_str(), regarding.namespace.as_str())
        }
    }

    /// The name every repeat of one event shares: the object's name and a hash of what
    /// identifies the event (object, type, reason, message and reporter), so repeats from
    /// any instance of a component, across restarts, land on one object and count up.
    pub fn dedup_name(
        regarding: &ObjectReference,
        type_: &str,
        reason: &str,
        message: &str,
        component: &str,
    ) -> String {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for part in [
            &regarding.kind,
            &regarding.uid,
            &regarding.name,
            &regarding.field_path,
        ] {
            h.update(part.as_bytes());
            h.update(&[0]);
        }
        for part in [type_, reason, message, component] {
            h.update(part.as_bytes());
            h.update(&[0]);
        }
        // Room for the hash within a name's 253 bytes.
        let mut base = regarding.name.as_str();
        while base.len() > 236 {
            let mut end = 236;
            while !base.is_char_boundary(end) {
                end -= 1;
            }
            base = &base[..end];
        }
        format!("{base}.{:016x}", h.digest())
    }

    /// The involved object's name in an event name made by [`Event::dedup_name`].
    pub fn regarding_name(event_name: &str) -> Option<&str> {
        event_name.rsplit_once('.').map(|(name, _)| name)
    }

    /// When the event last happened, as well as it says.
    pub fn last_seen(&self) -> Option<Time> {
        self.last_timestamp
            .or(self.event_time)
            .or(self.first_timestamp)
            .or(self.metadata.creation_timestamp)
    }
}

/// `message` cut to [`MAX_EVENT_MESSAGE`] bytes at a character boundary.
pub fn event_message(message: &str) -> String {
    if message.len() <= MAX_EVENT_MESSAGE {
        return message.to_owned();
    }
    let mut end = MAX_EVENT_MESSAGE - 3;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &message[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_ref(name: &str, uid: &str) -> ObjectReference {
        ObjectReference {
            kind: "Pod".into(),
            tenant: "acme".into(),
            namespace: "dev".into(),
            name: name.into(),
            uid: uid.into(),
            ..Default::default()
        }
    }

    #[test]
    fn repeats_share_a_name_and_differences_do_not() {
        let r = pod_ref("web", "u1");
        let a = Event::dedup_name(&r, EVENT_NORMAL, "Pulled", "image pulled", "kubelet");
        assert_eq!(
            a,
            Event::dedup_name(&r, EVENT_NORMAL, "Pulled", "image pulled", "kubelet")
        );
        assert!(a.starts_with("web."));
        assert_eq!(Event::regarding_name(&a), Some("web"));
        for other in [
            Event::dedup_name(
                &pod_ref("web", "u2"),
                EVENT_NORMAL,
                "Pulled",
                "image pulled",
                "kubelet",
            ),
            Event::dedup_name(&r, EVENT_WARNING, "Pulled", "image pulled", "kubelet"),
            Event::dedup_name(&r, EVENT_NORMAL, "Started", "image pulled", "kubelet"),
            Event::dedup_name(&r, EVENT_NORMAL, "Pulled", "other", "kubelet"),
            Event::dedup_name(&r, EVENT_NORMAL, "Pulled", "image pulled", "scheduler"),
        ] {
            assert_ne!(a, other);
        }
        // Long names keep room for the hash, and a dotted pod name is kept whole.
        let long = Event::dedup_name(&pod_ref(&"a".repeat(253), "u"), EVENT_NORMAL, "R", "m", "c");
        assert_eq!(long.len(), 253);
        let dotted = Event::dedup_name(&pod_ref("web.v1", "u"), EVENT_NORMAL, "R", "m", "c");
        assert_eq!(Event::regarding_name(&dotted), Some("web.v1"));
    }

    #[test]
    fn events_of_cluster_objects_live_in_the_system_default_namespace() {
        let node = ObjectReference {
            kind: "Node".into(),
            name: "n1".into(),
            ..Default::default()
        };
        assert_eq!(Event::space_of(&node), (SYSTEM_TENANT, "default"));
        assert_eq!(Event::space_of(&pod_ref("web", "u")), ("acme", "dev"));
    }

    #[test]
    fn validation_and_defaults() {
        let mut e = Event {
            involved_object: pod_ref("web", "u"),
            last_timestamp: Some(super::super::now()),
            ..Default::default()
        };
        default_event(&mut e);
        assert_eq!((e.type_.as_str(), e.count), (EVENT_NORMAL, 1));
        assert!(validate_event(&e).is_ok());
        e.type_ = "Odd".into();
        e.count = -1;
        let errs = validate_event(&e).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        let cut = event_message(&"é".repeat(MAX_EVENT_MESSAGE));
        assert!(cut.len() <= MAX_EVENT_MESSAGE && cut.ends_with("..."));
    }
}
