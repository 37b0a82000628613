//! [`Api`]: typed verbs on one kind, addressed by the object's store key (what informer
//! caches and work queues hold), mapped onto the Kubernetes and Arktos tenant paths.

use std::marker::PhantomData;

use async_trait::async_trait;
use centaurus_core::controller::{ListPage, ListWatch, SourceError, WatchEvent, WatchStream};
use centaurus_core::model::{Resource, Scope};
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

/// Typed access to kind `R` through a [`Client`].
pub struct Api<R> {
    client: Client,
    fields: Option<String>,
    _kind: PhantomData<fn() -> R>,
}

impl<R> Clone for Api<R> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            fields: self.fields.clone(),
            _kind: PhantomData,
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

impl<R: Resource> Api<R> {
    pub(crate) fn new(client: Client) -> Self {
        Self {
            client,
            fields: None,
            _kind: PhantomData,
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

    fn base() -> String {
        if R::GROUP.is_empty() {
            format!("/api/{}", R::VERSION)
        } else {
            format!("/apis/{}/{}", R::GROUP, R::VERSION)
        }
    }

    fn rest(key: &str) -> Result<&str, ClientError> {
        key.strip_prefix("/registry/")
            .and_then(|k| k.strip_prefix(R::PLURAL))
            .and_then(|k| k.strip_prefix('/'))
            .ok_or_else(|| ClientError::Request(format!("{key:?} is not a key of {}", R::PLURAL)))
    }

    /// The collection path of the objects in `tenant` (and `namespace`): every tenant's
    /// for `None`.
    pub fn collection(tenant: Option<&str>, namespace: Option<&str>) -> String {
        let (base, plural) = (Self::base(), R::PLURAL);
        match (R::SCOPE, tenant, namespace) {
            (Scope::Cluster, ..) => format!("{base}/{plural}"),
            (_, None, _) => format!("{base}/tenants/all/{plural}"),
            (Scope::Namespaced, Some(t), Some(ns)) => {
                format!("{base}/tenants/{}/namespaces/{}/{plural}", enc(t), enc(ns))
            }
            (_, Some(t), _) => format!("{base}/tenants/{}/{plural}", enc(t)),
        }
    }

    /// The path of the object at store key `key`.
    pub fn path_of(key: &str) -> Result<String, ClientError> {
        let parts: Vec<&str> = Self::rest(key)?.split('/').collect();
        let bad = || ClientError::Request(format!("{key:?} does not name one {}", R::KIND));
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        match (R::SCOPE, parts.as_slice()) {
            (Scope::Cluster, [name]) => {
                Ok(format!("{}/{}", Self::collection(None, None), enc(name)))
            }
            (Scope::Tenant, [t, name]) => {
                Ok(format!("{}/{}", Self::collection(Some(t), None), enc(name)))
            }
            (Scope::Namespaced, [t, ns, name]) => Ok(format!(
                "{}/{}",
                Self::collection(Some(t), Some(ns)),
                enc(name)
            )),
            _ => Err(bad()),
        }
    }

    /// The collection path of the objects under store prefix `prefix`.
    pub fn collection_of(prefix: &str) -> Result<String, ClientError> {
        let rest = Self::rest(prefix)?;
        let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
        match (R::SCOPE, parts.as_slice()) {
            (_, []) => Ok(Self::collection(None, None)),
            (Scope::Tenant | Scope::Namespaced, [t]) => Ok(Self::collection(Some(t), None)),
            (Scope::Namespaced, [t, ns]) => Ok(Self::collection(Some(t), Some(ns))),
            _ => Err(ClientError::Request(format!(
                "{prefix:?} is not a collection of {}",
                R::PLURAL
            ))),
        }
    }

    fn decode(v: Value) -> Result<R, ClientError> {
        serde_json::from_value(v).map_err(|e| ClientError::Decode(format!("{}: {e}", R::KIND)))
    }

    fn body(obj: &R) -> Result<String, ClientError> {
        let mut obj = obj.clone();
        obj.set_type_meta();
        serde_json::to_string(&obj).map_err(|e| ClientError::Request(e.to_string()))
    }

    fn query(&self, mut q: Vec<(&'static str, String)>) -> String {
        if let Some(f) = &self.fields {
            q.push(("fieldSelector", f.clone()));
        }
        let mut s = form_urlencoded_pairs(&q);
        if !s.is_empty() {
            s.insert(0, '?');
        }
        s
    }

    /// The object at `key`, if any.
    pub async fn get(&self, key: &str) -> Result<Option<R>, ClientError> {
        match self.client.get(&Self::path_of(key)?).await?.ok() {
            Ok(v) => Self::decode(v).map(Some),
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
    ) -> Result<ListPage<R>, ClientError> {
        let mut q = vec![("limit", limit.to_string())];
        if let Some(t) = next {
            q.push(("continue", t));
        }
        let path = format!("{}{}", Self::collection_of(prefix)?, self.query(q));
        let mut list = self.client.get(&path).await?.ok()?;
        let meta = list.get("metadata").cloned().unwrap_or(Value::Null);
        let revision = meta
            .get("resourceVersion")
            .and_then(Value::as_str)
            .and_then(|r| r.parse().ok())
            .ok_or_else(|| {
                ClientError::Decode(format!("list of {} has no resourceVersion", R::PLURAL))
            })?;
        let next = meta
            .get("continue")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .map(str::to_owned);
        let items = match list.get_mut("items").map(Value::take) {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        Ok(ListPage {
            items: items
                .into_iter()
                .map(Self::decode)
                .collect::<Result<_, _>>()?,
            revision,
            next,
        })
    }

    /// Every object under `prefix`, in pages of 500 that show one state.
    pub async fn list(&self, prefix: &str) -> Result<Vec<R>, ClientError> {
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

    /// Creates `obj` in its tenant's space; the server stamps `uid`, `creationTimestamp`
    /// and the rest, and admits it as any other request.
    pub async fn create(&self, obj: R) -> Result<R, ClientError> {
        let m = obj.meta();
        let ns = (R::SCOPE == Scope::Namespaced).then_some(m.namespace.as_str());
        let path = Self::collection(Some(m.tenant_or_system()), ns);
        let v = self
            .client
            .request(Method::POST, &path, "application/json", Self::body(&obj)?)
            .await?
            .ok()?;
        Self::decode(v)
    }

    async fn put(&self, obj: &R, suffix: &str) -> Result<R, ClientError> {
        let path = format!("{}{suffix}", Self::path_of(&obj.key())?);
        let v = self
            .client
            .request(Method::PUT, &path, "application/json", Self::body(obj)?)
            .await?
            .ok()?;
        Self::decode(v)
    }

    /// Replaces the object (all but its status) if it is still at its `resourceVersion`.
    pub async fn update(&self, obj: &R) -> Result<R, ClientError> {
        self.put(obj, "").await
    }

    /// Replaces the object's status if it is still at its `resourceVersion`.
    pub async fn update_status(&self, obj: &R) -> Result<R, ClientError> {
        self.put(obj, "/status").await
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
            let written = if status {
                self.update_status(&obj).await
            } else {
                self.update(&obj).await
            };
            match written {
                Ok(o) => return Ok(Some(o)),
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
        let path = format!(
            "{}{}",
            Self::path_of(key)?,
            if status { "/status" } else { "" }
        );
        let v = self
            .client
            .request(
                Method::PATCH,
                &path,
                patch.content_type(),
                patch.body().to_string(),
            )
            .await?
            .ok()?;
        Self::decode(v)
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
                &Self::path_of(key)?,
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
    /// [`ClientError`] 410 when that history is gone.
    pub async fn watch(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<WatchStream<R>, ClientError> {
        let q = vec![
            ("watch", "1".to_owned()),
            ("resourceVersion", after.to_string()),
            ("allowWatchBookmarks", "true".to_owned()),
        ];
        let path = format!("{}{}", Self::collection_of(prefix)?, self.query(q));
        let events = self.client.watch(&path).await?;
        Ok(events
            .map(|item| {
                let mut v = item.map_err(SourceError::from)?;
                let kind = v
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                let object = v.get_mut("object").map(Value::take).unwrap_or(Value::Null);
                match kind.as_str() {
                    "ADDED" | "MODIFIED" => Self::decode(object).map(WatchEvent::Put),
                    "DELETED" => Self::decode(object).map(WatchEvent::Delete),
                    "BOOKMARK" => object
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str)
                        .and_then(|r| r.parse().ok())
                        .map(WatchEvent::Bookmark)
                        .ok_or_else(|| ClientError::Decode("bookmark without a revision".into())),
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

    /// A [`ListWatch`] of the objects under `prefix`, for an informer.
    pub fn source(&self, prefix: impl Into<String>) -> std::sync::Arc<dyn ListWatch<R>> {
        std::sync::Arc::new(Source {
            api: self.clone(),
            prefix: prefix.into(),
        })
    }
}

fn form_urlencoded_pairs(q: &[(&str, String)]) -> String {
    q.iter()
        .map(|(k, v)| format!("{k}={}", percent(v)))
        .collect::<Vec<_>>()
        .join("&")
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
