//! The node's local image store: a `busybox` container image made from Debian's
//! `busybox-static` (every applet linked), and the `tiny` VM image — a Linux kernel plus a
//! busybox initramfs whose init brings up the guest's network (when the pod has one) and
//! prints a ready line on the serial console.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::podconfig::VolumeFile;
use crate::{Result, RuntimeError};

/// Where the static busybox comes from (Debian's `busybox-static`).
pub const BUSYBOX: &str = "/bin/busybox";

/// The kernel `scripts/setup.sh` extracts from Debian's `linux-image-amd64`.
pub const DEFAULT_KERNEL: &str = "/var/lib/centaurus/vm/vmlinuz";

/// Where the guest reads its network settings (see [`guest_network`]).
pub const GUEST_NETWORK: &str = "etc/centaurus/network";

/// What the tiny image's init prints once the guest is up.
pub const VM_READY_LINE: &str = "centaurus-vm: ready";

/// The name an image reference resolves to: `docker.io/library/busybox:1.36` → `busybox`.
pub fn image_name(reference: &str) -> &str {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    let last = last.split('@').next().unwrap_or(last);
    last.split(':').next().unwrap_or(last)
}

/// Images under one directory.
#[derive(Clone, Debug)]
pub struct ImageStore {
    root: PathBuf,
}

impl ImageStore {
    /// A store under `root` (`root/images/…`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into().join("images"),
        }
    }

    /// The root filesystem of a container image, building `busybox` on first use.
    pub fn rootfs(&self, reference: &str) -> Result<PathBuf> {
        let name = image_name(reference);
        let rootfs = self.root.join(name).join("rootfs");
        if rootfs.join("bin/sh").exists() {
            return Ok(rootfs);
        }
        if name != "busybox" {
            return Err(RuntimeError::ImageNotFound(reference.to_owned()));
        }
        build_busybox_rootfs(&rootfs)?;
        Ok(rootfs)
    }

    /// The kernel and initramfs of a VM image, building `tiny` on first use from `kernel`
    /// and the modules beside it ([`kernel_modules`]).
    pub fn vm_image(&self, reference: &str, kernel: &Path) -> Result<(PathBuf, PathBuf)> {
        let name = image_name(reference);
        let dir = self.root.join(name);
        let modules = kernel_modules(kernel)?;
        // The initramfs is named by its init and modules, so a changed one makes a new one.
        let mut id = xxhash_rust::xxh3::Xxh3::new();
        id.update(TINY_INIT.as_bytes());
        for (m, data) in &modules {
            id.update(m.as_bytes());
            id.update(data);
        }
        let (vmlinuz, initrd) = (
            dir.join("vmlinuz"),
            dir.join(format!("initrd-{:016x}.cpio", id.digest())),
        );
        if vmlinuz.exists() && initrd.exists() {
            return Ok((vmlinuz, initrd));
        }
        if name != "tiny" {
            return Err(RuntimeError::ImageNotFound(reference.to_owned()));
        }
        if !kernel.exists() {
            return Err(RuntimeError::ImageNotFound(format!(
                "tiny (needs a kernel at {}; scripts/setup.sh extracts one from Debian's linux-image-amd64)",
                kernel.display()
            )));
        }
        std::fs::create_dir_all(&dir)?;
        let busybox = std::fs::read(BUSYBOX).map_err(|e| {
            RuntimeError::ImageNotFound(format!("tiny (needs {BUSYBOX} from busybox-static: {e})"))
        })?;
        let mut cpio = Cpio::default();
        for d in [
            "bin",
            "dev",
            "proc",
            "sys",
            "tmp",
            "run",
            "etc",
            "lib",
            "lib/modules",
        ] {
            cpio.dir(d);
        }
        cpio.file("bin/busybox", 0o755, &busybox);
        cpio.file("init", 0o755, TINY_INIT.as_bytes());
        let mut order = String::new();
        for (m, data) in &modules {
            cpio.file(&format!("lib/modules/{m}.ko"), 0o644, data);
            order += &format!("{m}\n");
        }
        cpio.file("lib/modules/order", 0o644, order.as_bytes());
        let tmp = dir.join("initrd.cpio.tmp");
        std::fs::write(&tmp, cpio.finish())?;
        std::fs::rename(&tmp, &initrd)?;
        std::fs::copy(kernel, &vmlinuz)?;
        Ok((vmlinuz, initrd))
    }
}

