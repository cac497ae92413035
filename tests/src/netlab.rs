//! A small internet made of network namespaces, for tests of Quad across real networks:
//! NAT, firewalls and a server on its own address. Built with `ip netns`, veth pairs and
//! nftables (Debian's `nftables`); it needs root. Every namespace and address is the
//! lab's own: nothing leaves it, and [`Lab`]'s `Drop` takes it all down.
//!
//! ```text
//!                           inet (router, 172.31.0.0/16)
//!        ┌──────────────┬──────────────┴──┬────────────────────┐
//!   172.31.1.2      172.31.2.2         172.31.3.2           172.31.4.2
//!     school          home1-nat          home2-nat            strict-fw
//!   (the server)     masquerade         masquerade     masquerade; only TCP to
//!                        │                  │          172.31.1.2:443 goes out
//!                   192.168.1.2        192.168.2.2          192.168.4.2
//!                      home1              home2                strict
//! ```
//!
//! The homes are behind masquerading NAT, as behind a home router: their browsers reach
//! the server, and each other only through what ICE finds (server-reflexive or relayed).
//! `strict` is a network that lets out nothing but TCP to the server's TLS port.
//!
//! The lab's "internet" uses 172.31.0.0/16, a private range: a server in it must be told
//! that those addresses are public (`allowed_peer_ranges`), as a campus on a LAN would be.
//!
//! A process runs inside a namespace through `ip netns exec` ([`Lab::command`]); the test
//! itself reaches a TCP port inside one through [`Lab::forward`], which connects from a
//! short-lived thread that entered the namespace.

use anyhow::{Context, Result, bail};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;

/// The server's address in `school`.
pub const SCHOOL_IP: Ipv4Addr = Ipv4Addr::new(172, 31, 1, 2);

/// The lab's public addresses, for `allowed_peer_ranges`.
pub const INTERNET: &str = "172.31.0.0/16";

/// A site of the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    School,
    Home1,
    Home2,
    Strict,
}

impl Site {
    fn short(self) -> &'static str {
        match self {
            Site::School => "school",
            Site::Home1 => "home1",
            Site::Home2 => "home2",
            Site::Strict => "strict",
        }
    }
}

/// The namespaces of one lab, removed on drop.
pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
}

impl Lab {
    /// Builds the lab. Fails with what is missing (root, `ip`, `nft`).
    pub fn build() -> Result<Lab> {
        for tool in ["/usr/sbin/ip", "/usr/sbin/nft"] {
            if !std::path::Path::new(tool).exists() {
                bail!(
                    "{tool} is missing: `cargo xtask test` installs it (Debian's iproute2 and \
                     nftables), or run `apt-get install -y iproute2 nftables`"
                );
            }
        }
        remove_stale_labs();
        let prefix = format!("q{}x", std::process::id());
        let mut lab = Lab {
            prefix,
            namespaces: Vec::new(),
        };
        lab.wire()
            .context("building the test network (needs root)")?;
        Ok(lab)
    }

    /// The namespace's full name.
    fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// The namespace a site's hosts live in.
    pub fn namespace(&self, site: Site) -> String {
        self.ns(site.short())
    }

    fn add(&mut self, name: &str) -> Result<String> {
        let ns = self.ns(name);
        run("ip", &["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn wire(&mut self) -> Result<()> {
        let inet = self.add("inet")?;
        sysctl(&inet, "net.ipv4.ip_forward=1")?;
        // The school: the server on the lab's internet.
        let school = self.add("school")?;
        link(
            &inet,
            "school",
            "172.31.1.1/24",
            &school,
            "wan",
            "172.31.1.2/24",
        )?;
        route(&school, "172.31.1.1")?;
        // Homes behind NAT, and the strict network (NAT and a firewall).
        for (site, n) in [("home1", 2), ("home2", 3), ("strict", 4)] {
            let router = self.add(&format!("{site}-gw"))?;
            let host = self.add(site)?;
            link(
                &inet,
                site,
                &format!("172.31.{n}.1/24"),
                &router,
                "wan",
                &format!("172.31.{n}.2/24"),
            )?;
            route(&router, &format!("172.31.{n}.1"))?;
            link(
                &router,
                "lan",
                &format!("192.168.{n}.1/24"),
                &host,
                "eth0",
                &format!("192.168.{n}.2/24"),
            )?;
            route(&host, &format!("192.168.{n}.1"))?;
            sysctl(&router, "net.ipv4.ip_forward=1")?;
            let mut rules = String::from(
                "table ip lab {\n\
                 chain post { type nat hook postrouting priority 100; oifname \"wan\" masquerade; }\n",
            );
            if site == "strict" {
                rules.push_str(&format!(
                    "chain filter_out {{ type filter hook forward priority 0; policy drop;\n\
                     ct state established,related accept;\n\
                     iifname \"lan\" oifname \"wan\" ip daddr {SCHOOL_IP} tcp dport 443 accept; }}\n"
                ));
            }
            rules.push_str("}\n");
            nft(&router, &rules)?;
        }
        Ok(())
    }

    /// A command that runs `program` inside `site`'s namespace.
    pub fn command(
        &self,
        site: Site,
        program: impl AsRef<std::ffi::OsStr>,
    ) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("ip");
        cmd.args(["netns", "exec", &self.namespace(site)])
            .arg(program);
        cmd
    }

    /// Makes `target` (a TCP address inside `site`'s namespace) reachable from the test at
    /// the returned loopback address, until the test's runtime ends.
    pub async fn forward(&self, site: Site, target: SocketAddr) -> Result<SocketAddr> {
        forward_from(format!("/run/netns/{}", self.namespace(site)), target).await
    }
}

/// Makes `target` (a TCP address inside the namespace at `ns`, its `/run/netns` path)
/// reachable from the test at the returned loopback address, until the test's runtime ends.
pub async fn forward_from(ns: String, target: SocketAddr) -> Result<SocketAddr> {
    forward_from_port(ns, target, 0).await
}

/// The same, at `port` on the test's loopback (0: any free one). geckodriver refuses
/// requests whose `Host` names a port other than its own, so it is forwarded from the same
/// port number (the test's namespace is not the lab's: the number is free there).
pub async fn forward_from_port(ns: String, target: SocketAddr, port: u16) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("listening on 127.0.0.1:{port} to forward {target}"))?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let ns = ns.clone();
            tokio::spawn(async move {
                let Ok(Ok(mut inside)) = connect_in(ns, target).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut client, &mut inside).await;
            });
        }
    });
    Ok(local)
}

