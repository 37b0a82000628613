//! Verbs on one kind, addressed by the object's store key (what informer caches and work
//! queues hold), mapped onto the Kubernetes and Arktos tenant paths: [`DynamicApi`] for any
//! registered kind by its [`ResourceInfo`] with JSON objects, [`Api`] for a Rust kind.

use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use centaurus_core::controller::{ListPage, ListWatch, SourceError, WatchEvent, WatchStream};
use centaurus_core::model::{Resource, ResourceInfo, Scope};
use centaurus_core::store::Revision;
use futures::StreamExt;
use http::Method;
use serde_json::{Value, json};

use crate::client::Client;
use crate::error::{ClientError, Status};

/// A patch body and its content type.
#[derive(Clone, Debug)]
pub enum Patch {
    /// RFC 7386 merge patch (`application/merge-patch+json`).
    Merge(Value),
    /// RFC 6902 JSON patch (`application/json-patch+json`).
    Json(Value),
    /// Kubernetes strategic merge patch (`application/strategic-merge-patch+json`).
    Strategic(Value),
}

impl Patch {
    fn content_type(&self) -> &'static str {
        match self {
            Patch::Merge(_) => "application/merge-patch+json",
            Patch::Json(_) => "application/json-patch+json",
            Patch::Strategic(_) => "application/strategic-merge-patch+json",
        }
    }

    fn body(&self) -> &Value {
        match self {
            Patch::Merge(v) | Patch::Json(v) | Patch::Strategic(v) => v,
        }
    }
}

/// Where a kind's objects are served: what a path needs of a kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KindRef {
    /// CamelCase kind.
    pub kind: &'static str,
    /// API group; empty for core.
    pub group: &'static str,
    /// Version.
    pub version: &'static str,
    /// Plural (paths).
    pub plural: &'static str,
    /// Store range name (keys).
    pub store: &'static str,
    /// Where objects live.
    pub scope: Scope,
}

impl KindRef {
    /// The kind of a Rust type.
    pub fn of<R: Resource>() -> Self {
        Self {
            kind: R::KIND,
            group: R::GROUP,
            version: R::VERSION,
            plural: R::PLURAL,
            store: R::STORE,
            scope: R::SCOPE,
        }
    }

    /// The kind a registry describes.
    pub fn from_info(info: &ResourceInfo) -> Self {
        Self {
            kind: info.kind,
            group: info.group,
            version: info.version,
            plural: info.plural,
            store: info.store,
            scope: info.scope,
        }
    }

    fn base(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }

    fn rest<'k>(&self, key: &'k str) -> Result<&'k str, ClientError> {
        key.strip_prefix("/registry/")
            .and_then(|k| k.strip_prefix(self.store))
            .and_then(|k| k.strip_prefix('/'))
            .ok_or_else(|| ClientError::Request(format!("{key:?} is not a key of {}", self.plural)))
    }

    /// The collection path of the objects in `tenant` (and `namespace`): every tenant's
    /// for `None`.
    pub fn collection(&self, tenant: Option<&str>, namespace: Option<&str>) -> String {
        let (base, plural) = (self.base(), self.plural);
        match (self.scope, tenant, namespace) {
            (Scope::Cluster, ..) => format!("{base}/{plural}"),
            (_, None, _) => format!("{base}/tenants/all/{plural}"),
            (Scope::Namespaced, Some(t), Some(ns)) => {
                format!("{base}/tenants/{}/namespaces/{}/{plural}", enc(t), enc(ns))
            }
            (_, Some(t), _) => format!("{base}/tenants/{}/{plural}", enc(t)),
        }
    }

    /// The path of the object at store key `key`.
    pub fn path_of(&self, key: &str) -> Result<String, ClientError> {
        let parts: Vec<&str> = self.rest(key)?.split('/').collect();
        let bad = || ClientError::Request(format!("{key:?} does not name one {}", self.kind));
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        let collection = match (self.scope, parts.as_slice()) {
            (Scope::Cluster, [_]) => self.collection(None, None),
            (Scope::Tenant, [t, _]) => self.collection(Some(t), None),
            (Scope::Namespaced, [t, ns, _]) => self.collection(Some(t), Some(ns)),
            _ => return Err(bad()),
        };
        Ok(format!("{collection}/{}", enc(parts[parts.len() - 1])))
    }

    /// The collection path of the objects under store prefix `prefix`.
    pub fn collection_of(&self, prefix: &str) -> Result<String, ClientError> {
        let parts: Vec<&str> = self
            .rest(prefix)?
            .split('/')
            .filter(|p| !p.is_empty())
            .collect();
        match (self.scope, parts.as_slice()) {
            (_, []) => Ok(self.collection(None, None)),
            (Scope::Tenant | Scope::Namespaced, [t]) => Ok(self.collection(Some(t), None)),
            (Scope::Namespaced, [t, ns]) => Ok(self.collection(Some(t), Some(ns))),
            _ => Err(ClientError::Request(format!(
                "{prefix:?} is not a collection of {}",
                self.plural
            ))),
        }
    }
}

