//! Links, addresses, routes and XDP attachments through route netlink (`rtnetlink`), in
//! any network namespace.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkXdp};
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use crate::netns::in_netns;

type Result<T> = std::io::Result<T>;

/// A route-netlink connection to one network namespace.
pub struct Netlink {
    handle: Handle,
}

fn failed(what: String) -> impl FnOnce(rtnetlink::Error) -> std::io::Error {
    move |e| {
        let kind = match &e {
            rtnetlink::Error::NetlinkError(m) => m
                .code
                .map(|c| std::io::Error::from_raw_os_error(-c.get()).kind()),
            _ => None,
        };
        std::io::Error::new(
            kind.unwrap_or(std::io::ErrorKind::Other),
            format!("{what}: {e}"),
        )
    }
}

/// True when `e` is the kernel's "no such device" (or entry).
fn absent(e: &rtnetlink::Error) -> bool {
    const ENOENT: i32 = 2;
    const ENODEV: i32 = 19;
    matches!(e, rtnetlink::Error::NetlinkError(m)
        if m.code.is_some_and(|c| c.get() == -ENODEV || c.get() == -ENOENT))
}

/// What to change on a link.
#[derive(Clone, Debug, Default)]
pub struct LinkChange<'a> {
    /// Its MTU.
    pub mtu: Option<u32>,
    /// Its MAC (`aa:bb:…`).
    pub mac: Option<&'a str>,
    /// The bridge it becomes a port of.
    pub controller: Option<&'a str>,
    /// Its new name.
    pub rename: Option<&'a str>,
    /// Set it up.
    pub up: bool,
}

impl LinkChange<'_> {
    /// Set the link up, and nothing else.
    pub const UP: LinkChange<'static> = LinkChange {
        mtu: None,
        mac: None,
        controller: None,
        rename: None,
        up: true,
    };
}

impl Netlink {
    /// A connection to the namespace at `netns` (this process's own when None).
    pub async fn open(netns: Option<&Path>) -> Result<Self> {
        let runtime = tokio::runtime::Handle::current();
        let netns = netns.map(Path::to_owned);
        // The socket is made on a thread in the namespace and stays bound to it.
        let (connection, handle, _) = tokio::task::spawn_blocking(move || {
            in_netns(netns.as_deref(), || {
                let _entered = runtime.enter();
                rtnetlink::new_connection()
            })
        })
        .await
        .map_err(std::io::Error::other)??;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// The index of link `name`, if it exists.
    pub async fn index(&self, name: &str) -> Result<Option<u32>> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match links.try_next().await {
            Ok(l) => Ok(l.map(|l| l.header.index)),
            Err(e) if absent(&e) => Ok(None),
            Err(e) => Err(failed(format!("looking up link {name}"))(e)),
        }
    }

