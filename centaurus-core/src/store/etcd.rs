//! `EtcdStore`: the distributed engine, over etcd's v3 API.
//!
//! Every store operation maps onto one etcd request: guarded writes are transactions that
//! compare `create_revision`/`mod_revision`, so the semantics are etcd's own. Keys live under
//! a configurable root so several regions (or tests) can share one etcd cluster.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, DeleteOptions, EventType, GetOptions,
    PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use futures::{StreamExt, stream};

use super::{
    Event, EventKind, KeyValue, RangeOptions, RangeResult, Result, Revision, Store, StoreError,
    WatchStream, check_write, prefix_end,
};

/// Where an [`EtcdStore`] finds etcd.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// Client URLs, `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Prepended to every key (may be empty).
    pub root: String,
}

/// The etcd-backed store (see the module docs).
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    root: Arc<str>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("root", &self.root)
            .finish()
    }
}

fn map_err(e: etcd_client::Error) -> StoreError {
    let text = e.to_string();
    if text.contains("required revision has been compacted") {
        // etcd does not say which revision it compacted at.
        StoreError::Compacted {
            requested: 0,
            compacted: 0,
        }
    } else if text.contains("required revision is a future revision") {
        StoreError::FutureRevision {
            requested: 0,
            current: 0,
        }
    } else {
        StoreError::Backend(format!("etcd: {text}"))
    }
}

/// True when a request failed because a member is gone or the cluster is electing a
/// leader: no connection could be made (nothing was sent), or the leader changed or is
/// missing. Sending again is safe for reads, and for writes too, as every write is a
/// transaction guarded by a revision: one that did land makes its repeat fail its compare
/// (a conflict the caller resolves by reading again), never apply twice.
fn unreached(e: &etcd_client::Error) -> bool {
    let text = e.to_string();
    [
        "tcp connect error",
        "Connection refused",
        "leader changed",
        "no leader",
    ]
    .iter()
    .any(|t| text.contains(t))
}