fn enc(s: &str) -> String {
    // Names, tenants and namespaces are DNS names; anything else is refused by the server.
    s.replace('%', "%25")
        .replace('/', "%2F")
        .replace('?', "%3F")
        .replace('#', "%23")
}

fn percent(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn str_at<'v>(v: &'v Value, pointer: &str) -> &'v str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Verbs on any kind, with JSON objects (compare kube-rs's `Api<DynamicObject>`).
#[derive(Clone)]
pub struct DynamicApi {
    client: Client,
    kind: KindRef,
    fields: Option<String>,
}

impl DynamicApi {
    /// Access to `kind` through `client`.
    pub fn new(client: Client, kind: KindRef) -> Self {
        Self {
            client,
            kind,
            fields: None,
        }
    }

    /// Lists and watches only the objects whose fields match `selector`
    /// (`spec.nodeName=n1`), as the server's `fieldSelector`.
    pub fn with_fields(mut self, selector: impl Into<String>) -> Self {
        self.fields = Some(selector.into());
        self
    }

    /// The client underneath.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The kind.
    pub fn kind(&self) -> &KindRef {
        &self.kind
    }

    fn query(&self, mut q: Vec<(&'static str, String)>) -> String {
        if let Some(f) = &self.fields {
            q.push(("fieldSelector", f.clone()));
        }
        if q.is_empty() {
            return String::new();
        }
        let pairs: Vec<String> = q
            .iter()
            .map(|(k, v)| format!("{k}={}", percent(v)))
            .collect();
        format!("?{}", pairs.join("&"))
    }

    fn with_type(&self, mut obj: Value) -> Value {
        let api_version = if self.kind.group.is_empty() {
            self.kind.version.to_owned()
        } else {
            format!("{}/{}", self.kind.group, self.kind.version)
        };
        if let Some(o) = obj.as_object_mut() {
            o.insert("apiVersion".into(), json!(api_version));
            o.insert("kind".into(), json!(self.kind.kind));
        }
        obj
    }

    /// The object at `key`, if any.
    pub async fn get(&self, key: &str) -> Result<Option<Value>, ClientError> {
        match self.client.get(&self.kind.path_of(key)?).await?.ok() {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One page of the objects under `prefix`: at most `limit`, after `next`.
    pub async fn list_page(
        &self,
        prefix: &str,
        limit: usize,
        next: Option<String>,
    ) -> Result<ListPage<Value>, ClientError> {
        let mut q = vec![("limit", limit.to_string())];
        if let Some(t) = next {
            q.push(("continue", t));
        }
        let path = format!("{}{}", self.kind.collection_of(prefix)?, self.query(q));
        let mut list = self.client.get(&path).await?.ok()?;
        let revision = str_at(&list, "/metadata/resourceVersion")
            .parse()
            .map_err(|_| {
                ClientError::Decode(format!(
                    "list of {} has no resourceVersion",
                    self.kind.plural
                ))
            })?;
        let next = Some(str_at(&list, "/metadata/continue"))
            .filter(|c| !c.is_empty())
            .map(str::to_owned);
        let items = match list.get_mut("items").map(Value::take) {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        Ok(ListPage {
            items,
            revision,
            next,
        })
    }

    /// Every object under `prefix`, in pages of 500 that show one state.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Value>, ClientError> {
        let mut all = Vec::new();
        let mut next = None;
        loop {
            let page = self.list_page(prefix, 500, next.take()).await?;
            all.extend(page.items);
            match page.next {
                Some(t) => next = Some(t),
                None => return Ok(all),
            }
        }
    }

    /// Creates `obj` in the tenant (and namespace) its metadata names; the server stamps
    /// `uid`, `creationTimestamp` and the rest, and admits it as any other request.
    pub async fn create(&self, obj: Value) -> Result<Value, ClientError> {
        let tenant = match str_at(&obj, "/metadata/tenant") {
            "" => centaurus_core::model::SYSTEM_TENANT,
            t => t,
        };
        // Namespaced objects are created in a namespace: theirs, or `default`.
        let ns = (self.kind.scope == Scope::Namespaced).then(|| {
            match str_at(&obj, "/metadata/namespace") {
                "" => "default",
                ns => ns,
            }
        });
        let path = self.kind.collection(Some(tenant), ns);
        let body = self.with_type(obj).to_string();
        self.client
            .request(Method::POST, &path, "application/json", body)
            .await?
            .ok()
    }

    /// The store key of `obj`.
    fn key_of(&self, obj: &Value) -> String {
        let tenant = match str_at(obj, "/metadata/tenant") {
            "" => centaurus_core::model::SYSTEM_TENANT,
            t => t,
        };
        centaurus_core::model::object_key(
            self.kind.store,
            self.kind.scope,
            tenant,
            str_at(obj, "/metadata/namespace"),
            str_at(obj, "/metadata/name"),
        )
    }

    /// Replaces `obj` (all but its status, or only its status with `status`) if it is
    /// still at its `resourceVersion`.
    pub async fn replace(&self, obj: Value, status: bool) -> Result<Value, ClientError> {
        let path = format!(
            "{}{}",
            self.kind.path_of(&self.key_of(&obj))?,
            if status { "/status" } else { "" }
        );
        let body = self.with_type(obj).to_string();
        self.client
            .request(Method::PUT, &path, "application/json", body)
            .await?
            .ok()
    }

    /// Patches the object at `key` (its status with `status`).
    pub async fn patch(
        &self,
        key: &str,
        patch: &Patch,
        status: bool,
    ) -> Result<Value, ClientError> {
        let path = format!(
            "{}{}",
            self.kind.path_of(key)?,
            if status { "/status" } else { "" }
        );
        self.client
            .request(
                Method::PATCH,
                &path,
                patch.content_type(),
                patch.body().to_string(),
            )
            .await?
            .ok()
    }

    /// Deletes the object at `key` (only at revision `expected`, when given). Deleting
    /// what is gone is not an error.
    pub async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(), ClientError> {
        let body = match expected {
            Some(rv) => json!({"kind": "DeleteOptions", "apiVersion": "v1",
                "preconditions": {"resourceVersion": rv.to_string()}})
            .to_string(),
            None => String::new(),
        };
        match self
            .client
            .request(
                Method::DELETE,
                &self.kind.path_of(key)?,
                "application/json",
                body,
            )
            .await?
            .success()
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every change under `prefix` after revision `after`, with bookmarks; ends with
    /// [`SourceError::Gone`] when that history is gone.
    pub async fn watch(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<WatchStream<Value>, ClientError> {
        let q = vec![
            ("watch", "1".to_owned()),
            ("resourceVersion", after.to_string()),
            ("allowWatchBookmarks", "true".to_owned()),
        ];
        let path = format!("{}{}", self.kind.collection_of(prefix)?, self.query(q));
        let events = self.client.watch(&path).await?;
        Ok(events
            .map(|item| {
                let mut v = item.map_err(SourceError::from)?;
                let kind = str_at(&v, "/type").to_owned();
                let object = v.get_mut("object").map(Value::take).unwrap_or(Value::Null);
                match kind.as_str() {
                    "ADDED" | "MODIFIED" => Ok(WatchEvent::Put(object)),
                    "DELETED" => Ok(WatchEvent::Delete(object)),
                    "BOOKMARK" => str_at(&object, "/metadata/resourceVersion")
                        .parse()
                        .map(WatchEvent::Bookmark)
                        .map_err(|_| ClientError::Decode("bookmark without a revision".into())),
                    "ERROR" => {
                        let code = object.get("code").and_then(Value::as_u64).unwrap_or(500) as u16;
                        Err(ClientError::Api(Status::of(
                            code,
                            object.to_string().as_bytes(),
                        )))
                    }
                    other => Err(ClientError::Decode(format!("watch event type {other:?}"))),
                }
                .map_err(SourceError::from)
            })
            .boxed())
    }
}

/// Typed verbs on kind `R` through a [`Client`]: a [`DynamicApi`] that decodes.
pub struct Api<R> {
    dynamic: DynamicApi,
    _kind: PhantomData<fn() -> R>,
}

impl<R> Clone for Api<R> {
    fn clone(&self) -> Self {
        Self {
            dynamic: self.dynamic.clone(),
            _kind: PhantomData,
        }
    }
}

fn decode<R: Resource>(v: Value) -> Result<R, ClientError> {
    let v = R::unserved(&v).unwrap_or(v);
    serde_json::from_value(v).map_err(|e| ClientError::Decode(format!("{}: {e}", R::KIND)))
}

fn encode<R: Resource>(obj: &R) -> Result<Value, ClientError> {
    serde_json::to_value(obj).map_err(|e| ClientError::Request(e.to_string()))
}

impl<R: Resource> Api<R> {
    pub(crate) fn new(client: Client) -> Self {
        Self {
            dynamic: DynamicApi::new(client, KindRef::of::<R>()),
            _kind: PhantomData,
        }
    }

    /// Lists and watches only the objects whose fields match `selector`
    /// (`spec.nodeName=n1`), as the server's `fieldSelector`.
    pub fn with_fields(mut self, selector: impl Into<String>) -> Self {
        self.dynamic = self.dynamic.with_fields(selector);
        self
    }

    /// The client underneath.
    pub fn client(&self) -> &Client {
        self.dynamic.client()
    }

    /// The collection path of the objects in `tenant` (and `namespace`): every tenant's
    /// for `None`.
    pub fn collection(tenant: Option<&str>, namespace: Option<&str>) -> String {
        KindRef::of::<R>().collection(tenant, namespace)
    }

    /// The path of the object at store key `key`.
    pub fn path_of(key: &str) -> Result<String, ClientError> {
        KindRef::of::<R>().path_of(key)
    }

    /// The object at `key`, if any.
    pub async fn get(&self, key: &str) -> Result<Option<R>, ClientError> {
        self.dynamic.get(key).await?.map(decode).transpose()
    }

    /// One page of the objects under `prefix`: at most `limit`, after `next`.
    pub async fn list_page(
        &self,
        prefix: &str,
        limit: usize,
        next: Option<String>,
    ) -> Result<ListPage<R>, ClientError> {
        let page = self.dynamic.list_page(prefix, limit, next).await?;
        Ok(ListPage {
            items: page
                .items
                .into_iter()
                .map(decode)
                .collect::<Result<_, _>>()?,
            revision: page.revision,
            next: page.next,
        })
    }

    /// Every object under `prefix`, in pages of 500 that show one state.
    pub async fn list(&self, prefix: &str) -> Result<Vec<R>, ClientError> {
        self.dynamic
            .list(prefix)
            .await?
            .into_iter()
            .map(decode)
            .collect()
    }

    /// Creates `obj` in its tenant's space; the server stamps `uid`, `creationTimestamp`
    /// and the rest, and admits it as any other request.
    pub async fn create(&self, obj: R) -> Result<R, ClientError> {
        decode(self.dynamic.create(encode(&obj)?).await?)
    }

    /// Replaces the object (all but its status) if it is still at its `resourceVersion`.
    pub async fn update(&self, obj: &R) -> Result<R, ClientError> {
        decode(self.dynamic.replace(encode(obj)?, false).await?)
    }

    /// Replaces the object's status if it is still at its `resourceVersion`.
    pub async fn update_status(&self, obj: &R) -> Result<R, ClientError> {
        decode(self.dynamic.replace(encode(obj)?, true).await?)
    }

    async fn modify_with(
        &self,
        key: &str,
        status: bool,
        mut change: impl FnMut(&mut R) -> bool,
    ) -> Result<Option<R>, ClientError> {
        loop {
            let Some(mut obj) = self.get(key).await? else {
                return Ok(None);
            };
            if !change(&mut obj) {
                return Ok(Some(obj));
            }
            match self.dynamic.replace(encode(&obj)?, status).await {
                Ok(o) => return decode(o).map(Some),
                Err(e) if e.is_conflict() => continue,
                Err(e) if e.is_not_found() => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads the object at `key`, lets `change` edit it, and writes it back (all but its
    /// status), again on each conflict. `change` returns false to leave it as it is.
    /// Returns the object as stored, or `None` when it does not exist.
    pub async fn modify(
        &self,
        key: &str,
        change: impl FnMut(&mut R) -> bool,
    ) -> Result<Option<R>, ClientError> {
        self.modify_with(key, false, change).await
    }

    /// As [`Api::modify`], for the object's status.
    pub async fn modify_status(
        &self,
        key: &str,
        change: impl FnMut(&mut R) -> bool,
    ) -> Result<Option<R>, ClientError> {
        self.modify_with(key, true, change).await
    }

    /// Patches the object at `key` (its status with `status`).
    pub async fn patch(&self, key: &str, patch: &Patch, status: bool) -> Result<R, ClientError> {
        decode(self.dynamic.patch(key, patch, status).await?)
    }

    /// Deletes the object at `key` (only at revision `expected`, when given). Deleting
    /// what is gone is not an error.
    pub async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(), ClientError> {
        self.dynamic.delete(key, expected).await
    }

    /// Every change under `prefix` after revision `after`, with bookmarks; ends with
    /// [`SourceError::Gone`] when that history is gone.
    pub async fn watch(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<WatchStream<R>, ClientError> {
        let events = self.dynamic.watch(prefix, after).await?;
        Ok(events
            .map(|e| match e? {
                WatchEvent::Put(v) => Ok(WatchEvent::Put(decode(v)?)),
                WatchEvent::Delete(v) => Ok(WatchEvent::Delete(decode(v)?)),
                WatchEvent::Bookmark(rev) => Ok(WatchEvent::Bookmark(rev)),
            })
            .boxed())
    }

    /// A [`ListWatch`] of the objects under `prefix`, for an informer.
    pub fn source(&self, prefix: impl Into<String>) -> Arc<dyn ListWatch<R>> {
        Arc::new(Source {
            api: self.clone(),
            prefix: prefix.into(),
        })
    }
}

struct Source<R> {
    api: Api<R>,
    prefix: String,
}

#[async_trait]
impl<R: Resource> ListWatch<R> for Source<R> {
    async fn list(&self, limit: usize, next: Option<String>) -> Result<ListPage<R>, SourceError> {
        Ok(self.api.list_page(&self.prefix, limit, next).await?)
    }

    async fn watch(&self, after: Revision) -> Result<WatchStream<R>, SourceError> {
        Ok(self.api.watch(&self.prefix, after).await?)
    }
}
