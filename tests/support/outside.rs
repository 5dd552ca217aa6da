//! An "outside" host for egress tests: a network namespace joined to this one by a veth pair, with an HTTP
//! server (busybox httpd) on every address it has and a DNS server (dnsmasq) that answers a made-up name. It
//! also holds `169.254.169.254` (a cloud's metadata address) and an address in a range the test denies, so a
//! refusal is the firewall's doing and not a missing route. Removed, processes and links, when dropped.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The name dnsmasq answers, with [`Outside::address`].
pub const NAME: &str = "outside.test";
/// What the HTTP server serves at `/page.txt`.
pub const PAGE: &str = "hello-from-outside";
/// The metadata address the outside host also answers on.
pub const METADATA: &str = "169.254.169.254";

/// A running outside host.
pub struct Outside {
    netns: String,
    link: String,
    /// Its address, reachable from this host through the veth.
    pub address: String,
    /// An address of it in [`Outside::denied_range`].
    pub denied: String,
    /// A /24 to put in `egress_deny`.
    pub denied_range: String,
    children: Vec<Child>,
    dir: std::path::PathBuf,
}

pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| {
        panic!("cannot run ip ({e}): install iproute2 (scripts/deps.sh test does)")
    });
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Outside {
    /// Makes the namespace, its link and addresses, and starts its servers; waits until both answer.
    pub fn start() -> Outside {
        let tag = &uuid::Uuid::now_v7().simple().to_string()[24..];
        let third = u8::from_str_radix(&tag[6..8], 16).unwrap() % 200 + 20;
        let netns = format!("gx-out-{tag}");
        let link = format!("gxo{tag}");
        let inside = format!("gxi{tag}");
        let (host_side, address) = (format!("10.241.{third}.1"), format!("10.241.{third}.2"));
        let denied = format!("10.242.{third}.2");
        let dir = super::scratch_dir("outside");
        std::fs::write(dir.join("page.txt"), PAGE).unwrap();
        let mut outside = Outside {
            netns: netns.clone(),
            link: link.clone(),
            address: address.clone(),
            denied: denied.clone(),
            denied_range: format!("10.242.{third}.0/24"),
            children: Vec::new(),
            dir: dir.clone(),
        };
        ip(&["netns", "add", &netns]);
        ip(&[
            "link", "add", &link, "type", "veth", "peer", "name", &inside, "netns", &netns,
        ]);
        ip(&["addr", "add", &format!("{host_side}/24"), "dev", &link]);
        ip(&["link", "set", &link, "up"]);
        let inner = |args: &[&str]| {
            let mut all = vec!["-n", netns.as_str()];
            all.extend_from_slice(args);
            ip(&all);
        };
        inner(&["addr", "add", &format!("{address}/24"), "dev", &inside]);
        inner(&["addr", "add", &format!("{denied}/32"), "dev", &inside]);
        inner(&["addr", "add", &format!("{METADATA}/32"), "dev", &inside]);
        inner(&["link", "set", &inside, "up"]);
        inner(&["link", "set", "lo", "up"]);
        inner(&["route", "add", "default", "via", &host_side]);
        // This host reaches the extra addresses through the veth, as it would a real metadata service.
        ip(&["route", "replace", &format!("{denied}/32"), "via", &address]);
        ip(&[
            "route",
            "replace",
            &format!("{METADATA}/32"),
            "via",
            &address,
        ]);
        let spawn = |program: &str, args: &[&str]| {
            Command::new("ip")
                .args(["netns", "exec", &netns, program])
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(
                    std::fs::File::create(dir.join(format!("{program}.log"))).unwrap(),
                ))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {program}: {e}"))
        };
        let www = dir.to_str().unwrap();
        outside
            .children
            .push(spawn("busybox", &["httpd", "-f", "-p", "80", "-h", www]));
        let answer = format!("--address=/{NAME}/{address}");
        let listen = format!("--listen-address={address}");
        if !std::path::Path::new("/usr/sbin/dnsmasq").exists() {
            panic!("dnsmasq is missing: install dnsmasq-base (scripts/deps.sh test does)");
        }
        outside.children.push(spawn(
            "/usr/sbin/dnsmasq",
            &[
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                &listen,
                &answer,
                "--user=root",
                "--pid-file",
                "--log-queries",
                "--log-facility=-",
            ],
        ));
        outside.wait_ready();
        outside
    }

    /// Waits until the page comes from every address and the name resolves, from this host.
    fn wait_ready(&self) {
        for _ in 0..100 {
            let page = [&self.address, &self.denied, &METADATA.to_owned()]
                .iter()
                .all(|a| self.fetch_from_host(a).as_deref() == Some(PAGE));
            let dns = Command::new("busybox")
                .args(["nslookup", NAME, &self.address])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&self.address));
            if page && dns {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "the outside host's servers never answered: {}",
            std::fs::read_to_string(self.dir.join("dnsmasq.log")).unwrap_or_default()
        );
    }

    /// `/page.txt` from `address`, fetched by this host.
    pub fn fetch_from_host(&self, address: &str) -> Option<String> {
        let out = Command::new("curl")
            .args(["-sf", "-m", "2", &format!("http://{address}/page.txt")])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.link])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

/// Every IPv4 address of this host (its network namespace), as `ip` lists them.
pub fn host_addresses() -> Vec<String> {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .expect("ip");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().nth(3))
        .filter_map(|cidr| cidr.split('/').next())
        .map(str::to_owned)
        .collect()
}
