//! The Mizar kinds through the API: tenants see their own VPCs, identical CIDRs in two
//! tenants are fine, and every cross-object rule answers 422 naming the field.

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
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["items"][0]["metadata"]["tenant"], "acme");
    let r = h
        .call(Method::GET, &format!("{G}/droplets"), Some(&acme), None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = h
        .call(Method::GET, &format!("{G}/droplets"), Some(&h.system), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}
