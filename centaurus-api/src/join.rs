//! `POST /api/v1/nodes/{name}/join`: a node agent gets its credentials. The body carries a
//! PEM certificate request (`{"csr": "..."}`); the answer (`NodeCredentials`) carries a
//! client certificate for `system:node:NAME` signed by the region's CA, and that CA.
//!
//! A bootstrap token (`system:bootstrappers`, see the `token` subresource of the `system`
//! tenant) may join any node whose agent is not alive (no valid Lease), so a token cannot
//! take over a running node; a node may renew its own credentials.

use std::sync::Arc;

use axum::response::Response;
use centaurus_core::model::{self, Lease, Resource};
use centaurus_tenancy::{Identity, identity};
use http::StatusCode;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::server::{ApiServer, Target, json_response};

/// Longest certificate request accepted.
const MAX_CSR_BYTES: usize = 16 * 1024;

impl ApiServer {
    /// Signs node credentials with the region's CA; servers without one refuse joins.
    pub fn set_pki(&self, pki: crate::tls::Pki) -> bool {
        self.pki.set(Arc::new(pki)).is_ok()
    }

    pub(crate) async fn join_node(
        &self,
        target: &Target,
        caller: &Identity,
        body: &[u8],
    ) -> ApiResult<Response> {
        let pki =
            self.pki.get().cloned().ok_or_else(|| {
                ApiError::method_not_allowed("this server signs no node credentials")
            })?;
        let node = target.name().to_owned();
        if model::validation::dns_subdomain(&node).is_err() {
            return Err(ApiError::bad_request(format!(
                "node name {node:?} is not a DNS-1123 subdomain"
            )));
        }
        let req: Value = serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("unable to decode the join request: {e}"))
        })?;
        let csr = req
            .get("csr")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty() && c.len() <= MAX_CSR_BYTES)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "the join request needs \"csr\": a PEM certificate request of at most {MAX_CSR_BYTES} bytes"
                ))
            })?
            .to_owned();
        if identity::is_bootstrapper(caller) && self.agent_alive(&node).await? {
            return Err(ApiError::conflict(
                "nodes",
                &node,
                "the node's agent is alive (its Lease is valid): a bootstrap token cannot take it over",
            ));
        }
        let name = node.clone();
        let certificate = self
            .offload(target, csr.len(), move || {
                pki.sign_node_request(&csr, &name)
                    .map_err(|e| ApiError::bad_request(format!("certificate request: {e}")))
            })
            .await?;
        let ca = self
            .pki
            .get()
            .map(|p| p.ca_cert.clone())
            .unwrap_or_default();
        tracing::info!(node, by = caller.user, "node credentials issued");
        Ok(json_response(
            StatusCode::CREATED,
            &json!({
                "kind": "NodeCredentials",
                "apiVersion": "v1",
                "node": node,
                "user": identity::node(&node).user,
                "certificate": certificate,
                "ca": ca,
            }),
        ))
    }

    /// True when node `node` has a Lease that is valid now.
    async fn agent_alive(&self, node: &str) -> ApiResult<bool> {
        let key = model::object_key(
            Lease::PLURAL,
            Lease::SCOPE,
            model::SYSTEM_TENANT,
            model::NODE_LEASE_NAMESPACE,
            node,
        );
        let Some(kv) = self
            .store
            .get(&key)
            .await
            .map_err(|e| ApiError::from_store(e, "leases", node))?
        else {
            return Ok(false);
        };
        Ok(serde_json::from_slice::<Lease>(&kv.value).is_ok_and(|l| l.is_valid_at(model::now())))
    }
}