/// A TCP connection made from inside the namespace at `ns` (its `/run/netns` path).
async fn connect_in(
    ns: String,
    target: SocketAddr,
) -> Result<std::io::Result<tokio::net::TcpStream>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    // A thread of its own: it enters the namespace and ends, so no pooled thread is left
    // in another network.
    std::thread::spawn(move || {
        let connected = (|| {
            let file = std::fs::File::open(&ns)?;
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)?;
            let stream = std::net::TcpStream::connect(target)?;
            stream.set_nonblocking(true)?;
            Ok(stream)
        })();
        let _ = tx.send(connected);
    });
    let stream: std::io::Result<std::net::TcpStream> = rx.await.context("connect thread")?;
    Ok(stream.and_then(tokio::net::TcpStream::from_std))
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            remove_namespace(ns);
        }
    }
}

/// Deletes a namespace, killing first whatever still runs in it (a browser a failed test
/// left).
fn remove_namespace(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
    let _ = Command::new("ip").args(["netns", "del", ns]).status();
}

/// Removes the namespaces of labs whose test process is gone (killed before its `Drop`).
fn remove_stale_labs() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(ns) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = ns
            .strip_prefix('q')
            .and_then(|rest| rest.split_once("x-"))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            remove_namespace(ns);
        }
    }
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A veth pair: `a_name` in `a` with `a_addr`, `b_name` in `b` with `b_addr`, both up.
fn link(a: &str, a_name: &str, a_addr: &str, b: &str, b_name: &str, b_addr: &str) -> Result<()> {
    run(
        "ip",
        &[
            "-n", a, "link", "add", a_name, "type", "veth", "peer", "name", b_name, "netns", b,
        ],
    )?;
    run("ip", &["-n", a, "addr", "add", a_addr, "dev", a_name])?;
    run("ip", &["-n", b, "addr", "add", b_addr, "dev", b_name])?;
    run("ip", &["-n", a, "link", "set", a_name, "up"])?;
    run("ip", &["-n", b, "link", "set", b_name, "up"])?;
    Ok(())
}

fn route(ns: &str, via: &str) -> Result<()> {
    run("ip", &["-n", ns, "route", "add", "default", "via", via])
}

fn sysctl(ns: &str, setting: &str) -> Result<()> {
    run("ip", &["netns", "exec", ns, "sysctl", "-qw", setting])
}

fn nft(ns: &str, rules: &str) -> Result<()> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running nft")?;
    child
        .stdin
        .take()
        .context("nft's stdin")?
        .write_all(rules.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft in {ns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The network interfaces of this process's namespace other than loopback (read from
/// `/proc/self/net/dev`: `/sys/class/net` shows the namespace sysfs was mounted in).
pub fn interfaces_besides_loopback() -> Result<Vec<String>> {
    Ok(std::fs::read_to_string("/proc/self/net/dev")?
        .lines()
        .skip(2)
        .filter_map(|l| l.split_once(':'))
        .map(|(name, _)| name.trim().to_owned())
        .filter(|name| name != "lo")
        .collect())
}

/// A network interface with one IPv4 and one IPv6 address (one end of a veth pair: this
/// kernel has no dummy interfaces), in this process's network namespace, removed on drop: for a test that needs addresses which, unlike loopback's,
/// WebRTC offers as host candidates. Only in a namespace of the tests' own that has
/// nothing but loopback (as `cargo xtask test` runs them): never on a real host's network.
pub struct TestInterface {
    name: String,
}

impl TestInterface {
    pub fn add(name: &str, v4: std::net::IpAddr, v6: std::net::IpAddr) -> Result<TestInterface> {
        let others: Vec<String> = interfaces_besides_loopback()?
            .into_iter()
            .filter(|n| n != name)
            .collect();
        if !others.is_empty() {
            bail!(
                "this test adds a network interface, and runs only in a loopback-only network \
                 namespace (`cargo xtask test`, or `unshare --net -- sh -c 'ip link set lo up && \
                 exec \"$@\"' sh cargo test ...` as root); this one has {others:?}"
            );
        }
        // Left over by a test that was killed: start afresh.
        let _ = Command::new("ip").args(["link", "del", name]).output();
        let interface = TestInterface {
            name: name.to_owned(),
        };
        let peer = format!("{name}p");
        ip(&["link", "add", name, "type", "veth", "peer", "name", &peer])?;
        ip(&["link", "set", name, "up"])?;
        ip(&["link", "set", &peer, "up"])?;
        ip(&["addr", "add", &format!("{v4}/24"), "dev", name])?;
        // No duplicate address detection: the address is usable at once.
        ip(&[
            "-6",
            "addr",
            "add",
            &format!("{v6}/64"),
            "dev",
            name,
            "nodad",
        ])?;
        Ok(interface)
    }
}

impl Drop for TestInterface {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.name])
            .output();
    }
}

/// Runs `ip` (Debian's iproute2) with `args`.
fn ip(args: &[&str]) -> Result<()> {
    run("ip", args)
}
