//! Every tenant's `svc.cluster.local` names, kept from the Services and EndpointSlices the
//! API serves, and the answer to one question about them.
//!
//! - `NAME.NAMESPACE.svc.cluster.local` A: the Service's address, or for a headless
//!   Service the addresses of its ready endpoints;
//! - `_PORT._PROTO.NAME.NAMESPACE.svc.cluster.local` SRV, for named ports: the Service's
//!   name at the port, or for a headless Service each endpoint's name
//!   (`A-B-C-D.NAME.NAMESPACE.svc.cluster.local`, which answers A with its address) at the
//!   endpoints' port;
//! - another name under `cluster.local`: NXDOMAIN; a name of a Service with no record of
//!   the type asked: no answer (NOERROR); a name outside `cluster.local`: REFUSED (this
//!   server answers for the cluster only, it does not recurse).
//!
//! Names are looked up in the asking tenant's space only: the same name in another tenant
//! is another Service, and one tenant's names are NXDOMAIN to every other.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, RwLock};

use centaurus_client::Client;
use centaurus_core::controller::{Cache, Informer};
use centaurus_core::model::{EndpointSlice, Resource, SERVICE_NAME_LABEL, Service};
use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::rdata::{A, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};

/// The cluster domain.
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// Seconds a client may keep an answer.
pub const TTL: u32 = 5;

/// What DNS needs of one Service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceRecord {
    /// Its address; None for a headless Service.
    pub cluster_ip: Option<Ipv4Addr>,
    /// Named ports: (name, `tcp`/`udp`, port on the Service's address).
    pub ports: Vec<(String, String, u16)>,
    /// Ready endpoints: address, and their port of each named port.
    pub endpoints: Vec<(Ipv4Addr, BTreeMap<String, u16>)>,
}

/// The answer to one question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// NoError, NXDomain or Refused.
    pub code: ResponseCode,
    /// The answer section.
    pub answers: Vec<Record>,
    /// The additional section (A records of SRV targets).
    pub additionals: Vec<Record>,
}

impl Answer {
    fn code(code: ResponseCode) -> Self {
        Self {
            code,
            answers: Vec::new(),
            additionals: Vec::new(),
        }
    }
}

type Key = (String, String, String);

/// Every tenant's Services, by tenant, namespace and name.
#[derive(Default)]
pub struct Zone {
    services: RwLock<HashMap<Key, ServiceRecord>>,
}

/// `A-B-C-D`, an address as one DNS label.
fn dashed(ip: Ipv4Addr) -> String {
    ip.to_string().replace('.', "-")
}

impl Zone {
    /// An empty zone.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets (or, with None, removes) the record of Service `name` in `tenant`/`namespace`.
    pub fn set(&self, tenant: &str, namespace: &str, name: &str, record: Option<ServiceRecord>) {
        let key = (tenant.to_owned(), namespace.to_owned(), name.to_owned());
        let mut all = self.services.write().unwrap_or_else(|e| e.into_inner());
        match record {
            Some(r) => {
                all.insert(key, r);
            }
            None => {
                all.remove(&key);
            }
        }
    }