/// The modules a guest of `kernel` loads, in order: those named by `modules/order` beside
/// it (`scripts/setup.sh` puts virtio-mmio and virtio-net there, from the kernel's own
/// package). None when there is no such list: the guest then has no network device.
pub fn kernel_modules(kernel: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let dir = kernel.with_file_name("modules");
    let order = match std::fs::read_to_string(dir.join("order")) {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    order
        .split_whitespace()
        .map(|m| {
            let path = dir.join(format!("{m}.ko"));
            let data = std::fs::read(&path).map_err(|e| {
                RuntimeError::ImageNotFound(format!(
                    "tiny (module {} listed in {}/order: {e})",
                    path.display(),
                    dir.display()
                ))
            })?;
            Ok((m.to_owned(), data))
        })
        .collect()
}

/// The guest's network settings, as the tiny init reads them from [`GUEST_NETWORK`]: the
/// interface's address with its prefix length, its gateway and MTU. (Its MAC is the
/// virtio-net device's, set by QEMU.)
pub fn guest_network(address: &str, gateway: &str, mtu: Option<u32>) -> String {
    let mut s = format!("ADDRESS={address}\nGATEWAY={gateway}\n");
    if let Some(m) = mtu {
        s += &format!("MTU={m}\n");
    }
    s
}

/// The tiny guest's init: mounts, brings up its network when it has one (the modules,
/// then `eth0` as [`GUEST_NETWORK`] says), prints the ready line, hands `userData` to the
/// guest (`/run/userdata`, run when it is a script), then keeps a shell on the serial
/// console (what `kubectl attach -it` reaches).
const TINY_INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
hostname "$(cat /etc/hostname 2>/dev/null || echo tiny)"
ip link set lo up
if [ -f /etc/centaurus/network ]; then
  . /etc/centaurus/network
  for m in $(cat /lib/modules/order 2>/dev/null); do insmod /lib/modules/$m.ko 2>/dev/null; done
  i=0
  while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
  [ -n "$MTU" ] && ip link set eth0 mtu "$MTU"
  ip addr add "$ADDRESS" dev eth0 && ip link set eth0 up && ip route add default via "$GATEWAY" &&
    echo "centaurus-vm: eth0 $ADDRESS via $GATEWAY" || echo "centaurus-vm: no network"
fi
echo "centaurus-vm: ready $(hostname) after $(cut -d' ' -f1 /proc/uptime)s"
if [ -f /userdata ]; then
  cp /userdata /run/userdata
  echo "centaurus-vm: userdata $(wc -c < /run/userdata) bytes"
  case "$(head -c 2 /run/userdata)" in
    '#!') chmod +x /run/userdata; /run/userdata ;;
  esac
fi
while true; do setsid cttyhack sh; sleep 1; done
"#;

fn build_busybox_rootfs(rootfs: &Path) -> Result<()> {
    let busybox = Path::new(BUSYBOX);
    if !busybox.exists() {
        return Err(RuntimeError::ImageNotFound(format!(
            "busybox (needs {BUSYBOX}: apt-get install busybox-static)"
        )));
    }
    let tmp = rootfs.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root",
    ] {
        std::fs::create_dir_all(tmp.join(d))?;
    }
    std::fs::copy(busybox, tmp.join("bin/busybox"))?;
    let list = std::process::Command::new(busybox)
        .arg("--list-full")
        .output()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let path = tmp.join(applet);
        if applet.is_empty() || applet == "bin/busybox" || path.exists() {
            continue;
        }
        let depth = applet.matches('/').count();
        let target = format!("{}bin/busybox", "../".repeat(depth));
        std::os::unix::fs::symlink(target, &path)?;
    }
    std::fs::write(tmp.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    std::fs::write(tmp.join("etc/group"), "root:x:0:\n")?;
    std::fs::write(tmp.join("etc/hosts"), "127.0.0.1 localhost\n")?;
    // Where a pod's resolv.conf is mounted.
    std::fs::write(tmp.join("etc/resolv.conf"), "")?;
    let _ = std::fs::remove_dir_all(rootfs);
    std::fs::rename(&tmp, rootfs)?;
    Ok(())
}

/// A `newc` cpio archive, the format Linux unpacks as initramfs. Archives concatenate, so a
/// VM's own files are appended to its image's archive.
#[derive(Default)]
pub struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.ino += 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        self.out.extend_from_slice(header.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    /// Adds a directory.
    pub fn dir(&mut self, name: &str) {
        self.entry(name, 0o040_755, &[]);
    }

    /// Adds a regular file.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100_000 | perm, data);
    }

    /// Ends the archive and returns its bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.out
    }
}

/// Writes `base` followed by an archive of `dirs` and `files` (with every parent
/// directory) to `out`, readable by its owner only: the files may be Secrets.
pub fn initrd_with(base: &Path, dirs: &[String], files: &[VolumeFile], out: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut made = std::collections::BTreeSet::new();
    let mut cpio = Cpio::default();
    // Every directory on the way to `path` (whose last element is a file's name).
    let mut parents = |cpio: &mut Cpio, path: &str| {
        for (i, _) in path.match_indices('/') {
            if i > 0 && made.insert(path[..i].to_owned()) {
                cpio.dir(&path[..i]);
            }
        }
    };
    for d in dirs {
        parents(&mut cpio, &format!("{}/", d.trim_matches('/')));
    }
    for f in files {
        let path = f.path.trim_start_matches('/');
        parents(&mut cpio, path);
        cpio.file(path, f.mode & 0o777, &f.data);
    }
    let tmp = out.with_extension("tmp");
    let mut w = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    w.write_all(&std::fs::read(base)?)?;
    w.write_all(&cpio.finish())?;
    w.sync_all()?;
    std::fs::rename(&tmp, out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_resolve_to_names() {
        assert_eq!(image_name("busybox"), "busybox");
        assert_eq!(image_name("busybox:1.36"), "busybox");
        assert_eq!(image_name("docker.io/library/busybox:latest"), "busybox");
        assert_eq!(image_name("busybox@sha256:abc"), "busybox");
        assert_eq!(image_name("tiny"), "tiny");
    }

    #[test]
    fn cpio_entries_are_aligned_and_end_with_a_trailer() {
        let mut c = Cpio::default();
        c.file("userdata", 0o644, b"hello");
        let bytes = c.finish();
        assert!(bytes.starts_with(b"070701"));
        assert_eq!(bytes.len() % 4, 0);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("userdata\0"));
        assert!(text.contains("hello"));
        assert!(text.contains("TRAILER!!!\0"));
        // The size field of the first entry is 5 bytes.
        assert_eq!(&bytes[54..62], b"00000005");
    }
}
