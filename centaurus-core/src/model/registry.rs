//! The registry of servable kinds: what the API serves generically and where the store keeps it.

use std::collections::HashMap;
use std::sync::Arc;

use super::validation::{self, Errors, FieldError};
use super::{ObjectMeta, Resource, Scope};

/// Everything the API and the store need to know about one kind, without its Rust type.
#[derive(Clone)]
pub struct ResourceInfo {
    /// CamelCase kind.
    pub kind: &'static str,
    /// API group; empty for core.
    pub group: &'static str,
    /// Version within the group.
    pub version: &'static str,
    /// Lower-case plural (paths).
    pub plural: &'static str,
    /// The store key range's name ([`Resource::STORE`]).
    pub store: &'static str,
    /// Abbreviations.
    pub short_names: &'static [&'static str],
    /// Where objects live.
    pub scope: Scope,
    /// JSON Schema of the whole object.
    pub schema: Arc<schemars::Schema>,
    /// True when the kind has a `status` written through the `status` subresource.
    pub has_status: bool,
    decode: fn(&serde_json::Value) -> Result<Decoded, DecodeError>,
    update_rules: Option<UpdateRules>,
    served: fn(&mut serde_json::Value),
    unserved: fn(&serde_json::Value) -> Option<serde_json::Value>,
    /// Set on a view of another group's kind ([`ResourceInfo::view`]).
    view: Option<View>,
}

/// How a view's objects differ from the kept ones: their `apiVersion`, and top-level
/// fields under other names.
#[derive(Clone, Debug)]
struct View {
    /// The `apiVersion` objects are kept under.
    kept_api_version: String,
    /// (kept name, name in the view) of each renamed top-level field.
    renames: &'static [(&'static str, &'static str)],
}

impl View {
    /// `obj` with its renamed fields moved (`to_view`: kept → view; else view → kept).
    fn rename(&self, obj: &mut serde_json::Value, to_view: bool) {
        let Some(o) = obj.as_object_mut() else {
            return;
        };
        for (kept, shown) in self.renames {
            let (from, to) = if to_view {
                (kept, shown)
            } else {
                (shown, kept)
            };
            if let Some(v) = o.remove(*from) {
                o.insert((*to).to_owned(), v);
            }
        }
    }

    /// A field path of the kept form named as the view names it.
    fn field_in_view(&self, field: &str) -> String {
        for (kept, shown) in self.renames {
            if let Some(rest) = field.strip_prefix(kept)
                && (rest.is_empty() || rest.starts_with(['.', '[']))
            {
                return format!("{shown}{rest}");
            }
        }
        field.to_owned()
    }
}

type UpdateRules = fn(&serde_json::Value, &serde_json::Value) -> Result<(), Vec<FieldError>>;

/// Why a manifest is not an object of its kind.
#[derive(Clone, Debug, PartialEq)]
pub enum DecodeError {
    /// It does not decode as the kind (a field of the wrong type, a malformed quantity):
    /// Kubernetes answers 400.
    Malformed(FieldError),
    /// It decodes but breaks the kind's rules: 422, every bad field listed.
    Invalid(Vec<FieldError>),
}

/// A manifest decoded as its kind: the normalized object and what the kind did not know.
#[derive(Clone, Debug)]
pub struct Decoded {
    /// The object as the kind encodes it: unknown fields dropped, defaults explicit.
    pub value: serde_json::Value,
    /// Paths of fields the kind does not have (`spec.foo`), for strict field validation.
    pub unknown_fields: Vec<String>,
}

impl std::fmt::Debug for ResourceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceInfo")
            .field("kind", &self.kind)
            .field("api_version", &self.api_version())
            .field("plural", &self.plural)
            .field("scope", &self.scope)
            .finish()
    }
}

