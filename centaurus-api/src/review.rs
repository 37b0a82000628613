//! The review APIs, answered by the server's own authorizer so they tell the caller the
//! truth: `SelfSubjectAccessReview` (`kubectl auth can-i VERB RESOURCE`),
//! `SelfSubjectRulesReview` (`kubectl auth can-i --list`) and `SelfSubjectReview`
//! (`kubectl auth whoami`). Nothing is stored; each is created and answered at once.

use axum::response::Response;
use centaurus_core::model::Scope;
use centaurus_tenancy::{Attributes, Identity, Verb};
use http::StatusCode;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::server::{ApiServer, json_response};

/// The review a path creates, if it is one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Review {
    /// `authorization.k8s.io/v1` `selfsubjectaccessreviews`.
    Access,
    /// `authorization.k8s.io/v1` `selfsubjectrulesreviews`.
    Rules,
    /// `authentication.k8s.io/v1` `selfsubjectreviews`.
    Subject,
}

impl Review {
    /// The review `path` names (`/apis/{group}/v1/{plural}`).
    pub(crate) fn of(path: &str) -> Option<Self> {
        match path.trim_end_matches('/') {
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews" => Some(Self::Access),
            "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews" => Some(Self::Rules),
            "/apis/authentication.k8s.io/v1/selfsubjectreviews" => Some(Self::Subject),
            _ => None,
        }
    }
}

/// The verbs a rules review asks about, in Kubernetes' order.
const VERBS: [Verb; 7] = [
    Verb::Get,
    Verb::List,
    Verb::Watch,
    Verb::Create,
    Verb::Update,
    Verb::Patch,
    Verb::Delete,
];

fn verb_of(name: &str) -> Option<Verb> {
    VERBS.into_iter().find(|v| v.as_str() == name)
}

/// Paths outside the resources that every authenticated caller may read.
const OPEN_PATHS: [&str; 7] = [
    "/healthz", "/readyz", "/livez", "/version", "/api", "/apis", "/openapi",
];