    async fn must_index(&self, name: &str) -> Result<u32> {
        self.index(name).await?.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, format!("no link {name}"))
        })
    }

    /// Adds bridge `name`.
    pub async fn add_bridge(&self, name: &str) -> Result<()> {
        self.handle
            .link()
            .add(LinkBridge::new(name).build())
            .execute()
            .await
            .map_err(failed(format!("adding bridge {name}")))
    }

    /// Adds a veth pair: `name` in the namespace at `netns` (here when None) and `peer` in
    /// the namespace at `peer_netns` (here when None); each is made there, so its name
    /// need not be free here.
    pub async fn add_veth(
        &self,
        name: &str,
        netns: Option<&Path>,
        peer: &str,
        peer_netns: Option<&Path>,
    ) -> Result<()> {
        let (ns, peer_ns) = (
            netns.map(std::fs::File::open),
            peer_netns.map(std::fs::File::open),
        );
        let (ns, peer_ns) = (ns.transpose()?, peer_ns.transpose()?);
        let mut peer_msg = LinkUnspec::new_with_name(peer);
        if let Some(f) = &peer_ns {
            peer_msg = peer_msg.setns_by_fd(f.as_raw_fd());
        }
        let mut msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(name.to_owned())
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg.build())));
        if let Some(f) = &ns {
            msg = msg.setns_by_fd(f.as_raw_fd());
        }
        // The namespaces' files stay open until the kernel has answered.
        self.handle
            .link()
            .add(msg.build())
            .execute()
            .await
            .map_err(failed(format!("adding veth {name} (peer {peer})")))
    }

    /// Changes link `name` as `change` says.
    pub async fn set_link(&self, name: &str, change: LinkChange<'_>) -> Result<()> {
        let index = self.must_index(name).await?;
        let mut msg = LinkUnspec::new_with_index(index);
        if let Some(mtu) = change.mtu {
            msg = msg.mtu(mtu);
        }
        if let Some(mac) = change.mac {
            msg = msg.address(parse_mac(mac)?);
        }
        if let Some(bridge) = change.controller {
            msg = msg.controller(self.must_index(bridge).await?);
        }
        if let Some(new) = change.rename {
            msg = msg.name(new.to_owned());
        }
        if change.up {
            msg = msg.up();
        }
        self.handle
            .link()
            .set(msg.build())
            .execute()
            .await
            .map_err(failed(format!("setting link {name}")))
    }

    /// Attaches the loaded XDP program `program` to link `name`, in driver mode.
    pub async fn attach_xdp(&self, name: &str, program: BorrowedFd<'_>) -> Result<()> {
        const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
        let index = self.must_index(name).await?;
        let xdp = LinkAttribute::Xdp(vec![
            LinkXdp::Fd(program.as_raw_fd()),
            LinkXdp::Flags(XDP_FLAGS_DRV_MODE),
        ]);
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .append_extra_attribute(xdp)
                    .build(),
            )
            .execute()
            .await
            .map_err(failed(format!("attaching an XDP program to {name}")))
    }

    /// Moves link `name` into the namespace at `netns`.
    pub async fn move_link(&self, name: &str, netns: &Path) -> Result<()> {
        let index = self.must_index(name).await?;
        let ns = std::fs::File::open(netns)?;
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .setns_by_fd(ns.as_raw_fd())
                    .build(),
            )
            .execute()
            .await
            .map_err(failed(format!("moving link {name}")))
    }

    /// Removes link `name` (a veth takes its peer with it); one that is not there is no
    /// error.
    pub async fn del_link(&self, name: &str) -> Result<()> {
        let Some(index) = self.index(name).await? else {
            return Ok(());
        };
        match self.handle.link().del(index).execute().await {
            Err(e) if !absent(&e) => Err(failed(format!("removing link {name}"))(e)),
            _ => Ok(()),
        }
    }

    /// Adds `address/prefix_len` to link `name`.
    pub async fn add_address(&self, name: &str, address: IpAddr, prefix_len: u8) -> Result<()> {
        let index = self.must_index(name).await?;
        self.handle
            .address()
            .add(index, address, prefix_len)
            .execute()
            .await
            .map_err(failed(format!("adding {address}/{prefix_len} to {name}")))
    }

    /// Adds the default route through `gateway`.
    pub async fn add_default_route(&self, gateway: Ipv4Addr) -> Result<()> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .build();
        self.handle
            .route()
            .add(route)
            .execute()
            .await
            .map_err(failed(format!("adding the default route via {gateway}")))
    }
}

/// `aa:bb:cc:dd:ee:ff` as bytes.
pub fn parse_mac(mac: &str) -> Result<Vec<u8>> {
    let bytes: Vec<u8> = mac
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<std::result::Result<_, _>>()
        .ok()
        .filter(|b: &Vec<u8>| b.len() == 6)
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{mac:?} is not a MAC address"),
            )
        })?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_six_hex_bytes() {
        assert_eq!(parse_mac("02:00:0a:00:00:05").unwrap(), [2, 0, 10, 0, 0, 5]);
        assert!(parse_mac("02:00:0a:00:00").is_err());
        assert!(parse_mac("zz:00:0a:00:00:05").is_err());
    }
}