fn decode_as<R: Resource>(value: &serde_json::Value) -> Result<Decoded, DecodeError> {
    let kept = R::unserved(value);
    let value = kept.as_ref().unwrap_or(value);
    let mut unknown_fields = Vec::new();
    let mut note_unknown = |path: serde_ignored::Path<'_>| unknown_fields.push(path.to_string());
    let de = serde_ignored::Deserializer::new(value, &mut note_unknown);
    let mut obj: R = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        let field = FieldError::new(if path == "." { String::new() } else { path }, message);
        // A missing required field is a rule the object breaks (Kubernetes: "Required
        // value", 422); anything else did not decode.
        if field.message.starts_with("missing field") {
            DecodeError::Invalid(vec![field])
        } else {
            DecodeError::Malformed(field)
        }
    })?;
    obj.set_defaults();
    let mut errors = Errors::default();
    validate_meta(&mut errors, R::SCOPE, R::PLURAL, obj.meta());
    if let Err(kind_errors) = obj.validate() {
        errors.0.extend(kind_errors);
    }
    errors.into_result().map_err(DecodeError::Invalid)?;
    let value = serde_json::to_value(&obj)
        .map_err(|e| DecodeError::Invalid(vec![FieldError::new(String::new(), e.to_string())]))?;
    Ok(Decoded {
        value,
        unknown_fields,
    })
}

fn update_rules_of<R: Resource>(
    new: &serde_json::Value,
    old: &serde_json::Value,
) -> Result<(), Vec<FieldError>> {
    let decode = |v: &serde_json::Value| {
        R::deserialize(v).map_err(|e| vec![FieldError::new(String::new(), e.to_string())])
    };
    let (mut new, mut old) = (decode(new)?, decode(old)?);
    new.set_defaults();
    old.set_defaults();
    new.validate_update(&old)
}

/// True when the schema's `status` property refers to a definition with properties.
fn schema_has_status(schema: &schemars::Schema) -> bool {
    let root = schema.as_value();
    let Some(status) = root.pointer("/properties/status") else {
        return false;
    };
    let text = status.to_string();
    let Some(start) = text.find("#/$defs/") else {
        return status
            .get("properties")
            .is_some_and(|p| p.as_object().is_some_and(|o| !o.is_empty()));
    };
    let name: String = text[start + 8..]
        .chars()
        .take_while(|c| *c != '"')
        .collect();
    root.pointer(&format!("/$defs/{name}/properties"))
        .and_then(|p| p.as_object())
        .is_some_and(|o| !o.is_empty())
}

/// Checks the metadata every kind shares: name shape, labels, annotation size, and that the
/// scope's coordinates (tenant, namespace) are present.
pub fn validate_meta(errors: &mut Errors, scope: Scope, plural: &str, meta: &ObjectMeta) {
    if !meta.name.is_empty() || meta.generate_name.is_empty() {
        let check = if matches!(plural, "tenants" | "namespaces") {
            validation::dns_label(&meta.name)
        } else if matches!(
            plural,
            "roles" | "rolebindings" | "clusterroles" | "clusterrolebindings"
        ) {
            validation::path_segment(&meta.name)
        } else {
            validation::dns_subdomain(&meta.name)
        };
        errors.check("metadata.name", check);
    }
    validation::labels(errors, "metadata.labels", &meta.labels);
    for k in meta.annotations.keys() {
        errors.check(
            format!("metadata.annotations[{k}]"),
            validation::qualified_name(k),
        );
    }
    let size: usize = meta
        .annotations
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    if size > 256 * 1024 {
        errors.push(
            "metadata.annotations",
            format!("total size {size} exceeds 262144 bytes"),
        );
    }
    if scope != Scope::Cluster && !meta.tenant.is_empty() {
        errors.check("metadata.tenant", validation::dns_label(&meta.tenant));
    }
    if scope == Scope::Namespaced && !meta.namespace.is_empty() {
        errors.check("metadata.namespace", validation::dns_label(&meta.namespace));
    }
}

impl ResourceInfo {
    /// The info of a Rust kind.
    pub fn of<R: Resource>() -> Self {
        let schema = schemars::schema_for!(R);
        Self {
            kind: R::KIND,
            group: R::GROUP,
            version: R::VERSION,
            plural: R::PLURAL,
            store: R::STORE,
            short_names: R::SHORT_NAMES,
            scope: R::SCOPE,
            schema: Arc::new(schema.clone()),
            has_status: schema_has_status(&schema),
            decode: decode_as::<R>,
            update_rules: R::UPDATE_RULES.then_some(update_rules_of::<R> as UpdateRules),
            served: R::served,
            unserved: R::unserved,
            view: None,
        }
    }

