//! Client-side verbs over [`Client`]: what `centaurusctl` does, as a library.

use std::sync::Arc;

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use centaurus_core::model::{Registry, ResourceInfo, Scope};
use futures::StreamExt;
use http::Method;
use serde_json::{Value, json};

use crate::client::Client;
use crate::kubeconfig::{Kubeconfig, User};

/// Where a command looks: a tenant (None: the caller's own), a namespace, or everywhere.
#[derive(Clone, Debug, Default)]
pub struct Space {
    /// `--tenant`: an explicit tenant (`all` for every tenant); None uses short paths.
    pub tenant: Option<String>,
    /// `-n`: the namespace; None with `all_namespaces` false means the context's default.
    pub namespace: Option<String>,
    /// `-A`.
    pub all_namespaces: bool,
}

/// The API path of a kind's collection or object.
pub fn path(
    info: &ResourceInfo,
    tenant: Option<&str>,
    namespace: Option<&str>,
    name: Option<&str>,
) -> String {
    let mut p = if info.group.is_empty() {
        format!("/api/{}", info.version)
    } else {
        format!("/apis/{}/{}", info.group, info.version)
    };
    if info.scope != Scope::Cluster
        && let Some(t) = tenant
    {
        p.push_str(&format!("/tenants/{t}"));
    }
    if info.scope == Scope::Namespaced
        && let Some(ns) = namespace
    {
        p.push_str(&format!("/namespaces/{ns}"));
    }
    p.push('/');
    p.push_str(info.plural);
    if let Some(n) = name {
        p.push('/');
        p.push_str(n);
    }
    p
}

/// Object output formats (tables come from the server: [`Ctl::table`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// YAML.
    Yaml,
    /// JSON.
    Json,
}

/// Renders objects of one kind.
pub fn render(objects: &[Value], output: Output) -> String {
    let list = || json!({"apiVersion": "v1", "kind": "List", "items": objects});
    match output {
        Output::Json if objects.len() == 1 => {
            serde_json::to_string_pretty(&objects[0]).expect("JSON encodes")
        }
        Output::Json => serde_json::to_string_pretty(&list()).expect("JSON encodes"),
        Output::Yaml if objects.len() == 1 => {
            serde_yaml::to_string(&objects[0]).expect("YAML encodes")
        }
        Output::Yaml => serde_yaml::to_string(&list()).expect("YAML encodes"),
    }
}

