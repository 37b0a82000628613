//! `POST …/serviceaccounts/{name}/token`: a TokenRequest (`authentication.k8s.io/v1`, as
//! `kubectl create token` and node agents send it) answered with a signed token of the
//! account ([`centaurus_tenancy::accounts`]), bound to a pod when `boundObjectRef` names
//! one. A node agent may ask only for the account of a pod bound to its node, bound to
//! that pod.

use std::time::Duration;

use axum::response::Response;
use bytes::Bytes;
use centaurus_core::model::{self, Pod, Scope, ServiceAccount, Tenant};
use http::StatusCode;
use serde_json::{Value, json};

use crate::codec::object_of;
use crate::error::{ApiError, ApiResult};
use crate::server::{ApiServer, Target, json_response};

/// A token's life when the request names none (Kubernetes' default).
const DEFAULT_LIFE: Duration = Duration::from_secs(3600);

impl ApiServer {
    pub(crate) async fn account_token(
        &self,
        target: &Target,
        content_type: Option<&str>,
        body: &Bytes,
    ) -> ApiResult<Response> {
        let name = target.name().to_owned();
        let req = if body.is_empty() {
            json!({})
        } else {
            self.decode(target, content_type, body).await?
        };
        let invalid = |field: &str, message: String| {
            ApiError::invalid(
                "TokenRequest",
                &name,
                &[model::FieldError::new(field, message)],
            )
        };
        let spec = req.get("spec").cloned().unwrap_or(json!({}));
        let life = match spec.get("expirationSeconds") {
            None | Some(Value::Null) => DEFAULT_LIFE,
            Some(v) => v
                .as_u64()
                .map(Duration::from_secs)
                .filter(|d| *d >= centaurus_tenancy::accounts::MIN_TOKEN_LIFE)
                .ok_or_else(|| {
                    invalid(
                        "spec.expirationSeconds",
                        "must be at least 600 seconds".into(),
                    )
                })?,
        };
        let audiences: Vec<String> = match spec.get("audiences") {
            None | Some(Value::Null) => Vec::new(),
            Some(a) => serde_json::from_value(a.clone())
                .map_err(|_| invalid("spec.audiences", "must be a list of strings".into()))?,
        };
        let account: ServiceAccount =
            serde_json::from_value(object_of(&self.get_kv(target, &name).await?)?)
                .map_err(|e| ApiError::internal(e.to_string()))?;
        let tenant = account.metadata.tenant_or_system().to_owned();
        let pod = match spec.get("boundObjectRef").filter(|b| !b.is_null()) {
            None => None,
            Some(b) => Some(self.bound_pod(&account, b).await?),
        };
        if let Some(node) = &target.node
            && pod.as_ref().is_none_or(|p| p.spec.node_name != *node)
        {
            return Err(ApiError::forbidden(format!(
                "node {node} may ask only for tokens bound to a pod bound to it"
            )));
        }
        let tenant_uid = match tenant.as_str() {
            model::SYSTEM_TENANT => None,
            t => {
                let key = model::object_key("tenants", Scope::Cluster, t, "", t);
                self.store
                    .get(&key)
                    .await
                    .map_err(|e| ApiError::from_store(e, "tenants", t))?
                    .and_then(|kv| serde_json::from_slice::<Tenant>(&kv.value).ok())
                    .map(|t| t.metadata.uid)
            }
        };
        let issued = self
            .accounts
            .issue(
                &account,
                tenant_uid.as_deref(),
                pod.as_ref(),
                life,
                &audiences,
            )
            .map_err(ApiError::internal)?;
        let mut spec = spec;
        spec["expirationSeconds"] = json!((issued.expires - model::now()).num_seconds().max(0));
        Ok(json_response(
            StatusCode::CREATED,
            &json!({
                "kind": "TokenRequest",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"name": name, "namespace": account.metadata.namespace, "tenant": tenant},
                "spec": spec,
                "status": {"token": issued.token, "expirationTimestamp": issued.expires},
            }),
        ))
    }

    /// The pod a token is to be bound to: in the account's namespace, running as it.
    async fn bound_pod(&self, account: &ServiceAccount, bound: &Value) -> ApiResult<Pod> {
        let field = |f: &str| bound.get(f).and_then(Value::as_str).unwrap_or("");
        let invalid = |message: String| {
            ApiError::invalid(
                "TokenRequest",
                &account.metadata.name,
                &[model::FieldError::new("spec.boundObjectRef", message)],
            )
        };
        if field("kind") != "Pod" {
            return Err(invalid(format!(
                "tokens are bound to Pods, not {:?}",
                field("kind")
            )));
        }
        let key = model::object_key(
            "pods",
            Scope::Namespaced,
            account.metadata.tenant_or_system(),
            &account.metadata.namespace,
            field("name"),
        );
        let pod: Pod = self
            .store
            .get(&key)
            .await
            .map_err(|e| ApiError::from_store(e, "pods", field("name")))?
            .and_then(|kv| serde_json::from_slice(&kv.value).ok())
            .ok_or_else(|| invalid(format!("pod {:?} does not exist", field("name"))))?;
        let uid = field("uid");
        if !uid.is_empty() && uid != pod.metadata.uid {
            return Err(invalid(format!(
                "pod {:?} has another uid than {uid:?}",
                field("name")
            )));
        }
        let runs_as = match pod.spec.service_account_name.as_str() {
            "" => model::DEFAULT_SERVICE_ACCOUNT,
            n => n,
        };
        if runs_as != account.metadata.name {
            return Err(invalid(format!(
                "pod {:?} runs as {runs_as:?}, not {:?}",
                field("name"),
                account.metadata.name
            )));
        }
        Ok(pod)
    }
}
