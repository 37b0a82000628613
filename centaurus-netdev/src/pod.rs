//! A pod's end of the network: a namespace whose `eth0` pairs with a veth on the host.

use std::net::Ipv4Addr;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

use crate::netns::{add_netns, enter_on_exec, netns_path};
use crate::{LinkChange, Netlink};

/// What [`PodLink::make`] makes.
#[derive(Clone, Debug)]
pub struct PodLink<'a> {
    /// The pod's namespace, made here.
    pub netns: &'a str,
    /// The host side of the veth pair.
    pub veth: &'a str,
    /// The namespace the host side goes in; None: this process's own.
    pub host_netns: Option<&'a Path>,
    /// A bridge (in the host side's namespace) the host side joins.
    pub bridge: Option<&'a str>,
    /// The MTU of both sides; None: the kernel's default.
    pub mtu: Option<u32>,
    /// The MAC of the pod's `eth0`; None: the kernel's choice.
    pub mac: Option<&'a str>,
    /// The pod's address and prefix length.
    pub address: (Ipv4Addr, u8),
    /// Its default gateway.
    pub gateway: Ipv4Addr,
    /// An XDP program for the pod's `eth0` (a datapath that redirects XDP frames into the
    /// host side needs one there), whose transmit checksum and segmentation offloads are
    /// then turned off, as XDP frames carry no offload state.
    pub xdp: Option<BorrowedFd<'a>>,
}

impl PodLink<'_> {
    /// Makes the namespace, the veth pair (each side made in its own namespace) with the
    /// pod's address, MAC, MTU and default route, and `lo` up; returns the namespace's
    /// path. A half-made link is the caller's to remove.
    pub async fn make(&self) -> std::io::Result<PathBuf> {
        add_netns(self.netns).await?;
        let ns = netns_path(self.netns);
        Netlink::open(None)
            .await?
            .add_veth(self.veth, self.host_netns, "eth0", Some(&ns))
            .await?;
        let host_side = LinkChange {
            mtu: self.mtu,
            controller: self.bridge,
            up: true,
            ..Default::default()
        };
        Netlink::open(self.host_netns)
            .await?
            .set_link(self.veth, host_side)
            .await?;
        let pod = Netlink::open(Some(&ns)).await?;
        pod.set_link("lo", LinkChange::UP).await?;
        let eth0 = LinkChange {
            mtu: self.mtu,
            mac: self.mac,
            ..Default::default()
        };
        pod.set_link("eth0", eth0).await?;
        if let Some(program) = self.xdp {
            pod.attach_xdp("eth0", program).await?;
            offloads_off(&ns).await?;
        }
        pod.add_address("eth0", self.address.0.into(), self.address.1)
            .await?;
        pod.set_link("eth0", LinkChange::UP).await?;
        pod.add_default_route(self.gateway).await?;
        Ok(ns)
    }
}

/// Turns off the transmit checksum and segmentation offloads of `eth0` in the namespace at
/// `ns` (ethtool).
async fn offloads_off(ns: &Path) -> std::io::Result<()> {
    let mut ethtool = tokio::process::Command::new("ethtool");
    enter_on_exec(ethtool.as_std_mut(), ns)?;
    let out = ethtool
        .args(["-K", "eth0", "tx", "off", "gso", "off"])
        .stdin(std::process::Stdio::null())
        .output()
        .await?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "ethtool -K eth0 tx off gso off: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}
