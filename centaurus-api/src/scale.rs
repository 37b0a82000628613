//! The `scale` subresource of Deployments and ReplicaSets (`autoscaling/v1` `Scale`), which
//! `kubectl scale` reads and patches.

use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::patch::PatchKind;
use crate::query::Params;
use crate::server::{ApiServer, Target};

/// Kinds with a `scale` subresource.
pub(crate) fn has_scale(plural: &str) -> bool {
    matches!(plural, "deployments" | "replicasets")
}

/// The `Scale` view of a Deployment or ReplicaSet.
fn scale_of(parent: &Value) -> Value {
    let mut meta = serde_json::Map::new();
    for field in [
        "name",
        "namespace",
        "tenant",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = parent.pointer(&format!("/metadata/{field}")) {
            meta.insert(field.into(), v.clone());
        }
    }
    let selector = parent
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": meta,
        "spec": {"replicas": parent.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {
            "replicas": parent.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

impl ApiServer {
    fn parent(target: &Target) -> Target {
        Target {
            subresource: None,
            ..target.clone()
        }
    }

    /// `GET {deployments|replicasets}/{name}/scale`.
    pub(crate) async fn get_scale(&self, target: &Target) -> ApiResult<Value> {
        let parent = self.get_kv(target, target.name()).await?;
        Ok(scale_of(&crate::codec::object_of(&parent)?))
    }

    /// `PUT …/scale`: sets the parent's `spec.replicas`; a `resourceVersion` in the Scale is
    /// a precondition on the parent.
    pub(crate) async fn put_scale(
        &self,
        target: &Target,
        scale: &Value,
        params: &Params,
    ) -> ApiResult<Value> {
        let replicas = scale
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .filter(|n| (0..=i64::from(i32::MAX)).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(
                    "Scale",
                    target.name(),
                    &[centaurus_core::model::FieldError::new(
                        "spec.replicas",
                        "must be a non-negative integer",
                    )],
                )
            })?;
        let parent = Self::parent(target);
        let mut obj = crate::codec::object_of(&self.get_kv(target, target.name()).await?)?;
        if let Some(rv) = scale
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .filter(|rv| !rv.is_empty())
        {
            obj["metadata"]["resourceVersion"] = json!(rv);
        }
        obj["spec"]["replicas"] = json!(replicas);
        let updated = self.update(&parent, obj, params).await?;
        Ok(scale_of(&updated))
    }

    /// `PATCH …/scale`.
    pub(crate) async fn patch_scale(
        &self,
        target: &Target,
        kind: PatchKind,
        body: &bytes::Bytes,
        params: &Params,
    ) -> ApiResult<Value> {
        self.patch_with(
            target,
            kind,
            body,
            || self.get_scale(target),
            |mut scale: Value, precondition| async move {
                if !precondition && let Some(m) = scale["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                }
                self.put_scale(target, &scale, params).await
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_view_of_a_deployment() {
        let d = json!({
            "metadata": {"name": "web", "namespace": "dev", "tenant": "acme", "resourceVersion": "7", "labels": {"x": "y"}},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web", "tier": "front"}}},
            "status": {"replicas": 2},
        });
        let s = scale_of(&d);
        assert_eq!(s["kind"], "Scale");
        assert_eq!(s["metadata"]["resourceVersion"], "7");
        assert!(s["metadata"].get("labels").is_none());
        assert_eq!(s["spec"]["replicas"], 3);
        assert_eq!(s["status"]["replicas"], 2);
        assert_eq!(s["status"]["selector"], "app=web,tier=front");
    }
}