/// Sends `call` again, for about 6 s, while a member is gone or a leader is being elected:
/// the client balances over every endpoint, and the first requests after a member died
/// may still go to it.
async fn resilient<T, F, Fut>(client: &Client, mut call: F) -> Result<T>
where
    F: FnMut(Client) -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
{
    let mut delay = std::time::Duration::from_millis(25);
    for _ in 0..8 {
        match call(client.clone()).await {
            Err(e) if unreached(&e) => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            r => return r.map_err(map_err),
        }
    }
    call(client.clone()).await.map_err(map_err)
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<Revision> {
    header
        .map(|h| h.revision())
        .ok_or_else(|| StoreError::Backend("etcd response without header".into()))
}

impl EtcdStore {
    /// Connects to etcd.
    pub async fn connect(config: EtcdConfig) -> Result<Self> {
        let client = Client::connect(&config.endpoints, None)
            .await
            .map_err(map_err)?;
        Ok(Self {
            client,
            root: config.root.into(),
        })
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.root)
    }

    fn convert(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue> {
        let key = std::str::from_utf8(kv.key())
            .map_err(|_| StoreError::Backend("etcd key is not UTF-8".into()))?;
        Ok(KeyValue {
            key: key.strip_prefix(&*self.root).unwrap_or(key).to_owned(),
            value: Bytes::copy_from_slice(kv.value()),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            version: kv.version(),
        })
    }

    /// The failure of a guarded write: absent key or a revision mismatch.
    fn refusal(&self, key: &str, expected: Revision, responses: Vec<TxnOpResponse>) -> StoreError {
        let current = responses.into_iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.mod_revision()),
            _ => None,
        });
        match current {
            None => StoreError::NotFound {
                key: key.to_owned(),
            },
            Some(actual) => StoreError::Conflict {
                key: key.to_owned(),
                expected,
                actual,
            },
        }
    }

    fn event(&self, e: &etcd_client::Event) -> Result<Event> {
        let kv = e
            .kv()
            .ok_or_else(|| StoreError::Backend("etcd event without kv".into()))?;
        let mut out = self.convert(kv)?;
        Ok(match e.event_type() {
            EventType::Put => Event {
                kind: EventKind::Put,
                prev_value: e.prev_kv().map(|p| Bytes::copy_from_slice(p.value())),
                kv: out,
            },
            EventType::Delete => {
                if let Some(prev) = e.prev_kv() {
                    out.value = Bytes::copy_from_slice(prev.value());
                    out.create_revision = prev.create_revision();
                }
                out.version = 0;
                Event {
                    kind: EventKind::Delete,
                    kv: out,
                    prev_value: None,
                }
            }
        })
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let full = self.full(key);
        let resp = resilient(&self.client, |mut c| {
            let full = full.clone();
            async move { c.get(full, None).await }
        })
        .await?;
        resp.kvs().first().map(|kv| self.convert(kv)).transpose()
    }

    async fn range(&self, prefix: &str, opts: RangeOptions) -> Result<RangeResult> {
        let full_prefix = self.full(prefix);
        let start = match &opts.after {
            Some(after) if after.as_str() >= prefix => format!("{}\0", self.full(after)),
            _ => full_prefix.clone(),
        };
        // A range end of "\0" means "every key from start on".
        let end = prefix_end(full_prefix.as_bytes()).unwrap_or_else(|| vec![0]);
        let options = GetOptions::new()
            .with_range(end)
            .with_limit(opts.limit as i64)
            .with_revision(opts.revision);
        let resp = resilient(&self.client, |mut c| {
            let (start, options) = (start.clone(), options.clone());
            async move { c.get(start, Some(options)).await }
        })
        .await?;
        Ok(RangeResult {
            kvs: resp
                .kvs()
                .iter()
                .map(|kv| self.convert(kv))
                .collect::<Result<_>>()?,
            more: resp.more(),
            // etcd's header carries its current revision; the keys are as of the one asked.
            revision: match opts.revision {
                0 => header_revision(resp.header())?,
                at => at,
            },
        })
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        check_write(key, Some(&value))?;
        let full = self.full(key);
        let txn = Txn::new()
            .when([Compare::create_revision(full.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(full.clone(), value.to_vec(), None)]);
        let resp = resilient(&self.client, |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await?;
        if !resp.succeeded() {
            return Err(StoreError::AlreadyExists {
                key: key.to_owned(),
            });
        }
        let rev = header_revision(resp.header())?;
        Ok(KeyValue {
            key: key.to_owned(),
            value,
            create_revision: rev,
            mod_revision: rev,
            version: 1,
        })
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue> {
        check_write(key, Some(&value))?;
        let full = self.full(key);
        let txn = Txn::new()
            .when([
                Compare::version(full.clone(), CompareOp::Greater, 0),
                Compare::mod_revision(full.clone(), CompareOp::Equal, expected),
            ])
            .and_then([TxnOp::put(
                full.clone(),
                value.to_vec(),
                Some(PutOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(full, None)]);
        let resp = resilient(&self.client, |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await?;
        if !resp.succeeded() {
            return Err(self.refusal(key, expected, resp.op_responses()));
        }
        let rev = header_revision(resp.header())?;
        let prev = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Put(mut p) => p.take_prev_key(),
            _ => None,
        });
        let prev =
            prev.ok_or_else(|| StoreError::Backend("etcd put without previous key".into()))?;
        Ok(KeyValue {
            key: key.to_owned(),
            value,
            create_revision: prev.create_revision(),
            mod_revision: rev,
            version: prev.version() + 1,
        })
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        check_write(key, None)?;
        let full = self.full(key);
        let mut guards = vec![Compare::version(full.clone(), CompareOp::Greater, 0)];
        if let Some(rev) = expected {
            guards.push(Compare::mod_revision(full.clone(), CompareOp::Equal, rev));
        }
        let txn = Txn::new()
            .when(guards)
            .and_then([TxnOp::delete(
                full.clone(),
                Some(DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(full, None)]);
        let resp = resilient(&self.client, |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await?;
        if !resp.succeeded() {
            return Err(self.refusal(key, expected.unwrap_or_default(), resp.op_responses()));
        }
        let rev = header_revision(resp.header())?;
        let prev = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Delete(mut d) => d.take_prev_kvs().into_iter().next(),
            _ => None,
        });
        let prev =
            prev.ok_or_else(|| StoreError::Backend("etcd delete without previous key".into()))?;
        let mut gone = self.convert(&prev)?;
        gone.mod_revision = rev;
        gone.version = 0;
        Ok(gone)
    }

    async fn watch(&self, prefix: &str, start: Revision) -> Result<WatchStream> {
        if start < 0 {
            return Err(StoreError::InvalidArgument(format!(
                "negative start revision {start}"
            )));
        }
        let full_prefix = self.full(prefix);
        let end = prefix_end(full_prefix.as_bytes()).unwrap_or_else(|| vec![0]);
        let mut options = WatchOptions::new().with_range(end).with_prev_key();
        if start > 0 {
            options = options.with_start_revision(start);
        }
        let watch = resilient(&self.client, |mut c| {
            let (prefix, options) = (full_prefix.clone(), options.clone());
            async move { c.watch(prefix, Some(options)).await }
        })
        .await?;
        let this = self.clone();
        let responses = stream::unfold(Some(watch), move |watch| {
            let this = this.clone();
            async move {
                let mut watch = watch?;
                loop {
                    match watch.message().await {
                        Ok(Some(resp)) => {
                            if resp.compact_revision() > 0 {
                                let e = StoreError::Compacted {
                                    requested: start,
                                    compacted: resp.compact_revision(),
                                };
                                return Some((vec![Err(e)], None));
                            }
                            if resp.canceled() {
                                return Some((vec![Err(StoreError::Closed)], None));
                            }
                            if resp.events().is_empty() {
                                continue; // created or progress notification
                            }
                            let events: Vec<_> = resp
                                .events()
                                .iter()
                                .map(|e| this.event(e).map(Arc::new))
                                .collect();
                            let failed = events.iter().any(|e| e.is_err());
                            return Some((events, (!failed).then_some(watch)));
                        }
                        Ok(None) => return Some((vec![Err(StoreError::Closed)], None)),
                        Err(e) => return Some((vec![Err(map_err(e))], None)),
                    }
                }
            }
        });
        Ok(WatchStream::new(responses.flat_map(stream::iter)))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let current = self.revision().await?;
        if revision > current {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current,
            });
        }
        match self
            .client
            .clone()
            .compact(revision, Some(CompactionOptions::new().with_physical()))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(match map_err(e) {
                StoreError::Compacted { .. } => StoreError::Compacted {
                    requested: revision,
                    compacted: revision,
                },
                other => other,
            }),
        }
    }

    async fn revision(&self) -> Result<Revision> {
        // Any key's answer carries the revision; etcd refuses an empty one.
        let key = if self.root.is_empty() {
            "/".to_owned()
        } else {
            self.root.to_string()
        };
        let resp = resilient(&self.client, |mut c| {
            let key = key.clone();
            async move {
                c.get(key.as_bytes(), Some(GetOptions::new().with_count_only()))
                    .await
            }
        })
        .await?;
        header_revision(resp.header())
    }
}
