//! The Mizar kinds through the API: tenants see their own VPCs, identical CIDRs in two
//! tenants are fine, and every cross-object rule answers 422 naming the field. Services'
//! addresses: per tenant, allocated or requested in the tenant's service range, fixed once
//! given; core Endpoints and Mizar's under one plural, apart.

mod common;

use common::Harness;
use http::{Method, StatusCode};
use serde_json::{Value, json};

const G: &str = "/apis/mizar.centaurus.io/v1";

fn vpc(name: &str, cidr: &str, vni: u32) -> Value {
    json!({"apiVersion": "mizar.centaurus.io/v1", "kind": "Vpc", "metadata": {"name": name}, "spec": {"cidr": cidr, "vni": vni}})
}

fn subnet(name: &str, vpc: &str, cidr: &str) -> Value {
    json!({"apiVersion": "mizar.centaurus.io/v1", "kind": "Subnet", "metadata": {"name": name}, "spec": {"cidr": cidr, "vpc": vpc}})
}

fn endpoint(name: &str, subnet: &str, ip: &str) -> Value {
    json!({"apiVersion": "mizar.centaurus.io/v1", "kind": "Endpoint", "metadata": {"name": name},
           "spec": {"subnet": subnet, "droplet": "d0", "ip": ip}})
}

