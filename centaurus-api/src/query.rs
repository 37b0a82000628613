//! Query parameters of list, watch and write requests.

use std::time::Duration;

use crate::error::ApiError;
use crate::selector::{FieldSelector, LabelSelector};

/// What the query string asked for.
#[derive(Clone, Debug, Default)]
pub struct Params {
    /// `labelSelector`.
    pub label_selector: LabelSelector,
    /// `fieldSelector`.
    pub field_selector: FieldSelector,
    /// `limit` (0 = all).
    pub limit: usize,
    /// `continue`.
    pub continue_token: Option<String>,
    /// `watch=true` (or `1`).
    pub watch: bool,
    /// `resourceVersion`.
    pub resource_version: Option<String>,
    /// `timeoutSeconds` of a watch.
    pub timeout: Option<Duration>,
    /// `allowWatchBookmarks=true`.
    pub allow_bookmarks: bool,
    /// `sendInitialEvents=true` (a streaming list): the current objects come first, then a
    /// bookmark annotated `k8s.io/initial-events-end`.
    pub send_initial_events: bool,
    /// `fieldValidation=Strict` (kubectl's default): unknown fields are an error.
    pub strict: bool,
    /// `dryRun=All`: validate and admit, do not persist.
    pub dry_run: bool,
    /// `fieldManager`: who writes; its fields are recorded in `managedFields`.
    pub field_manager: Option<String>,
    /// `force=true`: a server-side apply takes the fields other managers own.
    pub force: bool,
    /// Set by server-side apply (never from a query): the object carries the managed
    /// fields the apply computed.
    pub(crate) applying: bool,
}

fn flag(v: &str) -> bool {
    matches!(v, "true" | "1" | "True")
}

impl Params {
    /// Parses a raw query string.
    pub fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let mut p = Params::default();
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match k.as_ref() {
                "labelSelector" => p.label_selector = LabelSelector::parse(&v)?,
                "fieldSelector" => p.field_selector = FieldSelector::parse(&v)?,
                "limit" => {
                    let n: i64 = v.parse().map_err(|_| {
                        ApiError::bad_request(format!("limit {v:?} is not an integer"))
                    })?;
                    p.limit = n.max(0) as usize;
                }
                "continue" if !v.is_empty() => p.continue_token = Some(v.into_owned()),
                "watch" => p.watch = flag(&v),
                "resourceVersion" if !v.is_empty() => p.resource_version = Some(v.into_owned()),
                "timeoutSeconds" => {
                    let n: u64 = v.parse().map_err(|_| {
                        ApiError::bad_request(format!("timeoutSeconds {v:?} is not an integer"))
                    })?;
                    p.timeout = Some(Duration::from_secs(n));
                }
                "allowWatchBookmarks" => p.allow_bookmarks = flag(&v),
                "sendInitialEvents" => p.send_initial_events = flag(&v),
                "fieldValidation" => {
                    p.strict = match v.as_ref() {
                        "Strict" => true,
                        "Warn" | "Ignore" | "" => false,
                        other => {
                            return Err(ApiError::bad_request(format!(
                                "fieldValidation {other:?} is not one of Strict, Warn, Ignore"
                            )));
                        }
                    }
                }
                "dryRun" => p.dry_run = v == "All",
                "fieldManager" if !v.is_empty() => {
                    if v.len() > 128 {
                        return Err(ApiError::bad_request(
                            "fieldManager is limited to 128 characters",
                        ));
                    }
                    p.field_manager = Some(v.into_owned());
                }
                "force" => p.force = flag(&v),
                _ => {}
            }
        }
        Ok(p)
    }

    /// The resourceVersion as a store revision (`0` or absent is None).
    pub fn revision(&self) -> Result<Option<i64>, ApiError> {
        match self.resource_version.as_deref() {
            None | Some("0") => Ok(None),
            Some(s) => s.parse::<i64>().map(Some).map_err(|_| {
                ApiError::bad_request(format!("resourceVersion {s:?} is not a valid revision"))
            }),
        }
    }
}