    /// A view of `base`'s objects served in another group and version: the same objects
    /// (one plural, one store range), some top-level fields under other names, as
    /// `events.k8s.io/v1` serves core `v1` Events.
    pub fn view(
        base: &ResourceInfo,
        group: &'static str,
        version: &'static str,
        renames: &'static [(&'static str, &'static str)],
    ) -> Self {
        let view = View {
            kept_api_version: base.api_version(),
            renames,
        };
        let mut schema = base.schema.as_value().clone();
        if let Some(props) = schema.get_mut("properties").and_then(|p| p.as_object_mut()) {
            for (kept, shown) in renames {
                if let Some(p) = props.remove(*kept) {
                    props.insert((*shown).to_owned(), p);
                }
            }
        }
        Self {
            group,
            version,
            schema: Arc::new(
                schemars::Schema::try_from(schema).unwrap_or_else(|_| (*base.schema).clone()),
            ),
            view: Some(view),
            ..base.clone()
        }
    }

    /// True for a view of another kind's objects ([`ResourceInfo::view`]).
    pub fn is_view(&self) -> bool {
        self.view.is_some()
    }

    /// The object as clients are shown it ([`Resource::served`]).
    pub fn served(&self, value: &mut serde_json::Value) {
        (self.served)(value);
        if let Some(view) = &self.view {
            view.rename(value, true);
            if let Some(o) = value.as_object_mut() {
                o.insert("apiVersion".into(), self.api_version().into());
            }
        }
    }

    /// The object as it is kept ([`Resource::unserved`]).
    pub fn unserved(&self, value: serde_json::Value) -> serde_json::Value {
        let value = self.kept_names(value);
        (self.unserved)(&value).unwrap_or(value)
    }

    /// A view's object with the kept names and `apiVersion`; others as they are.
    fn kept_names(&self, mut value: serde_json::Value) -> serde_json::Value {
        if let Some(view) = &self.view {
            view.rename(&mut value, false);
            if let Some(o) = value.as_object_mut() {
                o.insert("apiVersion".into(), view.kept_api_version.clone().into());
            }
        }
        value
    }

    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The `apiVersion` objects are kept under: a view's kind's, else [`Self::api_version`].
    pub fn kept_api_version(&self) -> String {
        self.view
            .as_ref()
            .map_or_else(|| self.api_version(), |v| v.kept_api_version.clone())
    }

    /// Lower-case kind, as kubectl names it.
    pub fn singular(&self) -> String {
        self.kind.to_ascii_lowercase()
    }

    /// Decodes `value` as this kind and runs every validation; the errors name fields.
    pub fn validate(&self, value: &serde_json::Value) -> Result<(), Vec<FieldError>> {
        self.decode(value).map(|_| ()).map_err(|e| match e {
            DecodeError::Malformed(field) => vec![field],
            DecodeError::Invalid(errors) => errors,
        })
    }

    /// Decodes and validates `value` as this kind, returning the normalized object and the
    /// fields the kind does not know.
    pub fn decode(&self, value: &serde_json::Value) -> Result<Decoded, DecodeError> {
        let Some(view) = &self.view else {
            return (self.decode)(value);
        };
        let rename = |mut e: FieldError| {
            e.field = view.field_in_view(&e.field);
            e
        };
        (self.decode)(&self.kept_names(value.clone())).map_err(|e| match e {
            DecodeError::Malformed(f) => DecodeError::Malformed(rename(f)),
            DecodeError::Invalid(fs) => DecodeError::Invalid(fs.into_iter().map(rename).collect()),
        })
    }

    /// Checks the rules an update from `old` to `new` must keep (immutable fields); both
    /// are objects of this kind. Kinds without such rules pass without decoding.
    pub fn validate_update(
        &self,
        new: &serde_json::Value,
        old: &serde_json::Value,
    ) -> Result<(), Vec<FieldError>> {
        self.update_rules.map_or(Ok(()), |rules| rules(new, old))
    }

