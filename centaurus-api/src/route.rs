//! The resource path router: Kubernetes and Arktos paths to a [`ResourcePath`].
//!
//! - `/api/v1/{plural}[/{name}[/{sub}]]` and `/apis/{group}/{version}/…`
//! - `/…/namespaces/{ns}/{plural}[/{name}[/{sub}]]` (short paths: the caller's tenant)
//! - `/…/tenants/{tenant}/[namespaces/{ns}/]{plural}…` (Arktos tenant paths); the tenant
//!   `all` means every tenant.
//!
//! `/api/v1/tenants/{name}` and `/api/v1/tenants/{name}/{status|token}` address the tenant
//! object itself, as `/api/v1/namespaces/{name}/{status|finalize}` address a namespace.

use crate::error::ApiError;

/// The longest path the router accepts, in bytes.
pub const MAX_PATH_LEN: usize = 4096;

/// Which tenant's space a path names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TenantSel {
    /// A short Kubernetes path: the caller's own tenant.
    Caller,
    /// `/tenants/{name}/…`.
    Named(String),
    /// `/tenants/all/…`: every tenant (system users only).
    All,
}

/// A parsed resource path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourcePath {
    /// API group; empty for the core group (`/api/v1`).
    pub group: String,
    /// Group version.
    pub version: String,
    /// The space.
    pub tenant: TenantSel,
    /// `namespaces/{ns}`, when present.
    pub namespace: Option<String>,
    /// Resource plural.
    pub plural: String,
    /// Object name, for single-object paths.
    pub name: Option<String>,
    /// Subresource (`status`, `token`, `log`, …).
    pub subresource: Option<String>,
}

/// Subresources of a tenant addressed as `/api/v1/tenants/{name}/{sub}`.
const TENANT_SUBRESOURCES: &[&str] = &["status", "token"];
/// Subresources of a namespace addressed as `/api/v1/namespaces/{name}/{sub}`.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

fn segment_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s != "." && s != ".."
}

/// Parses a request path. Anything that is not a resource path is a 404 `NotFound`.
pub fn parse(path: &str) -> Result<ResourcePath, ApiError> {
    let miss = || ApiError::no_route(&path.chars().take(200).collect::<String>());
    if path.len() > MAX_PATH_LEN {
        return Err(miss());
    }
    let trimmed = path.strip_prefix('/').ok_or_else(miss)?;
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    let segs: Vec<&str> = trimmed.split('/').collect();
    if !segs.iter().all(|s| segment_ok(s)) {
        return Err(miss());
    }
    let (group, version, mut rest) = match segs.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(miss()),
    };
    let mut tenant = TenantSel::Caller;
    if let ["tenants", t, third, ..] = rest
        && !(group.is_empty() && rest.len() == 3 && TENANT_SUBRESOURCES.contains(third))
    {
        tenant = if *t == "all" {
            TenantSel::All
        } else {
            TenantSel::Named((*t).to_owned())
        };
        rest = &rest[2..];
    }
    let mut namespace = None;
    if let ["namespaces", ns, third, ..] = rest
        && !(group.is_empty() && rest.len() == 3 && NAMESPACE_SUBRESOURCES.contains(third))
    {
        namespace = Some((*ns).to_owned());
        rest = &rest[2..];
    }
    let (plural, name, subresource) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(*name), None),
        [plural, name, sub] => (*plural, Some(*name), Some(*sub)),
        _ => return Err(miss()),
    };
    Ok(ResourcePath {
        group: group.to_owned(),
        version: version.to_owned(),
        tenant,
        namespace,
        plural: plural.to_owned(),
        name: name.map(str::to_owned),
        subresource: subresource.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(path: &str) -> ResourcePath {
        parse(path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn short_and_tenant_paths() {
        let r = p("/api/v1/namespaces/dev/pods/web");
        assert_eq!(
            (
                r.tenant,
                r.namespace.as_deref(),
                r.plural.as_str(),
                r.name.as_deref()
            ),
            (TenantSel::Caller, Some("dev"), "pods", Some("web"))
        );
        let r = p("/api/v1/tenants/acme/namespaces/dev/pods/web/status");
        assert_eq!(r.tenant, TenantSel::Named("acme".into()));
        assert_eq!(r.subresource.as_deref(), Some("status"));
        assert_eq!(p("/api/v1/tenants/all/pods").tenant, TenantSel::All);
        let r = p("/apis/apps/v1/tenants/acme/deployments");
        assert_eq!(
            (r.group.as_str(), r.plural.as_str()),
            ("apps", "deployments")
        );
        let r = p("/api/v1/tenants/acme/namespaces");
        assert_eq!(
            (r.tenant, r.plural.as_str()),
            (TenantSel::Named("acme".into()), "namespaces")
        );
    }

    #[test]
    fn tenant_and_namespace_objects_themselves() {
        let r = p("/api/v1/tenants/acme");
        assert_eq!(
            (r.tenant, r.plural.as_str(), r.name.as_deref()),
            (TenantSel::Caller, "tenants", Some("acme"))
        );
        let r = p("/api/v1/tenants/acme/status");
        assert_eq!(r.subresource.as_deref(), Some("status"));
        assert_eq!(r.plural, "tenants");
        let r = p("/api/v1/namespaces/dev/status");
        assert_eq!(
            (r.plural.as_str(), r.name.as_deref()),
            ("namespaces", Some("dev"))
        );
        let r = p("/api/v1/namespaces/dev");
        assert_eq!((r.namespace, r.plural.as_str()), (None, "namespaces"));
    }

    #[test]
    fn junk_is_not_found() {
        for path in [
            "",
            "/",
            "/api",
            "/apis/apps",
            "/api/v1/pods/a/b/c",
            "/api//v1/pods",
            "/x/v1/pods",
            "/api/v1/../pods",
        ] {
            assert_eq!(parse(path).unwrap_err().code, 404, "{path}");
        }
    }
}