/// Renders a server-side `Table` (`meta.k8s.io/v1`) as kubectl prints it: the columns of
/// priority 0, padded, with a NAMESPACE column first when `show_namespace`.
pub fn render_table(table: &Value, show_namespace: bool) -> String {
    let empty = Vec::new();
    let rows_in = table["rows"].as_array().unwrap_or(&empty);
    if rows_in.is_empty() {
        return "No resources found.".into();
    }
    let defs: Vec<(usize, String)> = table["columnDefinitions"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .enumerate()
        .filter(|(_, d)| d["priority"].as_i64().unwrap_or(0) == 0)
        .map(|(i, d)| (i, d["name"].as_str().unwrap_or("").to_uppercase()))
        .collect();
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut head: Vec<String> = defs.iter().map(|(_, n)| n.clone()).collect();
    if show_namespace {
        head.insert(0, "NAMESPACE".into());
    }
    rows.push(head);
    for row in rows_in {
        let mut cells: Vec<String> = defs
            .iter()
            .map(|(i, _)| match &row["cells"][*i] {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                v => v.to_string(),
            })
            .collect();
        if show_namespace {
            let ns = row["object"]["metadata"]["namespace"]
                .as_str()
                .unwrap_or("");
            cells.insert(0, ns.to_owned());
        }
        rows.push(cells);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("   ")
                .trim_end()
                .to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What `Accept` asks the server for a `Table`, as kubectl does.
pub const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";

/// The verbs, bound to a client and the registry of kinds.
pub struct Ctl {
    /// The connection.
    pub client: Arc<Client>,
    /// The kinds (resolves `pods`, `po`, `Pod`).
    pub registry: Registry,
}

impl Ctl {
    /// Looks up a kind by any of its names.
    pub fn kind(&self, name: &str) -> anyhow::Result<Arc<ResourceInfo>> {
        self.registry
            .resolve_name(name)
            .cloned()
            .ok_or_else(|| anyhow!("the server doesn't have a resource type {name:?}"))
    }

    fn namespace<'a>(&'a self, space: &'a Space) -> Option<&'a str> {
        if space.all_namespaces {
            None
        } else {
            Some(
                space
                    .namespace
                    .as_deref()
                    .unwrap_or(self.client.namespace()),
            )
        }
    }

    /// Reads one object or a list.
    pub async fn get(
        &self,
        info: &ResourceInfo,
        name: Option<&str>,
        space: &Space,
        selector: Option<&str>,
    ) -> anyhow::Result<Vec<Value>> {
        let mut items = Vec::new();
        for page in self.pages(info, name, space, selector, None).await? {
            match page.get("items").and_then(Value::as_array) {
                Some(list) => items.extend(list.iter().cloned()),
                None => items.push(page),
            }
        }
        Ok(items)
    }

    /// The server-side table of one object or a list, every page's rows in one table.
    pub async fn table(
        &self,
        info: &ResourceInfo,
        name: Option<&str>,
        space: &Space,
        selector: Option<&str>,
    ) -> anyhow::Result<Value> {
        let mut pages = self
            .pages(info, name, space, selector, Some(TABLE_ACCEPT))
            .await?
            .into_iter();
        let mut table = pages.next().unwrap_or_else(|| json!({"rows": []}));
        for page in pages {
            let rows = page["rows"].as_array().cloned().unwrap_or_default();
            if let Some(all) = table["rows"].as_array_mut() {
                all.extend(rows);
            }
        }
        Ok(table)
    }

    /// Every page of a GET (one page for a named object).
    async fn pages(
        &self,
        info: &ResourceInfo,
        name: Option<&str>,
        space: &Space,
        selector: Option<&str>,
        accept: Option<&str>,
    ) -> anyhow::Result<Vec<Value>> {
        let base = path(info, space.tenant.as_deref(), self.namespace(space), name);
        let accept = accept.unwrap_or("application/json");
        if name.is_some() {
            return Ok(vec![self.client.get_as(&base, accept).await?.ok()?]);
        }
        let mut pages = Vec::new();
        let mut cont: Option<String> = None;
        loop {
            let mut p = format!("{base}?limit=500");
            if let Some(s) = selector {
                p.push_str(&format!(
                    "&labelSelector={}",
                    form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                ));
            }
            if let Some(c) = &cont {
                p.push_str(&format!("&continue={c}"));
            }
            let page = self.client.get_as(&p, accept).await?.ok()?;
            let next = page
                .pointer("/metadata/continue")
                .and_then(Value::as_str)
                .filter(|c| !c.is_empty())
                .map(str::to_owned);
            pages.push(page);
            match next {
                Some(c) => cont = Some(c),
                None => return Ok(pages),
            }
        }
    }

    /// Creates the object or merges the manifest into the existing one; returns
    /// `kind/name created|configured`.
    pub async fn apply(&self, obj: &Value, space: &Space) -> anyhow::Result<String> {
        let api_version = obj["apiVersion"].as_str().unwrap_or("");
        let kind = obj["kind"].as_str().unwrap_or("");
        let info = self
            .registry
            .by_kind(api_version, kind)
            .ok_or_else(|| anyhow!("no kind {kind} in {api_version}"))?;
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| self.namespace(space).map(str::to_owned));
        let collection = path(info, space.tenant.as_deref(), ns.as_deref(), None);
        let label = format!("{}/{name}", info.singular());
        let existing = if name.is_empty() {
            None
        } else {
            Some(self.client.get(&format!("{collection}/{name}")).await?)
        };
        match existing {
            Some(r) if r.status.is_success() => {
                self.client
                    .request(
                        Method::PATCH,
                        &format!("{collection}/{name}"),
                        "application/merge-patch+json",
                        obj.to_string(),
                    )
                    .await?
                    .ok()
                    .with_context(|| format!("updating {label}"))?;
                Ok(format!("{label} configured"))
            }
            Some(r) if r.status.as_u16() != 404 => {
                Err(r.ok().unwrap_err()).with_context(|| format!("reading {label}"))
            }
            _ => {
                self.client
                    .send_json(Method::POST, &collection, obj)
                    .await?
                    .ok()
                    .with_context(|| format!("creating {label}"))?;
                Ok(format!("{label} created"))
            }
        }
    }

    /// Deletes an object.
    pub async fn delete(
        &self,
        info: &ResourceInfo,
        name: &str,
        space: &Space,
    ) -> anyhow::Result<String> {
        let p = path(
            info,
            space.tenant.as_deref(),
            self.namespace(space),
            Some(name),
        );
        self.client
            .request(Method::DELETE, &p, "", bytes::Bytes::new())
            .await?
            .ok()?;
        Ok(format!("{} \"{name}\" deleted", info.singular()))
    }

    /// Streams change events as `TYPE  NAMESPACE/NAME  RV` lines until the server ends the
    /// watch (after `timeout_seconds`, when given); `on_line` receives each line.
    pub async fn watch(
        &self,
        info: &ResourceInfo,
        space: &Space,
        timeout_seconds: Option<u64>,
        mut on_line: impl FnMut(String),
    ) -> anyhow::Result<()> {
        let mut p = format!(
            "{}?watch=true",
            path(info, space.tenant.as_deref(), self.namespace(space), None)
        );
        if let Some(t) = timeout_seconds {
            p.push_str(&format!("&timeoutSeconds={t}"));
        }
        let mut events = Box::pin(self.client.watch(&p).await?);
        while let Some(ev) = events.next().await {
            let ev = ev?;
            let o = &ev["object"];
            let meta = &o["metadata"];
            let name = match meta["namespace"].as_str() {
                Some(ns) => format!("{ns}/{}", meta["name"].as_str().unwrap_or("")),
                None => meta["name"].as_str().unwrap_or("").to_owned(),
            };
            if ev["type"] == "ERROR" {
                bail!("watch ended: {}", o["message"].as_str().unwrap_or("error"));
            }
            on_line(format!(
                "{:<9} {:<40} {}",
                ev["type"].as_str().unwrap_or(""),
                name,
                meta["resourceVersion"].as_str().unwrap_or("")
            ));
        }
        Ok(())
    }

    /// What a pod's container (or VM console) wrote; `tail` keeps the last lines.
    pub async fn logs(
        &self,
        pod: &str,
        container: Option<&str>,
        tail: Option<usize>,
        space: &Space,
    ) -> anyhow::Result<Bytes> {
        let info = self.kind("pods")?;
        let mut p = format!(
            "{}/log?",
            path(
                &info,
                space.tenant.as_deref(),
                self.namespace(space),
                Some(pod)
            )
        );
        if let Some(c) = container {
            p.push_str(&format!("container={c}&"));
        }
        if let Some(n) = tail {
            p.push_str(&format!("tailLines={n}"));
        }
        let reply = self.client.get(&p).await?;
        if reply.status.is_success() {
            return Ok(reply.body);
        }
        reply.ok()?;
        bail!("no log")
    }

    /// Asks a VM pod's node agent to `reboot`, `snapshot` (with a name) or `restore` (a
    /// snapshot id); returns the Action's name to follow with `get actions`.
    pub async fn vm_action(
        &self,
        pod: &str,
        action: &str,
        argument: Option<&str>,
        space: &Space,
    ) -> anyhow::Result<String> {
        let body = match (action, argument) {
            ("reboot", None) => json!({"actionName": "reboot", "rebootParams": {}}),
            ("snapshot", Some(n)) => {
                json!({"actionName": "snapshot", "snapshotParams": {"snapshotName": n}})
            }
            ("restore", Some(id)) => {
                json!({"actionName": "restore", "restoreParams": {"snapshotID": id}})
            }
            _ => bail!("actions are: reboot, snapshot NAME, restore SNAPSHOT_ID"),
        };
        let info = self.kind("pods")?;
        let p = format!(
            "{}/action",
            path(
                &info,
                space.tenant.as_deref(),
                self.namespace(space),
                Some(pod)
            )
        );
        let created = self.client.send_json(Method::POST, &p, &body).await?.ok()?;
        Ok(format!(
            "action/{} created",
            created["metadata"]["name"].as_str().unwrap_or("")
        ))
    }

    /// Powers hollow nodes off (`on` false) or on for a failure drill: the nodes `names`,
    /// and every node of `zone` when given ([`centaurus_core::model::LABEL_POWER`]). Returns
    /// the nodes labelled.
    pub async fn power(
        &self,
        names: &[String],
        zone: Option<&str>,
        on: bool,
    ) -> anyhow::Result<Vec<String>> {
        use centaurus_core::model::{LABEL_POWER, LABEL_ZONE};
        let mut nodes = names.to_vec();
        if let Some(zone) = zone {
            let selector: String =
                form_urlencoded::byte_serialize(format!("{LABEL_ZONE}={zone}").as_bytes())
                    .collect();
            let list = self
                .client
                .get(&format!("/api/v1/nodes?labelSelector={selector}"))
                .await?
                .ok()?;
            nodes.extend(
                list["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_owned)),
            );
            if nodes.len() == names.len() {
                bail!("no node is in zone {zone:?}");
            }
        }
        let patch = json!({"metadata": {"labels": {LABEL_POWER: if on { Value::Null } else { json!("off") }}}});
        for n in &nodes {
            self.client
                .request(
                    Method::PATCH,
                    &format!("/api/v1/nodes/{n}"),
                    "application/merge-patch+json",
                    patch.to_string(),
                )
                .await?
                .ok()
                .with_context(|| format!("node {n}"))?;
        }
        Ok(nodes)
    }

    /// Creates a tenant, optionally with quota (`pods=10,cpu=4`).
    pub async fn create_tenant(
        &self,
        name: &str,
        quota: &[(String, String)],
    ) -> anyhow::Result<String> {
        let quota: serde_json::Map<String, Value> =
            quota.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        let t = json!({"apiVersion": "v1", "kind": "Tenant", "metadata": {"name": name}, "spec": {"quota": quota}});
        self.client
            .send_json(Method::POST, "/api/v1/tenants", &t)
            .await?
            .ok()?;
        Ok(format!("tenant/{name} created"))
    }

    /// A kubeconfig for an administrator `user` of `tenant`: a fresh bearer token, the
    /// current server and CA.
    pub async fn tenant_kubeconfig(
        &self,
        current: &Kubeconfig,
        tenant: &str,
        user: &str,
    ) -> anyhow::Result<Kubeconfig> {
        let reply = self
            .client
            .send_json(
                Method::POST,
                &format!("/api/v1/tenants/{tenant}/token"),
                &json!({"user": user}),
            )
            .await?
            .ok()?;
        let token = reply["token"]
            .as_str()
            .ok_or_else(|| anyhow!("no token in the answer"))?;
        let conn = current.connection()?;
        let ca = String::from_utf8(conn.ca_pem).context("CA is not PEM text")?;
        Ok(Kubeconfig::single(
            &format!("{tenant}-{user}"),
            &conn.server,
            &ca,
            User {
                token: token.into(),
                ..Default::default()
            },
        ))
    }
}
