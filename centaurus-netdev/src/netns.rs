//! Named network namespaces (as `ip netns` keeps them, bind mounts under `/run/netns`),
//! work and processes in them, and the tap devices VM guests' NICs are.
//!
//! A network namespace is a property of a thread: [`in_netns`] runs a closure on a thread
//! of its own moved into the namespace, so no thread of the async runtime ever changes
//! namespace (nor forks: the process has many threads). Sockets and devices made there stay
//! in that namespace after the thread ends.

use std::os::fd::AsFd;
use std::path::Path;

/// Runs `f` on a new thread in the network namespace at `netns` (this process's own when
/// None) and returns what it returns. Blocks until it is done.
pub fn in_netns<T: Send>(
    netns: Option<&Path>,
    f: impl FnOnce() -> std::io::Result<T> + Send,
) -> std::io::Result<T> {
    let Some(netns) = netns else {
        return f();
    };
    let ns = std::fs::File::open(netns)?;
    std::thread::scope(|s| {
        s.spawn(move || {
            rustix::thread::move_into_link_name_space(
                ns.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("a namespace thread panicked")))
    })
}

/// Makes `cmd`'s process start in the network namespace at `netns` (setns(2) between
/// fork and exec). A tokio command gives its `as_std_mut()`.
#[allow(unsafe_code)] // a pre_exec hook
pub fn enter_on_exec(cmd: &mut std::process::Command, netns: &Path) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    let ns = std::fs::File::open(netns)?;
    // SAFETY: between fork and exec the child only calls setns(2), which is
    // async-signal-safe, on a file opened before the fork.
    unsafe {
        cmd.pre_exec(move || {
            rustix::thread::move_into_link_name_space(
                ns.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .map_err(Into::into)
        });
    }
    Ok(())
}

/// Where named namespaces are mounted.
pub const NETNS_DIR: &str = "/run/netns";

/// The path of the namespace `ip netns` names `name`.
pub fn netns_path(name: &str) -> std::path::PathBuf {
    Path::new(NETNS_DIR).join(name)
}

fn valid_name(name: &str) -> std::io::Result<()> {
    if name.is_empty() || name.len() > 64 || name.contains(['/', '\0']) || name.starts_with('.') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{name:?} is not a namespace name"),
        ));
    }
    Ok(())
}

/// Makes the named network namespace `name` (what `ip netns add` does): a new namespace,
/// bind-mounted at [`netns_path`] so it lasts without a process in it. `/run/netns` is made
/// a shared mount first, so a namespace removed here is removed from every mount
/// namespace.
pub async fn add_netns(name: &str) -> std::io::Result<()> {
    let name = name.to_owned();
    blocking(move || make_netns(&name)).await
}

/// Runs `f` on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(std::io::Error::other)?
}

#[allow(unsafe_code)] // unshare(2) on a thread of its own
fn make_netns(name: &str) -> std::io::Result<()> {
    use rustix::mount::{MountPropagationFlags, mount_bind, mount_change};
    valid_name(name)?;
    std::fs::create_dir_all(NETNS_DIR)?;
    let shared = std::fs::read_to_string("/proc/self/mountinfo")?
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(NETNS_DIR) && l.contains(" shared:"));
    let propagation = MountPropagationFlags::SHARED | MountPropagationFlags::REC;
    if !shared && mount_change(NETNS_DIR, propagation).is_err() {
        // Not a mount point yet: make it one.
        mount_bind(NETNS_DIR, NETNS_DIR)?;
        mount_change(NETNS_DIR, propagation)?;
    }
    let path = netns_path(name);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    let made = std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: the thread is this function's own and ends with it; nothing else
            // shares its file table or filesystem state.
            unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }?;
            mount_bind("/proc/thread-self/ns/net", &path)?;
            Ok(())
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("a namespace thread panicked")))
    });
    if made.is_err() {
        let _ = std::fs::remove_file(&path);
    }
    made
}

/// Removes the named network namespace `name` (its devices go when nothing else holds
/// it). A namespace that is not there is no error.
pub async fn del_netns(name: &str) -> std::io::Result<()> {
    let name = name.to_owned();
    blocking(move || remove_netns(&name)).await
}

fn remove_netns(name: &str) -> std::io::Result<()> {
    valid_name(name)?;
    let path = netns_path(name);
    if !path.exists() {
        return Ok(());
    }
    let _ = rustix::mount::unmount(&path, rustix::mount::UnmountFlags::DETACH);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: u16,
    _pad: [u8; 22],
}

const IFF_TAP: u16 = 0x0002;
const IFF_NO_PI: u16 = 0x1000;
const TUNSETIFF: rustix::ioctl::Opcode = rustix::ioctl::opcode::write::<i32>(b'T', 202);
const TUNSETPERSIST: rustix::ioctl::Opcode = rustix::ioctl::opcode::write::<i32>(b'T', 203);

/// Makes a persistent tap device `name` (an Ethernet device whose frames a program, QEMU,
/// reads and writes through `/dev/net/tun`) in the namespace at `netns`. A tap of that
/// name already there is taken as it is.
pub async fn create_tap(name: &str, netns: Option<&Path>) -> std::io::Result<()> {
    let (name, netns) = (name.to_owned(), netns.map(Path::to_owned));
    blocking(move || make_tap(&name, netns.as_deref())).await
}

#[allow(unsafe_code)] // two ioctls on /dev/net/tun
fn make_tap(name: &str, netns: Option<&Path>) -> std::io::Result<()> {
    if name.is_empty() || name.len() > 15 || name.contains(['/', '\0']) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{name:?} is not an interface name"),
        ));
    }
    let mut req = IfReq {
        name: [0; 16],
        flags: IFF_TAP | IFF_NO_PI,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    in_netns(netns, move || {
        let tun = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")?;
        // SAFETY: TUNSETIFF reads a `struct ifreq`, which `IfReq` lays out; TUNSETPERSIST
        // takes an integer.
        unsafe {
            rustix::ioctl::ioctl(
                &tun,
                rustix::ioctl::Setter::<{ TUNSETIFF }, IfReq>::new(req),
            )?;
            rustix::ioctl::ioctl(
                &tun,
                rustix::ioctl::IntegerSetter::<{ TUNSETPERSIST }>::new_usize(1),
            )?;
        }
        Ok(())
    })
}