    /// The store key of one object. `tenant` is ignored for cluster-scoped kinds and
    /// `namespace` for all but namespaced kinds.
    ///
    /// Keys put the tenant first so that a tenant's data is one contiguous range:
    /// `/registry/{plural}/{name}`, `/registry/{plural}/{tenant}/{name}`,
    /// `/registry/{plural}/{tenant}/{namespace}/{name}`.
    pub fn key(&self, tenant: &str, namespace: &str, name: &str) -> String {
        super::object_key(self.store, self.scope, tenant, namespace, name)
    }

    /// The store key of an object, from its own metadata.
    pub fn key_of(&self, meta: &ObjectMeta) -> String {
        self.key(meta.tenant_or_system(), &meta.namespace, &meta.name)
    }

    /// The key prefix of a list: every object (`tenant` None), a tenant's objects, or one
    /// namespace's objects. Always ends with `/`.
    pub fn prefix(&self, tenant: Option<&str>, namespace: Option<&str>) -> String {
        let mut p = format!("/registry/{}/", self.store);
        if self.scope != Scope::Cluster
            && let Some(t) = tenant
        {
            p.push_str(t);
            p.push('/');
            if self.scope == Scope::Namespaced
                && let Some(ns) = namespace
            {
                p.push_str(ns);
                p.push('/');
            }
        }
        p
    }
}

/// Why a kind could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Another kind already uses the plural in the group (paths would collide) or the
    /// store range (keys would).
    #[error(
        "plural {plural:?} of {kind} collides with {existing} (same group and plural, or same store range)"
    )]
    DuplicatePlural {
        /// The plural.
        plural: String,
        /// The kind being registered.
        kind: String,
        /// The kind that has it.
        existing: String,
    },
}

/// The kinds a region serves. Built-in kinds come from [`Registry::builtin`]; other crates
/// add theirs with [`Registry::register`].
#[derive(Clone, Debug, Default)]
pub struct Registry {
    kinds: Vec<Arc<ResourceInfo>>,
    /// Index in `kinds` by store range name (unique: ranges must not collide).
    by_store: HashMap<&'static str, usize>,
    /// Index in `kinds` by (group, plural) (unique: paths must not collide).
    by_path: HashMap<(&'static str, &'static str), usize>,
    /// Kinds served in a second group ([`ResourceInfo::view`]).
    views: Vec<Arc<ResourceInfo>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry with the built-in kinds.
    pub fn builtin() -> Self {
        use super::*;
        let mut r = Self::new();
        r.register::<Tenant>()
            .expect("built-in plurals are distinct");
        r.register::<Namespace>()
            .expect("built-in plurals are distinct");
        r.register::<Node>().expect("built-in plurals are distinct");
        r.register::<Pod>().expect("built-in plurals are distinct");
        r.register::<NodeLedger>()
            .expect("built-in plurals are distinct");
        r.register::<Lease>()
            .expect("built-in plurals are distinct");
        r.register::<ReplicaSet>()
            .expect("built-in plurals are distinct");
        r.register::<Deployment>()
            .expect("built-in plurals are distinct");
        r.register::<Action>()
            .expect("built-in plurals are distinct");
        r.register::<Network>()
            .expect("built-in plurals are distinct");
        r.register::<ConfigMap>()
            .expect("built-in plurals are distinct");
        r.register::<Secret>()
            .expect("built-in plurals are distinct");
        r.register::<Event>()
            .expect("built-in plurals are distinct");
        r.register::<ServiceAccount>()
            .expect("built-in plurals are distinct");
        r.register::<DaemonSet>()
            .expect("built-in plurals are distinct");
        r.register::<StatefulSet>()
            .expect("built-in plurals are distinct");
        r.register::<Job>().expect("built-in plurals are distinct");
        r.register::<CronJob>()
            .expect("built-in plurals are distinct");
        r.register::<ResourceQuota>()
            .expect("built-in plurals are distinct");
        r.register::<LimitRange>()
            .expect("built-in plurals are distinct");
        r.register::<Service>()
            .expect("built-in plurals are distinct");
        r.register::<Endpoints>()
            .expect("built-in plurals are distinct");
        r.register::<EndpointSlice>()
            .expect("built-in plurals are distinct");
        r.register::<NetworkPolicy>()
            .expect("built-in plurals are distinct");
        r.register_view(Event::PLURAL, EVENTS_GROUP, "v1", EVENTS_V1_RENAMES)
            .expect("core events are registered");
        r
    }

