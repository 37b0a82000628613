//! The node authorizer and the components' identities: a node agent reaches only its own
//! Node and Lease and the pods (and their endpoints and actions) bound to it; each service
//! identity only the verbs of its component. Every forbidden request gets 403.

use std::sync::Arc;

use centaurus_api::region::LocalRegion;
use centaurus_client::{Api, Client};
use centaurus_core::model::{
    Action, ActionSpec, Container, Deployment, Lease, Namespace, Node, ObjectMeta, Pod, PodAction,
    PodSpec, RebootParams, Resource, Tenant,
};
use centaurus_core::objects::Objects;
use centaurus_core::store::{RedbStore, Store};
use centaurus_tenancy::identity;
use centaurus_vpc::kinds::Endpoint;
use http::Method;

fn pod(tenant: &str, name: &str, node: &str) -> Pod {
    let mut p = Pod::typed(ObjectMeta::namespaced(tenant, "dev", name));
    p.spec = PodSpec {
        node_name: node.into(),
        containers: vec![Container {
            name: "c".into(),
            image: "busybox".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    p
}

#[track_caller]
fn forbidden<T: std::fmt::Debug>(what: &str, r: Result<T, centaurus_client::ClientError>) {
    match r {
        Err(e) if e.is_forbidden() => {}
        other => panic!("{what}: expected 403, got {other:?}"),
    }
}

async fn region() -> (tempfile::TempDir, Arc<dyn Store>, LocalRegion) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path().join("s.redb")).unwrap());
    let local = LocalRegion::start(store.clone(), dir.path()).await.unwrap();
    local.space("acme", "dev").await.unwrap();
    local.space("beta", "dev").await.unwrap();
    let pods = Objects::<Pod>::new(store.clone());
    for (t, name, node) in [
        ("acme", "mine", "n1"),
        ("acme", "theirs", "n2"),
        ("beta", "b", "n2"),
    ] {
        pods.create(pod(t, name, node)).await.unwrap();
    }
    (dir, store, local)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reaches_only_its_own_objects() {
    let (_dir, _store, local) = region().await;
    let n1: Client = local.client(identity::node("n1"));
    let pods: Api<Pod> = n1.api();

    // Its own pods: listed only through the field selector naming it.
    let mine = pods.clone().with_fields("spec.nodeName=n1");
    let listed = mine.list("/registry/pods/").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].metadata.name, "mine");
    forbidden("list every pod", pods.list("/registry/pods/").await);
    forbidden(
        "list another node's pods",
        pods.clone()
            .with_fields("spec.nodeName=n2")
            .list("/registry/pods/")
            .await,
    );
    forbidden(
        "watch every pod",
        pods.watch("/registry/pods/", 0).await.map(drop),
    );
    assert!(mine.watch("/registry/pods/", 0).await.is_ok());

    // Its pods' status, not another node's; no pod writes beyond status.
    let own = pods
        .get("/registry/pods/acme/dev/mine")
        .await
        .unwrap()
        .unwrap();
    pods.modify_status(&own.key(), |p| {
        p.status.get_or_insert_with(Default::default).phase = "Running".into();
        true
    })
    .await
    .unwrap();
    forbidden(
        "get another node's pod",
        pods.get("/registry/pods/acme/dev/theirs").await,
    );
    forbidden(
        "get another tenant's pod on another node",
        pods.get("/registry/pods/beta/dev/b").await,
    );
    let mut theirs = own.clone();
    theirs.metadata.name = "theirs".into();
    forbidden(
        "write another node's pod status",
        pods.update_status(&theirs).await,
    );
    forbidden("update its pod's spec", pods.update(&own).await);
    forbidden("delete its pod", pods.delete(&own.key(), None).await);
    forbidden("create a pod", pods.create(pod("acme", "new", "n1")).await);

    // Its own Node and Lease only.
    let node = Node::typed(ObjectMeta::named("n1"));
    n1.api::<Node>().create(node).await.unwrap();
    forbidden(
        "create another node",
        n1.api::<Node>()
            .create(Node::typed(ObjectMeta::named("n2")))
            .await,
    );
    let lease = |n: &str| {
        Lease::typed(ObjectMeta::namespaced(
            centaurus_core::model::SYSTEM_TENANT,
            centaurus_core::model::NODE_LEASE_NAMESPACE,
            n,
        ))
    };
    n1.api::<Lease>().create(lease("n1")).await.unwrap();
    forbidden(
        "create another node's lease",
        n1.api::<Lease>().create(lease("n2")).await,
    );
    local
        .admin()
        .api::<Node>()
        .create(Node::typed(ObjectMeta::named("n2")))
        .await
        .unwrap();
    forbidden(
        "update another node",
        n1.api::<Node>()
            .modify("/registry/nodes/n2", |n| {
                n.metadata.labels.insert("x".into(), "y".into());
                true
            })
            .await,
    );
    assert!(
        n1.api::<Node>()
            .list("/registry/nodes/")
            .await
            .unwrap()
            .len()
            == 2
    );

    // Endpoints of its pods only; actions naming its node only.
    forbidden(
        "get another node's pod's endpoint",
        n1.api::<Endpoint>()
            .get("/registry/endpoints/acme/dev/theirs")
            .await,
    );
    assert!(
        n1.api::<Endpoint>()
            .get("/registry/endpoints/acme/dev/mine")
            .await
            .unwrap()
            .is_none()
    );
    let mut action = Action::typed(ObjectMeta::namespaced("acme", "dev", "reboot"));
    action.spec = ActionSpec {
        node_name: String::new(),
        pod_action: Some(PodAction {
            pod_name: "theirs".into(),
            reboot_action: Some(RebootParams {
                delay_in_seconds: 0,
            }),
            ..Default::default()
        }),
    };
    let action = local.admin().api::<Action>().create(action).await.unwrap();
    assert_eq!(
        action.spec.node_name, "n2",
        "an action names its pod's node"
    );
    forbidden(
        "get an action of another node",
        n1.api::<Action>().get(&action.key()).await,
    );
    forbidden(
        "list every action",
        n1.api::<Action>().list("/registry/actions/").await,
    );

    // Nothing else of any tenant or of the region.
    forbidden(
        "list tenants",
        n1.api::<Tenant>().list("/registry/tenants/").await,
    );
    forbidden(
        "list namespaces",
        n1.api::<Namespace>()
            .list("/registry/namespaces/acme/")
            .await,
    );
    forbidden(
        "list deployments",
        n1.api::<Deployment>().list("/registry/deployments/").await,
    );
    forbidden(
        "read metrics",
        n1.get("/metrics").await.and_then(|r| r.success()),
    );
    forbidden(
        "issue a token",
        n1.send_json(
            Method::POST,
            "/api/v1/tenants/acme/token",
            &serde_json::json!({"user": "x"}),
        )
        .await
        .and_then(|r| r.success()),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_have_only_their_components_verbs() {
    let (_dir, _store, local) = region().await;
    let scheduler = local.client(identity::SCHEDULER.identity());
    assert!(scheduler.api::<Pod>().list("/registry/pods/").await.is_ok());
    forbidden(
        "scheduler deletes a pod",
        scheduler
            .api::<Pod>()
            .delete("/registry/pods/acme/dev/mine", None)
            .await,
    );
    forbidden(
        "scheduler creates a pod",
        scheduler.api::<Pod>().create(pod("acme", "x", "")).await,
    );
    forbidden(
        "scheduler reads deployments",
        scheduler
            .api::<Deployment>()
            .list("/registry/deployments/")
            .await,
    );
    forbidden(
        "scheduler lists tenants",
        scheduler.api::<Tenant>().list("/registry/tenants/").await,
    );

    let controllers = local.client(identity::CONTROLLERS.identity());
    assert!(
        controllers
            .api::<Deployment>()
            .list("/registry/deployments/")
            .await
            .is_ok()
    );
    forbidden(
        "controllers delete a tenant",
        controllers
            .api::<Tenant>()
            .delete("/registry/tenants/acme", None)
            .await,
    );
    forbidden(
        "controllers write endpoints",
        controllers
            .api::<Endpoint>()
            .delete("/registry/endpoints/acme/dev/mine", None)
            .await,
    );

    forbidden(
        "controllers forge a node's lease",
        controllers
            .api::<Lease>()
            .create(Lease::typed(ObjectMeta::namespaced(
                centaurus_core::model::SYSTEM_TENANT,
                centaurus_core::model::NODE_LEASE_NAMESPACE,
                "n1",
            )))
            .await,
    );

    // The VPC operator reads pods (their labels, for NetworkPolicies), and writes none.
    let operator = local.client(identity::VPC_OPERATOR.identity());
    assert!(operator.api::<Pod>().list("/registry/pods/").await.is_ok());
    forbidden(
        "operator deletes a pod",
        operator
            .api::<Pod>()
            .delete("/registry/pods/acme/dev/mine", None)
            .await,
    );
    let network = local.client(identity::NETWORK_CONTROLLER.identity());
    forbidden(
        "network controller deletes a pod",
        network
            .api::<Pod>()
            .delete("/registry/pods/acme/dev/mine", None)
            .await,
    );
    let fleet = local.client(identity::NODE_FLEET.identity());
    forbidden(
        "node fleet creates a pod",
        fleet.api::<Pod>().create(pod("acme", "y", "n1")).await,
    );
    forbidden(
        "node fleet deletes a node",
        fleet.api::<Node>().delete("/registry/nodes/n1", None).await,
    );
    // An administrator of the system tenant is not confined.
    local
        .admin()
        .api::<Pod>()
        .delete("/registry/pods/acme/dev/mine", None)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reads_only_the_configuration_its_pods_name() {
    use centaurus_core::model::{ConfigMap, Secret};
    let (_dir, store, local) = region().await;
    // acme/dev/mine on n1 names the Secret `db` and the ConfigMap `site`.
    let named: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "configured", "namespace": "dev", "tenant": "acme"},
        "spec": {
            "nodeName": "n1",
            "containers": [{
                "name": "c", "image": "busybox",
                "env": [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}],
            }],
            "volumes": [{"name": "site", "configMap": {"name": "site"}}],
        },
    }))
    .unwrap();
    Objects::<Pod>::new(store.clone())
        .create(named)
        .await
        .unwrap();
    let admin = local.admin();
    for (t, name) in [("acme", "db"), ("acme", "other"), ("beta", "db")] {
        let data = [("pw".to_owned(), b"x".to_vec())].into();
        admin
            .api::<Secret>()
            .create(Secret::with_data(
                ObjectMeta::namespaced(t, "dev", name),
                data,
            ))
            .await
            .unwrap();
    }
    for name in ["site", "elsewhere"] {
        admin
            .api::<ConfigMap>()
            .create(ConfigMap::typed(ObjectMeta::namespaced(
                "acme", "dev", name,
            )))
            .await
            .unwrap();
    }
    let n1 = local.client(identity::node("n1"));
    let n2 = local.client(identity::node("n2"));
    let secrets: Api<Secret> = n1.api();
    let got = secrets.get("/registry/secrets/acme/dev/db").await.unwrap();
    assert_eq!(got.unwrap().data["pw"], b"x");
    assert!(
        n1.api::<ConfigMap>()
            .get("/registry/configmaps/acme/dev/site")
            .await
            .unwrap()
            .is_some()
    );
    forbidden(
        "get a Secret no pod of the node names",
        secrets.get("/registry/secrets/acme/dev/other").await,
    );
    forbidden(
        "get another tenant's Secret of the same name",
        secrets.get("/registry/secrets/beta/dev/db").await,
    );
    forbidden(
        "get a ConfigMap no pod of the node names",
        n1.api::<ConfigMap>()
            .get("/registry/configmaps/acme/dev/elsewhere")
            .await,
    );
    forbidden("list Secrets", secrets.list("/registry/secrets/").await);
    // The accounts its pods run as, and no other.
    use centaurus_core::model::ServiceAccount;
    for name in ["default", "builder"] {
        admin
            .api::<ServiceAccount>()
            .create(ServiceAccount::typed(ObjectMeta::namespaced(
                "acme", "dev", name,
            )))
            .await
            .unwrap();
    }
    let accounts: Api<ServiceAccount> = n1.api();
    assert!(
        accounts
            .get("/registry/serviceaccounts/acme/dev/default")
            .await
            .unwrap()
            .is_some()
    );
    forbidden(
        "get an account no pod of the node runs as",
        accounts
            .get("/registry/serviceaccounts/acme/dev/builder")
            .await,
    );
    forbidden(
        "get a Secret named by another node's pod",
        n2.api::<Secret>()
            .get("/registry/secrets/acme/dev/db")
            .await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_records_events_only_about_its_own_pods() {
    use centaurus_core::model::{Event, ObjectReference};
    let (_dir, store, local) = region().await;
    let pods = Objects::<Pod>::new(store.clone());
    let mut refs = Vec::new();
    for name in ["mine", "theirs"] {
        let key = format!("/registry/pods/acme/dev/{name}");
        refs.push(ObjectReference::to(&pods.get(&key).await.unwrap().unwrap()));
    }
    let [mine, theirs] = <[ObjectReference; 2]>::try_from(refs).unwrap();
    let event = |about: ObjectReference, name: String| Event {
        metadata: ObjectMeta::namespaced("acme", "dev", &name),
        involved_object: about,
        reason: "Started".into(),
        message: "Started container c".into(),
        ..Default::default()
    };
    let n1 = local.client(identity::node("n1"));
    let events: Api<Event> = n1.api();
    let name = Event::dedup_name(&mine, "Normal", "Started", "m", "kubelet");
    let created = events
        .create(event(mine.clone(), name.clone()))
        .await
        .unwrap();
    events
        .modify(&created.key(), |e| {
            e.count = 2;
            true
        })
        .await
        .unwrap();

    forbidden(
        "record an event about another node's pod",
        events
            .create(event(
                theirs.clone(),
                Event::dedup_name(&theirs, "Normal", "Started", "m", "kubelet"),
            ))
            .await,
    );
    forbidden(
        "record an event not named after its pod",
        events.create(event(mine.clone(), "theirs.1".into())).await,
    );
    // Made by the admin about theirs: n1 can neither read nor touch it.
    let admin_made = local
        .admin()
        .api::<Event>()
        .create(event(theirs.clone(), "theirs.2".into()))
        .await
        .unwrap();
    forbidden(
        "read an event about another node's pod",
        events.get(&admin_made.key()).await,
    );
    forbidden(
        "update an event about another node's pod",
        events.update(&admin_made).await,
    );
    forbidden("list events", events.list("/registry/events/").await);
}