fn refused(r: &common::Reply, field: &str, words: &str) {
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    let causes = r.body["details"]["causes"].as_array().unwrap();
    assert!(
        causes
            .iter()
            .any(|c| c["field"] == field && c["message"].as_str().unwrap().contains(words)),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn cross_object_rules() {
    let h = Harness::new().await;
    let acme = h.tenant("acme").await;
    let beta = h.tenant("beta").await;
    let post = |path: String, token: &str, body: Value| {
        let token = token.to_owned();
        let h = &h;
        async move { h.call(Method::POST, &path, Some(&token), Some(body)).await }
    };
    // A VPC without a VNI gets the lowest free one; each tenant may use the same CIDR.
    let r = post(format!("{G}/vpcs"), &acme, vpc("v", "10.0.0.0/16", 0)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["spec"]["vni"], 1000);
    let r = post(format!("{G}/vpcs"), &beta, vpc("v", "10.0.0.0/16", 0)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["spec"]["vni"], 1001);
    // A VNI in use anywhere in the region is refused.
    refused(
        &post(format!("{G}/vpcs"), &beta, vpc("w", "10.1.0.0/16", 1000)).await,
        "spec.vni",
        "already used",
    );
    refused(
        &post(format!("{G}/vpcs"), &beta, vpc("w", "10.1.0.0/33", 0)).await,
        "spec.cidr",
        "",
    );
    refused(
        &post(format!("{G}/vpcs"), &beta, vpc("w", "fd00::/64", 0)).await,
        "spec.cidr",
        "IPv6",
    );

    // Subnets: inside the VPC, never overlapping a sibling; the other tenant's are not siblings.
    for token in [&acme, &beta] {
        let r = post(
            format!("{G}/subnets"),
            token,
            subnet("a", "v", "10.0.1.0/24"),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    refused(
        &post(
            format!("{G}/subnets"),
            &acme,
            subnet("b", "v", "10.0.1.128/25"),
        )
        .await,
        "spec.cidr",
        "overlaps subnet \"a\"",
    );
    refused(
        &post(
            format!("{G}/subnets"),
            &acme,
            subnet("b", "v", "10.9.0.0/24"),
        )
        .await,
        "spec.cidr",
        "not inside",
    );
    refused(
        &post(
            format!("{G}/subnets"),
            &acme,
            subnet("b", "nope", "10.0.2.0/24"),
        )
        .await,
        "spec.vpc",
        "does not exist",
    );
    // A VPC may span the service range, but no subnet may take its addresses, which the
    // datapath translates as Services'.
    let r = post(format!("{G}/vpcs"), &acme, vpc("wide", "10.64.0.0/10", 0)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    refused(
        &post(
            format!("{G}/subnets"),
            &acme,
            subnet("svc", "wide", "10.96.4.0/24"),
        )
        .await,
        "spec.cidr",
        "overlaps the service range 10.96.0.0/16",
    );
    let r = post(
        format!("{G}/subnets"),
        &acme,
        subnet("beside", "wide", "10.97.0.0/24"),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

    // Endpoints: a requested address is usable and unique in the VPC, in either tenant.
    let eps = |ns: &str| format!("{G}/namespaces/{ns}/endpoints");
    let r = post(eps("default"), &acme, endpoint("e1", "a", "10.0.1.10")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["spec"]["vpc"], "v");
    let r = post(eps("default"), &beta, endpoint("e1", "a", "10.0.1.10")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    refused(
        &post(eps("default"), &acme, endpoint("e2", "a", "10.0.1.10")).await,
        "spec.ip",
        "held by endpoint default/e1",
    );
    refused(
        &post(eps("default"), &acme, endpoint("e2", "a", "10.0.1.1")).await,
        "spec.ip",
        "",
    );
    refused(
        &post(eps("default"), &acme, endpoint("e2", "a", "10.0.2.1")).await,
        "spec.ip",
        "",
    );
    refused(
        &post(eps("default"), &acme, endpoint("e2", "zz", "")).await,
        "spec.subnet",
        "does not exist",
    );

    // Fields that cannot change.
    let r = h
        .call(
            Method::PUT,
            &format!("{G}/subnets/a"),
            Some(&acme),
            Some({
                let mut s = subnet("a", "v", "10.0.0.0/24");
                s["metadata"]["resourceVersion"] = json!(
                    h.call(Method::GET, &format!("{G}/subnets/a"), Some(&acme), None)
                        .await
                        .body["metadata"]["resourceVersion"]
                );
                s
            }),
        )
        .await;
    refused(&r, "spec.cidr", "cannot change");

    // Each tenant lists only its own; droplets are infrastructure only the system tenant sees.
    let r = h
        .call(Method::GET, &format!("{G}/vpcs"), Some(&acme), None)
        .await;
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "v and wide");
    assert!(items.iter().all(|i| i["metadata"]["tenant"] == "acme"));
    let r = h
        .call(Method::GET, &format!("{G}/droplets"), Some(&acme), None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = h
        .call(Method::GET, &format!("{G}/droplets"), Some(&h.system), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

const SVC: &str = "/api/v1/namespaces/default/services";

fn service(name: &str, ip: Option<&str>) -> Value {
    let mut s = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": "http"}]}});
    if let Some(ip) = ip {
        s["spec"]["clusterIP"] = json!(ip);
    }
    s
}

#[tokio::test]
async fn service_addresses_are_per_tenant_and_fixed() {
    let h = Harness::new().await;
    let acme = h.tenant("acme").await;
    let beta = h.tenant("beta").await;
    let post = |token: &str, body: Value| {
        let token = token.to_owned();
        let h = &h;
        async move { h.call(Method::POST, SVC, Some(&token), Some(body)).await }
    };
    // Allocated above the static band, with Kubernetes' defaults; the same first address
    // in each tenant.
    let a = post(&acme, service("web", None)).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["spec"]["clusterIP"], "10.96.0.16", "{}", a.body);
    assert_eq!(a.body["spec"]["clusterIPs"], json!(["10.96.0.16"]));
    assert_eq!(a.body["spec"]["type"], "ClusterIP");
    assert_eq!(a.body["spec"]["sessionAffinity"], "None");
    assert_eq!(a.body["spec"]["ports"][0]["protocol"], "TCP");
    assert_eq!(a.body["spec"]["ipFamilies"], json!(["IPv4"]));
    let b = post(&beta, service("web", None)).await;
    assert_eq!(b.status, StatusCode::CREATED, "{}", b.body);
    assert_eq!(b.body["spec"]["clusterIP"], "10.96.0.16");
    let a2 = post(&acme, service("api", None)).await;
    assert_eq!(a2.body["spec"]["clusterIP"], "10.96.0.17", "{}", a2.body);
    // Requested: in the static band is fine; taken in the tenant, outside the range, or
    // the range's network address is not.
    let dns = post(&acme, service("dns", Some("10.96.0.10"))).await;
    assert_eq!(dns.status, StatusCode::CREATED, "{}", dns.body);
    refused(
        &post(&acme, service("dup", Some("10.96.0.16"))).await,
        "spec.clusterIP",
        "already allocated",
    );
    let other = post(&beta, service("dup", Some("10.96.0.17"))).await;
    assert_eq!(
        other.status,
        StatusCode::CREATED,
        "another tenant's address is free here"
    );
    for (ip, words) in [
        ("10.97.0.1", "not a usable address"),
        ("10.96.0.0", "not a usable address"),
        ("10.96.255.255", "not a usable address"),
        ("300.1.1.1", "not an IPv4 address"),
    ] {
        refused(
            &post(&acme, service("bad", Some(ip))).await,
            "spec.clusterIP",
            words,
        );
    }
    // Headless: no address.
    let headless = post(&acme, service("peers", Some("None"))).await;
    assert_eq!(headless.status, StatusCode::CREATED, "{}", headless.body);
    assert_eq!(headless.body["spec"]["clusterIP"], "None");
    // Rules of the kind itself, each naming its field.
    let mut two = service("two", None);
    two["spec"]["ports"] = json!([{"port": 80}, {"port": 443}]);
    refused(&post(&acme, two).await, "spec.ports[0].name", "required");
    let mut np = service("np", None);
    np["spec"]["type"] = json!("NodePort");
    refused(&post(&acme, np).await, "spec.type", "not served");
    let mut badport = service("bp", None);
    badport["spec"]["ports"][0]["port"] = json!(70000);
    refused(
        &post(&acme, badport).await,
        "spec.ports[0].port",
        "between 1 and 65535",
    );
    let mut badname = service("bn", None);
    badname["spec"]["ports"][0]["targetPort"] = json!("Not_A_Name");
    refused(
        &post(&acme, badname).await,
        "spec.ports[0].targetPort",
        "IANA",
    );
    let mut sctp = service("sc", None);
    sctp["spec"]["ports"][0]["protocol"] = json!("SCTP");
    refused(
        &post(&acme, sctp).await,
        "spec.ports[0].protocol",
        "TCP or UDP",
    );

    // An update keeps the address when it leaves it out, and may not change it.
    let path = format!("{SVC}/web");
    let mut put = a.body.clone();
    put["spec"]["clusterIP"] = json!("");
    put["spec"]["clusterIPs"] = json!([]);
    put["spec"]["selector"] = json!({"app": "web2"});
    let r = h.call(Method::PUT, &path, Some(&acme), Some(put)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["spec"]["clusterIP"], "10.96.0.16");
    assert_eq!(r.body["spec"]["selector"]["app"], "web2");
    let mut change = r.body.clone();
    change["spec"]["clusterIP"] = json!("10.96.0.99");
    change["spec"]["clusterIPs"] = json!(["10.96.0.99"]);
    refused(
        &h.call(Method::PUT, &path, Some(&acme), Some(change)).await,
        "spec.clusterIP",
        "cannot change",
    );
    // A deleted Service's address is free again.
    let r = h
        .call(Method::DELETE, &format!("{SVC}/api"), Some(&acme), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let again = post(&acme, service("api2", None)).await;
    assert_eq!(
        again.body["spec"]["clusterIP"], "10.96.0.17",
        "{}",
        again.body
    );

    // Core Endpoints and Mizar's share the plural, not the objects.
    let ep = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web"},
        "subsets": [{"addresses": [{"ip": "10.0.0.5"}], "ports": [{"port": 8080}]}]});
    let r = h
        .call(
            Method::POST,
            "/api/v1/namespaces/default/endpoints",
            Some(&acme),
            Some(ep),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let mizar = h
        .call(
            Method::GET,
            &format!("{G}/namespaces/default/endpoints"),
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(mizar.status, StatusCode::OK, "{}", mizar.body);
    assert_eq!(mizar.body["items"], json!([]), "{}", mizar.body);
    assert!(
        h.store
            .get("/registry/serviceendpoints/acme/default/web")
            .await
            .unwrap()
            .is_some()
    );
    let bad = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "x"},
        "subsets": [{"addresses": [{"ip": "10.0.0.999"}]}]});
    let r = h
        .call(
            Method::POST,
            "/api/v1/namespaces/default/endpoints",
            Some(&acme),
            Some(bad),
        )
        .await;
    refused(&r, "subsets[0].addresses[0].ip", "not an IPv4 address");
    // Beta sees none of acme's.
    let list = h
        .call(Method::GET, "/api/v1/endpoints", Some(&beta), None)
        .await;
    assert_eq!(list.body["items"], json!([]), "{}", list.body);
}

/// NetworkPolicies through the API: served under `networking.k8s.io/v1` with defaults,
/// per tenant (the same name in two tenants, each seeing its own), and a bad one answers
/// 422 naming the field; nothing of it is stored.
#[tokio::test]
async fn network_policies_are_checked_and_per_tenant() {
    let h = Harness::new().await;
    let acme = h.tenant("acme").await;
    let beta = h.tenant("beta").await;
    let path = "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies";
    let policy = |from: Value| {
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": {"name": "db"},
               "spec": {"podSelector": {"matchLabels": {"app": "db"}},
                        "ingress": [{"from": from, "ports": [{"port": 5432}]}]}})
    };
    for token in [&acme, &beta] {
        let body = policy(json!([{"podSelector": {"matchLabels": {"app": "web"}}}]));
        let r = h.call(Method::POST, path, Some(token), Some(body)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert_eq!(r.body["spec"]["policyTypes"], json!(["Ingress"]));
        assert_eq!(r.body["spec"]["ingress"][0]["ports"][0]["protocol"], "TCP");
    }
    let r = h.call(Method::GET, path, Some(&acme), None).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1, "{}", r.body);
    for (from, field, words) in [
        (
            json!([{"ipBlock": {"cidr": "fd00::/8"}}]),
            "spec.ingress[0].from[0].ipBlock.cidr",
            "IPv6",
        ),
        (
            json!([{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}}]),
            "spec.ingress[0].from[0].ipBlock.except[0]",
            "strict subset",
        ),
        (
            json!([{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]),
            "spec.ingress[0].from[0]",
            "cannot be combined",
        ),
        (
            json!([{"podSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}]),
            "spec.ingress[0].from[0].podSelector.matchExpressions[0].operator",
            "must be In",
        ),
    ] {
        let mut body = policy(from);
        body["metadata"]["name"] = json!("bad");
        let r = h.call(Method::POST, path, Some(&acme), Some(body)).await;
        refused(&r, field, words);
    }
    let r = h
        .call(Method::GET, &format!("{path}/bad"), Some(&acme), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
}