    /// Serves the objects of the kind stored under `store` in `group`/`version` too, with
    /// the top-level fields `renames` names (kept, shown) renamed. None when no kind is
    /// stored there.
    pub fn register_view(
        &mut self,
        store: &str,
        group: &'static str,
        version: &'static str,
        renames: &'static [(&'static str, &'static str)],
    ) -> Option<Arc<ResourceInfo>> {
        let base = &self.kinds[*self.by_store.get(store)?];
        let view = Arc::new(ResourceInfo::view(base, group, version, renames));
        self.views.push(view.clone());
        Some(view)
    }

    /// Adds a kind. Store ranges are unique across groups, and plurals within a group.
    pub fn register<R: Resource>(&mut self) -> Result<Arc<ResourceInfo>, RegistryError> {
        self.register_info(ResourceInfo::of::<R>())
    }

    /// Adds a kind described by its info.
    pub fn register_info(
        &mut self,
        info: ResourceInfo,
    ) -> Result<Arc<ResourceInfo>, RegistryError> {
        let taken = (self.by_store.get(info.store))
            .or_else(|| self.by_path.get(&(info.group, info.plural)));
        if let Some(&i) = taken {
            return Err(RegistryError::DuplicatePlural {
                plural: info.plural.to_owned(),
                kind: info.kind.to_owned(),
                existing: self.kinds[i].kind.to_owned(),
            });
        }
        self.push(Arc::new(info))
    }

    fn push(&mut self, info: Arc<ResourceInfo>) -> Result<Arc<ResourceInfo>, RegistryError> {
        self.by_store.insert(info.store, self.kinds.len());
        self.by_path
            .insert((info.group, info.plural), self.kinds.len());
        self.kinds.push(info.clone());
        Ok(info)
    }

    /// The kinds for which `keep` is true, in the same order (a partition of the region
    /// serves only some).
    pub fn filtered(&self, keep: impl Fn(&ResourceInfo) -> bool) -> Self {
        let mut r = Self::new();
        for info in self.kinds.iter().filter(|i| keep(i)) {
            let _ = r.push(info.clone());
        }
        r.views = (self.views.iter())
            .filter(|v| r.by_store.contains_key(v.store) && keep(v))
            .cloned()
            .collect();
        r
    }

    /// Every registered kind, in registration order (views not included: they are the
    /// same objects).
    pub fn kinds(&self) -> impl Iterator<Item = &Arc<ResourceInfo>> {
        self.kinds.iter()
    }

    /// Every kind as clients find it: the registered kinds, then the views of them.
    pub fn served(&self) -> impl Iterator<Item = &Arc<ResourceInfo>> {
        self.kinds.iter().chain(&self.views)
    }

    /// The kind served at `group`/`version` under `plural`.
    pub fn by_plural(
        &self,
        group: &str,
        version: &str,
        plural: &str,
    ) -> Option<&Arc<ResourceInfo>> {
        if let Some(&i) = self.by_path.get(&(group, plural))
            && self.kinds[i].version == version
        {
            return Some(&self.kinds[i]);
        }
        self.views
            .iter()
            .find(|v| v.plural == plural && v.group == group && v.version == version)
    }

    /// The kind named by a manifest's `apiVersion` and `kind`.
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<&Arc<ResourceInfo>> {
        self.served()
            .find(|i| i.kind == kind && i.api_version() == api_version)
    }

    /// The kind a user means by `name`: plural, singular, short name or kind, any case.
    pub fn resolve_name(&self, name: &str) -> Option<&Arc<ResourceInfo>> {
        let n = name.to_ascii_lowercase();
        self.kinds
            .iter()
            .find(|i| i.plural == n || i.singular() == n || i.short_names.contains(&n.as_str()))
    }
}