impl ApiServer {
    /// Answers `review` for `caller` from the request `body`.
    pub(crate) async fn review(
        &self,
        review: Review,
        caller: &Identity,
        content_type: Option<&str>,
        body: bytes::Bytes,
    ) -> ApiResult<Response> {
        let mut obj = if body.is_empty() {
            json!({})
        } else {
            // Off the serving threads, as every body is decoded.
            let content_type = content_type.map(str::to_owned);
            self.cpu
                .run(&caller.tenant, body.len(), move || {
                    crate::codec::decode_body(content_type.as_deref(), &body)
                })
                .await?
        };
        let (api_version, kind) = match review {
            Review::Access => ("authorization.k8s.io/v1", "SelfSubjectAccessReview"),
            Review::Rules => ("authorization.k8s.io/v1", "SelfSubjectRulesReview"),
            Review::Subject => ("authentication.k8s.io/v1", "SelfSubjectReview"),
        };
        obj["apiVersion"] = json!(api_version);
        obj["kind"] = json!(kind);
        obj["status"] = match review {
            Review::Access => self.access(caller, obj.get("spec")).await?,
            Review::Rules => {
                let ns = obj
                    .pointer("/spec/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                self.rules(caller, ns).await
            }
            Review::Subject => {
                let mut groups = caller.groups.clone();
                groups.push("system:authenticated".into());
                json!({"userInfo": {
                    "username": caller.user,
                    "groups": groups,
                    "extra": {
                        "centaurus.io/tenant": [caller.tenant],
                        "centaurus.io/tenant-uid": caller.tenant_uid.iter().collect::<Vec<_>>(),
                    },
                }})
            }
        };
        Ok(json_response(StatusCode::CREATED, &obj))
    }

    /// Whether `caller` may do what `spec` (`resourceAttributes` or
    /// `nonResourceAttributes`) describes, in its own tenant's space.
    async fn access(&self, caller: &Identity, spec: Option<&Value>) -> ApiResult<Value> {
        let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        if let Some(nr) = spec.and_then(|s| s.get("nonResourceAttributes")) {
            let (path, verb) = (field(nr, "path"), field(nr, "verb"));
            let open = verb == "get"
                && OPEN_PATHS
                    .iter()
                    .any(|p| path == *p || path.starts_with(&format!("{p}/")));
            let metrics = verb == "get"
                && path == "/metrics"
                && caller.is_system()
                && !centaurus_tenancy::confine::is_component(caller);
            return Ok(if open || metrics {
                json!({"allowed": true})
            } else {
                json!({"allowed": false, "reason": format!("{verb} {path} is not open to {}", caller.user)})
            });
        }
        let ra = spec
            .and_then(|s| s.get("resourceAttributes"))
            .ok_or_else(|| {
                ApiError::bad_request("spec needs resourceAttributes or nonResourceAttributes")
            })?;
        let (verb_name, group, resource) =
            (field(ra, "verb"), field(ra, "group"), field(ra, "resource"));
        let Some(verb) = verb_of(&verb_name).or_else(|| {
            // `deletecollection` is a delete of each; `*` asks for every verb.
            (verb_name == "deletecollection").then_some(Verb::Delete)
        }) else {
            if verb_name == "*" {
                let mut all = true;
                for v in VERBS {
                    all &= self.allowed(caller, v, ra).await.0;
                }
                return Ok(json!({"allowed": all}));
            }
            return Ok(json!({"allowed": false, "reason": format!("unknown verb {verb_name:?}")}));
        };
        if !self
            .registry()
            .kinds()
            .any(|k| k.group == group && k.plural == resource)
        {
            return Ok(json!({
                "allowed": false,
                "reason": format!("this region serves no resource {resource:?} in group {group:?}"),
            }));
        }
        let (allowed, reason) = self.allowed(caller, verb, ra).await;
        Ok(match reason {
            Some(r) => json!({"allowed": allowed, "reason": r}),
            None => json!({"allowed": allowed}),
        })
    }

    /// The authorizer's answer for `verb` on what `ra` names.
    async fn allowed(&self, caller: &Identity, verb: Verb, ra: &Value) -> (bool, Option<String>) {
        let field = |k: &str| ra.get(k).and_then(Value::as_str).unwrap_or("");
        let Some(info) = self
            .registry()
            .kinds()
            .find(|k| k.group == field("group") && k.plural == field("resource"))
        else {
            return (false, None);
        };
        let resource = match field("subresource") {
            "" => info.plural.to_owned(),
            sub => format!("{}/{sub}", info.plural),
        };
        let tenant = (info.scope != Scope::Cluster).then(|| self.resolver.resolve(caller, None));
        let namespace =
            Some(field("namespace")).filter(|n| !n.is_empty() && info.scope == Scope::Namespaced);
        let name = Some(field("name")).filter(|n| !n.is_empty());
        match self
            .authorizer
            .authorize(
                caller,
                &Attributes {
                    verb,
                    group: info.group,
                    resource: &resource,
                    scope: info.scope,
                    tenant: tenant.as_deref(),
                    namespace,
                    name,
                    fields: &[],
                },
            )
            .await
        {
            Ok(()) => (true, None),
            Err(d) => (false, Some(d.0)),
        }
    }

    /// Every resource rule that holds for `caller` in `namespace` of its own space, found
    /// by asking the authorizer about each kind and verb.
    async fn rules(&self, caller: &Identity, namespace: &str) -> Value {
        let mut rules = Vec::new();
        let kinds: Vec<_> = self.registry().kinds().cloned().collect();
        for info in kinds {
            let mut subresources = vec![String::new()];
            if info.has_status {
                subresources.push("status".into());
            }
            for sub in subresources {
                let ra = json!({
                    "group": info.group,
                    "resource": info.plural,
                    "subresource": sub,
                    "namespace": namespace,
                });
                let mut verbs = Vec::new();
                // A status is read and written, never listed, made or removed on its own.
                let served =
                    |v: Verb| sub.is_empty() || matches!(v, Verb::Get | Verb::Update | Verb::Patch);
                for v in VERBS.into_iter().filter(|v| served(*v)) {
                    if self.allowed(caller, v, &ra).await.0 {
                        verbs.push(v.as_str());
                    }
                }
                if !verbs.is_empty() {
                    let resource = if sub.is_empty() {
                        info.plural.to_owned()
                    } else {
                        format!("{}/{sub}", info.plural)
                    };
                    rules.push(
                        json!({"verbs": verbs, "apiGroups": [info.group], "resources": [resource]}),
                    );
                }
            }
        }
        rules.push(json!({
            "verbs": ["create"],
            "apiGroups": ["authorization.k8s.io"],
            "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
        }));
        rules.push(json!({
            "verbs": ["create"],
            "apiGroups": ["authentication.k8s.io"],
            "resources": ["selfsubjectreviews"],
        }));
        json!({
            "resourceRules": rules,
            "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": OPEN_PATHS.iter().flat_map(|p| [p.to_string(), format!("{p}/*")]).collect::<Vec<_>>()}],
            "incomplete": false,
        })
    }
}