    /// The number of Services held, over every tenant.
    pub fn len(&self) -> usize {
        self.services
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// True when no Service is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The answer to `tenant`'s question for `name`, type `rtype`.
    pub fn answer(&self, tenant: &str, name: &Name, rtype: RecordType) -> Answer {
        let lower = name.to_lowercase().to_ascii();
        let lower = lower.strip_suffix('.').unwrap_or(&lower);
        let Some(rest) = lower
            .strip_suffix(CLUSTER_DOMAIN)
            .filter(|r| r.is_empty() || r.ends_with('.'))
        else {
            return Answer::code(ResponseCode::Refused);
        };
        let labels: Vec<&str> = rest.trim_end_matches('.').split('.').collect();
        // [.., name, namespace, "svc"]
        let (head, ns, svc) = match labels.as_slice() {
            [head @ .., svc, ns, "svc"] => (head, *ns, *svc),
            _ => return Answer::code(ResponseCode::NXDomain),
        };
        let all = self.services.read().unwrap_or_else(|e| e.into_inner());
        let key = (tenant.to_owned(), ns.to_owned(), svc.to_owned());
        let Some(r) = all.get(&key) else {
            return Answer::code(ResponseCode::NXDomain);
        };
        let own = |labels: &[&str]| -> Option<Name> {
            let mut text = labels.join(".");
            text.push_str(&format!(".{svc}.{ns}.svc.{CLUSTER_DOMAIN}."));
            Name::from_ascii(text.trim_start_matches('.')).ok()
        };
        let a = |n: &Name, ip: Ipv4Addr| Record::from_rdata(n.clone(), TTL, RData::A(A(ip)));
        let mut out = Answer::code(ResponseCode::NoError);
        match head {
            [] => {
                if rtype == RecordType::A || rtype == RecordType::ANY {
                    let Some(me) = own(&[]) else {
                        return Answer::code(ResponseCode::NXDomain);
                    };
                    match r.cluster_ip {
                        Some(ip) => out.answers.push(a(&me, ip)),
                        None => out
                            .answers
                            .extend(r.endpoints.iter().map(|(ip, _)| a(&me, *ip))),
                    }
                }
            }
            [port, proto] if port.starts_with('_') && proto.starts_with('_') => {
                let (port, proto) = (&port[1..], &proto[1..]);
                let Some((pname, _, sport)) =
                    r.ports.iter().find(|(n, p, _)| n == port && p == proto)
                else {
                    return Answer::code(ResponseCode::NXDomain);
                };
                if rtype != RecordType::SRV && rtype != RecordType::ANY {
                    return out;
                }
                let Some(me) = own(&[&format!("_{port}"), &format!("_{proto}")]) else {
                    return Answer::code(ResponseCode::NXDomain);
                };
                let srv = |target: Name, port: u16| {
                    Record::from_rdata(me.clone(), TTL, RData::SRV(SRV::new(0, 100, port, target)))
                };
                match r.cluster_ip {
                    Some(ip) => {
                        let target = own(&[]).expect("the Service's own name is valid");
                        out.additionals.push(a(&target, ip));
                        out.answers.push(srv(target, *sport));
                    }
                    None => {
                        for (ip, ports) in &r.endpoints {
                            let (Some(port), Some(target)) =
                                (ports.get(pname), own(&[&dashed(*ip)]))
                            else {
                                continue;
                            };
                            out.additionals.push(a(&target, *ip));
                            out.answers.push(srv(target, *port));
                        }
                    }
                }
            }
            [host] if r.cluster_ip.is_none() => {
                let Some(ip) = r
                    .endpoints
                    .iter()
                    .map(|(ip, _)| *ip)
                    .find(|ip| dashed(*ip) == *host)
                else {
                    return Answer::code(ResponseCode::NXDomain);
                };
                if rtype == RecordType::A || rtype == RecordType::ANY {
                    let me = own(&[host]).expect("a dashed address is a valid label");
                    out.answers.push(a(&me, ip));
                }
            }
            _ => return Answer::code(ResponseCode::NXDomain),
        }
        out
    }

    /// Keeps the zone from the Services and EndpointSlices `client` reads (every tenant's,
    /// as the cluster DNS identity may), until the future is dropped.
    pub async fn follow(self: Arc<Self>, client: Client) {
        let services = Arc::new(Informer::<Service>::new(
            client
                .api()
                .source(format!("/registry/{}/", Service::STORE)),
        ));
        let slices = Arc::new(Informer::<EndpointSlice>::new(
            client
                .api()
                .source(format!("/registry/{}/", EndpointSlice::STORE)),
        ));
        let (svc_cache, slice_cache) = (services.cache(), slices.cache());
        {
            let (zone, sc, sl) = (self.clone(), svc_cache.clone(), slice_cache.clone());
            services.on_change(move |c| {
                let m = c.object().meta();
                zone.refresh(&sc, &sl, m.tenant_or_system(), &m.namespace, &m.name);
            });
        }
        {
            let (zone, sc, sl) = (self.clone(), svc_cache, slice_cache);
            slices.on_change(move |c| {
                let m = c.object().meta();
                if let Some(name) = m.labels.get(SERVICE_NAME_LABEL) {
                    zone.refresh(&sc, &sl, m.tenant_or_system(), &m.namespace, name);
                }
            });
        }
        tokio::join!(services.run(), slices.run());
    }

    /// Recomputes one Service's record from the caches.
    fn refresh(
        &self,
        services: &Cache<Service>,
        slices: &Cache<EndpointSlice>,
        tenant: &str,
        ns: &str,
        name: &str,
    ) {
        let key = format!("/registry/{}/{tenant}/{ns}/{name}", Service::STORE);
        let record = services
            .get(&key)
            .filter(|s| s.metadata.deletion_timestamp.is_none())
            .map(|s| {
                let prefix = format!("/registry/{}/{tenant}/{ns}/", EndpointSlice::STORE);
                let mine: Vec<EndpointSlice> = slices
                    .list_prefix(&prefix)
                    .into_iter()
                    .filter(|sl| {
                        sl.metadata
                            .labels
                            .get(SERVICE_NAME_LABEL)
                            .map(String::as_str)
                            == Some(name)
                    })
                    .collect();
                record_of(&s, &mine)
            });
        self.set(tenant, ns, name, record);
    }
}

/// A Service's record from its slices' ready endpoints.
pub fn record_of(svc: &Service, slices: &[EndpointSlice]) -> ServiceRecord {
    let ports = svc
        .spec
        .ports
        .iter()
        .filter(|p| !p.name.is_empty())
        .filter_map(|p| {
            Some((
                p.name.clone(),
                p.protocol().to_ascii_lowercase(),
                u16::try_from(p.port).ok()?,
            ))
        })
        .collect();
    let mut endpoints: BTreeMap<Ipv4Addr, BTreeMap<String, u16>> = BTreeMap::new();
    for sl in slices {
        let ports: BTreeMap<String, u16> = sl
            .ports
            .iter()
            .filter_map(|p| Some((p.name.clone(), u16::try_from(p.port).ok()?)))
            .collect();
        for e in sl
            .endpoints
            .iter()
            .filter(|e| e.conditions.ready != Some(false))
        {
            for ip in e
                .addresses
                .iter()
                .filter_map(|a| a.parse::<Ipv4Addr>().ok())
            {
                endpoints.entry(ip).or_default().extend(ports.clone());
            }
        }
    }
    ServiceRecord {
        cluster_ip: svc.virtual_ip(),
        ports,
        endpoints: endpoints.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn ips(a: &Answer) -> Vec<Ipv4Addr> {
        a.answers
            .iter()
            .filter_map(|r| match r.data() {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect()
    }

    fn zone() -> Zone {
        let z = Zone::new();
        z.set(
            "acme",
            "prod",
            "web",
            Some(ServiceRecord {
                cluster_ip: Some(Ipv4Addr::new(10, 96, 0, 16)),
                ports: vec![("http".into(), "tcp".into(), 80)],
                endpoints: vec![(
                    Ipv4Addr::new(10, 0, 0, 5),
                    [("http".to_string(), 8080)].into(),
                )],
            }),
        );
        z.set(
            "acme",
            "prod",
            "db",
            Some(ServiceRecord {
                cluster_ip: None,
                ports: vec![("pg".into(), "tcp".into(), 5432)],
                endpoints: vec![
                    (
                        Ipv4Addr::new(10, 0, 0, 7),
                        [("pg".to_string(), 5432)].into(),
                    ),
                    (
                        Ipv4Addr::new(10, 0, 0, 8),
                        [("pg".to_string(), 5433)].into(),
                    ),
                ],
            }),
        );
        z
    }

    #[test]
    fn services_answer_by_name_in_their_tenant_only() {
        let z = zone();
        let a = z.answer("acme", &name("web.prod.svc.cluster.local."), RecordType::A);
        assert_eq!(
            (a.code, ips(&a)),
            (ResponseCode::NoError, vec![Ipv4Addr::new(10, 96, 0, 16)])
        );
        // Case does not matter; a trailing dot neither.
        let a = z.answer("acme", &name("WEB.Prod.svc.cluster.local"), RecordType::A);
        assert_eq!(ips(&a), [Ipv4Addr::new(10, 96, 0, 16)]);
        // Another tenant: no such name.
        let b = z.answer("beta", &name("web.prod.svc.cluster.local."), RecordType::A);
        assert_eq!((b.code, b.answers.len()), (ResponseCode::NXDomain, 0));
        // A known name without records of the type: no data.
        let aaaa = z.answer(
            "acme",
            &name("web.prod.svc.cluster.local."),
            RecordType::AAAA,
        );
        assert_eq!((aaaa.code, aaaa.answers.len()), (ResponseCode::NoError, 0));
        for (q, code) in [
            ("nope.prod.svc.cluster.local.", ResponseCode::NXDomain),
            ("web.dev.svc.cluster.local.", ResponseCode::NXDomain),
            ("prod.svc.cluster.local.", ResponseCode::NXDomain),
            ("cluster.local.", ResponseCode::NXDomain),
            ("x.web.prod.svc.cluster.local.", ResponseCode::NXDomain),
            ("example.com.", ResponseCode::Refused),
            ("notcluster.local.", ResponseCode::Refused),
        ] {
            assert_eq!(z.answer("acme", &name(q), RecordType::A).code, code, "{q}");
        }
    }

    #[test]
    fn srv_and_headless_records() {
        let z = zone();
        let srv = z.answer(
            "acme",
            &name("_http._tcp.web.prod.svc.cluster.local."),
            RecordType::SRV,
        );
        assert_eq!(srv.code, ResponseCode::NoError);
        let RData::SRV(s) = srv.answers[0].data() else {
            panic!("{srv:?}")
        };
        assert_eq!(
            (s.port(), s.target().to_ascii()),
            (80, "web.prod.svc.cluster.local.".into())
        );
        assert_eq!(
            ips(&Answer {
                answers: srv.additionals.clone(),
                ..srv.clone()
            }),
            [Ipv4Addr::new(10, 96, 0, 16)]
        );
        assert_eq!(
            z.answer(
                "acme",
                &name("_http._udp.web.prod.svc.cluster.local."),
                RecordType::SRV
            )
            .code,
            ResponseCode::NXDomain
        );
        // Headless: the ready endpoints, each with its own name and port.
        let a = z.answer("acme", &name("db.prod.svc.cluster.local."), RecordType::A);
        assert_eq!(
            ips(&a),
            [Ipv4Addr::new(10, 0, 0, 7), Ipv4Addr::new(10, 0, 0, 8)]
        );
        let srv = z.answer(
            "acme",
            &name("_pg._tcp.db.prod.svc.cluster.local."),
            RecordType::SRV,
        );
        let got: Vec<(u16, String)> = srv
            .answers
            .iter()
            .map(|r| match r.data() {
                RData::SRV(s) => (s.port(), s.target().to_ascii()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            got,
            [
                (5432, "10-0-0-7.db.prod.svc.cluster.local.".to_string()),
                (5433, "10-0-0-8.db.prod.svc.cluster.local.".to_string())
            ]
        );
        let one = z.answer(
            "acme",
            &name("10-0-0-8.db.prod.svc.cluster.local."),
            RecordType::A,
        );
        assert_eq!(ips(&one), [Ipv4Addr::new(10, 0, 0, 8)]);
        let none = z.answer(
            "acme",
            &name("10-0-0-9.db.prod.svc.cluster.local."),
            RecordType::A,
        );
        assert_eq!(none.code, ResponseCode::NXDomain);
        z.set("acme", "prod", "db", None);
        assert_eq!(
            z.answer("acme", &name("db.prod.svc.cluster.local."), RecordType::A)
                .code,
            ResponseCode::NXDomain
        );
    }

    proptest! {
        /// Whatever Services the tenants hold under whatever names, a tenant's answers
        /// carry only its own Services' addresses.
        #[test]
        fn answers_never_cross_tenants(
            services in proptest::collection::vec((0u8..3, 0u8..3, 0u8..3, any::<bool>()), 1..30),
            asker in 0u8..3, ns in 0u8..3, svc in 0u8..3,
        ) {
            let z = Zone::new();
            // Tenant t's addresses are 10.t.x.y: whose an address is can be read off it.
            for (i, (t, n, s, headless)) in services.iter().enumerate() {
                let ip = Ipv4Addr::new(10, *t, 0, i as u8);
                z.set(&format!("t{t}"), &format!("n{n}"), &format!("s{s}"), Some(ServiceRecord {
                    cluster_ip: (!headless).then_some(ip),
                    ports: vec![("p".into(), "tcp".into(), 80)],
                    endpoints: vec![(Ipv4Addr::new(10, *t, 1, i as u8), [("p".to_string(), 80)].into())],
                }));
            }
            for q in [format!("s{svc}.n{ns}.svc.cluster.local."), format!("_p._tcp.s{svc}.n{ns}.svc.cluster.local.")] {
                for rtype in [RecordType::A, RecordType::SRV, RecordType::ANY] {
                    let a = z.answer(&format!("t{asker}"), &name(&q), rtype);
                    for r in a.answers.iter().chain(&a.additionals) {
                        if let RData::A(ip) = r.data() {
                            prop_assert_eq!(ip.0.octets()[1], asker);
                        }
                    }
                }
            }
        }
    }
}
