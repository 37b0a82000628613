//! What a network plugin made on the host (a pod's network namespace and the host side of
//! its veth), recorded under a directory of the node's before it is made and forgotten once
//! removed, so that an agent started after a killed one removes what that one left.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};

/// One pod's attachment: its namespace, and the host-side veth (in `host_netns`, or this
/// process's namespace).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Attachment {
    pub netns: String,
    pub veth: String,
    pub host_netns: Option<String>,
}

impl Attachment {
    /// Removes the host end of the veth (which takes the pod's end with it at once), or the
    /// tap of that name, then the namespace (whose own devices would go only some time
    /// after it: the names must be free for a retry now).
    pub(crate) async fn remove(&self) {
        let host = self
            .host_netns
            .as_deref()
            .map(centaurus_netdev::netns::netns_path);
        if let Ok(nl) = centaurus_netdev::netlink::Netlink::open(host.as_deref()).await {
            let _ = nl.del_link(&self.veth).await;
        }
        let _ = centaurus_netdev::netns::del_netns(&self.netns).await;
    }
}

/// The records of one plugin's attachments, a file each under a directory.
#[derive(Debug)]
pub struct AttachmentLedger {
    dir: PathBuf,
    reaped: AtomicBool,
}

impl AttachmentLedger {
    /// Records under `dir` (made if missing).
    pub fn open(dir: impl Into<PathBuf>) -> std::io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            reaped: AtomicBool::new(false),
        })
    }

    fn file(&self, netns: &str) -> PathBuf {
        self.dir.join(netns)
    }

    /// Records `a` before it is made.
    pub(crate) fn record(&self, a: &Attachment) {
        let text = json!({"netns": a.netns, "veth": a.veth, "hostNetns": a.host_netns});
        if let Err(e) = std::fs::write(self.file(&a.netns), text.to_string()) {
            tracing::warn!(netns = a.netns, error = %e, "cannot record a pod's network");
        }
    }

    /// Forgets the attachment of namespace `netns`, removed.
    pub(crate) fn forget(&self, netns: &str) {
        let _ = std::fs::remove_file(self.file(netns));
    }

    /// Removes every attachment recorded, once per ledger (the first call, before this
    /// agent attaches anything): what a previous agent left. Returns how many there were.
    pub(crate) async fn reap(&self) -> usize {
        if self.reaped.swap(true, Ordering::SeqCst) {
            return 0;
        }
        let mut reaped = 0;
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            // Only what our plugins name: a damaged record never removes anything else.
            if let Some(a) = read(&entry.path()).filter(|a| a.netns.starts_with("cent-")) {
                a.remove().await;
                reaped += 1;
            }
            let _ = std::fs::remove_file(entry.path());
        }
        reaped
    }
}

fn read(path: &Path) -> Option<Attachment> {
    let v: Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    Some(Attachment {
        netns: v["netns"].as_str()?.to_owned(),
        veth: v["veth"].as_str()?.to_owned(),
        host_netns: v["hostNetns"].as_str().map(str::to_owned),
    })
}
