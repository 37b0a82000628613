//! `ServiceAccount` (core `v1`): an identity for the processes in a tenant's pods.
//!
//! Every namespace has a `default` account; a pod runs as the account its
//! `serviceAccountName` names, and its node projects a short-lived token of that account
//! into it. The API server accepts such a token as the user
//! `system:serviceaccount:NAMESPACE:NAME` of the account's tenant, and only while the
//! account (and the pod the token is bound to) still exists.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ObjectMeta;

/// The account every namespace has and pods run as unless they name another.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// The group of every service account (Kubernetes' name).
pub const SERVICE_ACCOUNTS_GROUP: &str = "system:serviceaccounts";
/// Where a pod finds its account's token, CA and namespace (Kubernetes' path).
pub const SERVICE_ACCOUNT_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// A name of an object in the account's namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LocalObjectReference {
    /// Name.
    #[serde(default)]
    pub name: String,
}

/// An identity for the processes in pods.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccount {
    /// `v1`.
    #[serde(default)]
    pub api_version: String,
    /// `ServiceAccount`.
    #[serde(default)]
    pub kind: String,
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Secrets the account's pods may use (kept as sent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<super::ObjectReference>,
    /// Secrets for pulling the pods' images (kept as sent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Whether pods of this account get its token unless they say otherwise (true when
    /// unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automount_service_account_token: Option<bool>,
}
crate::impl_resource!(
    ServiceAccount,
    kind = "ServiceAccount",
    group = "",
    version = "v1",
    plural = "serviceaccounts",
    scope = Namespaced,
    short = ["sa"]
);

/// The user name of account `name` in `namespace` (Kubernetes' form).
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// The namespace and name of a service account's user name.
pub fn parse_service_account_user(user: &str) -> Option<(&str, &str)> {
    user.strip_prefix("system:serviceaccount:")?.split_once(':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_round_trip() {
        let user = service_account_user("dev", "builder");
        assert_eq!(user, "system:serviceaccount:dev:builder");
        assert_eq!(parse_service_account_user(&user), Some(("dev", "builder")));
        assert_eq!(parse_service_account_user("alice"), None);
    }
}
