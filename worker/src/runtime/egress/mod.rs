//! `network: egress` (docs/container.md, "Network"): the worker's side. A bridge of the worker's own, made at
//! its first egress job, with a subnet of `[worker] egress_range` no route of the host uses yet; an nftables
//! table that keeps jobs off the host, link-local addresses, each other and `egress_deny`, and masquerades the
//! rest; an address per container. The container's init plugs itself in (`runtime::network::plug_in`) with
//! the [`EgressLink`] handed out here. Everything is named after the worker (`gtb-…` bridge, `gantry_…`
//! table) and each container (`gtv-…` veth), so a restarted worker removes what it left.

mod dns;
mod firewall;

use super::RuntimeError;
use super::netlink::Netlink;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;

/// Where host-wide state of every worker on the host goes (a lock, and the note that Gantry turned
/// forwarding on).
const HOST_DIR: &str = "/run/gantry";

/// How a worker gives its jobs the network (`[worker] egress_range`, `egress_deny`, `dns`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EgressOptions {
    /// Job addresses come from here: each worker takes a /24 of it (or all of it, if smaller) that no route
    /// of the host covers.
    pub range: Ipv4Net,
    /// Destinations refused to jobs besides those always refused.
    pub deny: Vec<Ipv4Net>,
    /// The name servers jobs ask; empty: the host's (see `dns`).
    pub dns: Vec<IpAddr>,
}

impl Default for EgressOptions {
    fn default() -> Self {
        EgressOptions {
            range: Ipv4Net::new(Ipv4Addr::new(172, 30, 0, 0), 16).expect("a valid prefix"),
            deny: Vec::new(),
            dns: Vec::new(),
        }
    }
}

impl EgressOptions {
    /// Checks what the configuration cannot express: a range with room for the bridge and a job.
    pub fn check(&self) -> Result<(), String> {
        if self.range.prefix_len() > 29 {
            return Err(format!(
                "egress_range {} is too small: it needs room for the bridge's address and the jobs' (at most /29)",
                self.range
            ));
        }
        Ok(())
    }
}

/// What a container's init needs to plug its network namespace into the worker's bridge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EgressLink {
    /// The host end of the veth pair (its peer becomes the container's `eth0`).
    pub host_name: String,
    /// The bridge's index.
    pub bridge: u32,
    /// The container's address.
    pub address: Ipv4Addr,
    /// Its prefix length.
    pub prefix_len: u8,
    /// The bridge's address: the container's default route.
    pub gateway: Ipv4Addr,
}

/// A worker's egress: its bridge and table once made, and the addresses in use.
#[derive(Debug)]
pub(crate) struct Egress {
    options: EgressOptions,
    bridge: String,
    table: String,
    made: Mutex<Option<Bridge>>,
}

#[derive(Debug)]
struct Bridge {
    index: u32,
    subnet: Ipv4Net,
    /// Host numbers (offsets in the subnet) given to live containers.
    taken: BTreeSet<u32>,
    /// Where the next search for a free number starts: round robin, so a number is not given again right
    /// after its container ended (the kernel removes a dead namespace's interfaces a little later).
    next: u32,
    resolv_conf: String,
}

impl Egress {
    /// A worker's egress; nothing is made until its first egress container.
    pub fn new(worker: &str, options: EgressOptions) -> Egress {
        let tag = short_hash(worker);
        Egress {
            options,
            bridge: format!("gtb-{tag}"),
            table: format!("gantry_{tag}"),
            made: Mutex::new(None),
        }
    }

    /// Hands container `id` an address on the bridge (made first, with its table, if this is the first egress
    /// container), and the `/etc/resolv.conf` it gets.
    pub fn attach(&self, id: &str) -> Result<(EgressLink, String), RuntimeError> {
        let mut made = self.made.lock().unwrap_or_else(|p| p.into_inner());
        if made.is_none() {
            *made = Some(self.make().map_err(RuntimeError::Egress)?);
        }
        let bridge = made.as_mut().expect("made above");
        let size = 1u32 << (32 - bridge.subnet.prefix_len());
        // 0 is the network, 1 the bridge, size-1 the broadcast address.
        let usable = size - 3;
        let number = (0..usable)
            .map(|i| 2 + (bridge.next - 2 + i) % usable)
            .find(|n| !bridge.taken.contains(n))
            .ok_or_else(|| {
                RuntimeError::Egress(format!(
                    "every address of {} is in use by this worker's jobs",
                    bridge.subnet
                ))
            })?;
        bridge.taken.insert(number);
        bridge.next = 2 + (number - 2 + 1) % usable;
        let base = u32::from(bridge.subnet.network());
        Ok((
            EgressLink {
                host_name: format!("gtv-{}", short_hash(id)),
                bridge: bridge.index,
                address: Ipv4Addr::from(base + number),
                prefix_len: bridge.subnet.prefix_len(),
                gateway: Ipv4Addr::from(base + 1),
            },
            bridge.resolv_conf.clone(),
        ))
    }

    /// Frees a container's address. Its veth pair goes with its network namespace, which the kernel removes
    /// once the container's last process is gone, off this thread: deleting it here waited ~20 ms for the
    /// kernel's RCU grace periods at every egress container's end. The round robin keeps the address unused
    /// meanwhile; the sweep deletes what a killed worker's containers left plugged in.
    pub fn detach(&self, link: &EgressLink) {
        let mut made = self.made.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bridge) = made.as_mut() {
            let number = u32::from(link.address) - u32::from(bridge.subnet.network());
            bridge.taken.remove(&number);
        }
    }

    /// Removes what an earlier run of this worker left: the bridge, the veths still plugged into it, the
    /// table. A worker that never had an egress job, on a host without `nft`, has no table to remove.
    pub fn sweep(&self) -> Result<(), RuntimeError> {
        let mut netlink = Netlink::open().map_err(|e| RuntimeError::Egress(e.to_string()))?;
        let links = netlink
            .links()
            .map_err(|e| RuntimeError::Egress(format!("list the links: {e}")))?;
        let had_bridge = links.iter().any(|l| l.name == self.bridge);
        if let Some(bridge) = links.iter().find(|l| l.name == self.bridge) {
            for port in links.iter().filter(|l| l.controller == Some(bridge.index)) {
                netlink
                    .delete_link(&port.name)
                    .map_err(|e| RuntimeError::Egress(format!("remove {}: {e}", port.name)))?;
            }
            netlink
                .delete_link(&self.bridge)
                .map_err(|e| RuntimeError::Egress(format!("remove {}: {e}", self.bridge)))?;
        }
        if firewall::available() {
            firewall::remove(&self.table).map_err(RuntimeError::Egress)?;
        }
        if had_bridge {
            tracing::info!(bridge = %self.bridge, "removed the egress bridge an earlier run of this worker left, and its table");
        }
        Ok(())
    }

    /// Makes the bridge and the table.
    fn make(&self) -> Result<Bridge, String> {
        let resolv_conf = dns::resolv_conf(&self.options.dns)?;
        std::fs::create_dir_all(HOST_DIR).map_err(|e| format!("create {HOST_DIR}: {e}"))?;
        let forwarding_ours = turn_forwarding_on()?;
        let mut netlink = Netlink::open().map_err(|e| format!("open a netlink socket: {e}"))?;
        // Workers starting at once must not pick the same subnet.
        let lock_path = format!("{HOST_DIR}/egress.lock");
        let lock =
            std::fs::File::create(&lock_path).map_err(|e| format!("open {lock_path}: {e}"))?;
        let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| format!("lock {lock_path}: {e}"))?;
        let subnet = choose_subnet(self.options.range, &self.bridge, &routes()?).ok_or_else(|| {
            format!(
                "every /24 of egress_range {} is in use on this host: give this worker another range",
                self.options.range
            )
        })?;
        netlink
            .delete_link(&self.bridge)
            .map_err(|e| e.to_string())?;
        netlink
            .add_bridge(&self.bridge)
            .map_err(|e| format!("create the bridge {}: {e}", self.bridge))?;
        let made = self.finish(&mut netlink, subnet, forwarding_ours);
        match made {
            Ok(index) => {
                tracing::info!(bridge = %self.bridge, %subnet, table = %self.table, "egress bridge ready");
                Ok(Bridge {
                    index,
                    subnet,
                    taken: BTreeSet::new(),
                    next: 2,
                    resolv_conf,
                })
            }
            Err(error) => {
                let _ = netlink.delete_link(&self.bridge);
                let _ = firewall::remove(&self.table);
                Err(error)
            }
        }
    }

    /// Addresses the bridge, writes the table and brings the bridge up; returns its index.
    fn finish(
        &self,
        netlink: &mut Netlink,
        subnet: Ipv4Net,
        forwarding_ours: bool,
    ) -> Result<u32, String> {
        let index = netlink
            .link_index(&self.bridge)
            .map_err(|e| e.to_string())?
            .ok_or("the bridge vanished as it was made")?;
        // No IPv6 link-local address on the host's side of the bridge (jobs get IPv4 only).
        let ipv6 = format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", self.bridge);
        match std::fs::write(&ipv6, "1") {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("write {ipv6}: {e}"));
            }
            _ => {}
        }
        let gateway = Ipv4Addr::from(u32::from(subnet.network()) + 1);
        netlink
            .add_address(index, gateway, subnet.prefix_len())
            .map_err(|e| format!("address the bridge: {e}"))?;
        let mut denied = vec![
            Ipv4Net::new(Ipv4Addr::new(169, 254, 0, 0), 16).expect("valid"),
            Ipv4Net::new(Ipv4Addr::new(127, 0, 0, 0), 8).expect("valid"),
            Ipv4Net::new(Ipv4Addr::new(224, 0, 0, 0), 4).expect("valid"),
            self.options.range,
        ];
        denied.extend(self.options.deny.iter().copied());
        firewall::apply(&firewall::Rules {
            table: &self.table,
            bridge: &self.bridge,
            subnet,
            denied: &Ipv4Net::aggregate(&denied),
            forwarding_ours,
        })?;
        netlink
            .set_up(index)
            .map_err(|e| format!("bring the bridge up: {e}"))?;
        Ok(index)
    }

    /// Removes the bridge and the table (the worker is stopping).
    fn remove(&mut self) {
        let made = self.made.get_mut().map(Option::take).unwrap_or_default();
        if made.is_none() {
            return;
        }
        if let Err(e) = Netlink::open().and_then(|mut n| n.delete_link(&self.bridge)) {
            tracing::warn!(bridge = %self.bridge, error = %e, "cannot remove the egress bridge");
        }
        if let Err(e) = firewall::remove(&self.table) {
            tracing::warn!(table = %self.table, error = %e, "cannot remove the egress table");
        }
    }
}

impl Drop for Egress {
    fn drop(&mut self) {
        self.remove();
    }
}

/// 11 hex digits of a name's SHA-256: with `gtb-`/`gtv-`, a 15-byte interface name.
fn short_hash(name: &str) -> String {
    hex::encode(Sha256::digest(name.as_bytes()))[..11].to_owned()
}

/// Turns IPv4 forwarding on if it is off; says whether Gantry turned it on (now or earlier), so that the
/// tables forward nothing but the jobs' traffic.
fn turn_forwarding_on() -> Result<bool, String> {
    let path = "/proc/sys/net/ipv4/ip_forward";
    let netns = std::fs::metadata("/proc/self/ns/net")
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .map_err(|e| format!("read /proc/self/ns/net: {e}"))?;
    let note = format!("{HOST_DIR}/forwarding-turned-on-{netns}");
    let on = std::fs::read_to_string(path).map_err(|e| format!("read {path}: {e}"))?;
    if on.trim() == "0" {
        std::fs::write(path, "1").map_err(|e| format!("turn on IPv4 forwarding ({path}): {e}"))?;
        std::fs::write(&note, "").map_err(|e| format!("write {note}: {e}"))?;
        tracing::warn!(
            "turned on IPv4 forwarding for egress jobs; Gantry's tables forward only to and from its bridges"
        );
    }
    Ok(std::path::Path::new(&note).exists())
}

/// The destinations of the main routing table, but the default route.
fn routes() -> Result<Vec<Ipv4Net>, String> {
    let path = "/proc/net/route";
    let text = std::fs::read_to_string(path).map_err(|e| format!("read {path}: {e}"))?;
    Ok(parse_routes(&text))
}

fn parse_routes(text: &str) -> Vec<Ipv4Net> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // The kernel prints addresses as hex of their in-memory (network order) bytes.
            let hex = |i: usize| {
                u32::from_str_radix(fields.get(i)?, 16)
                    .ok()
                    .map(|v| Ipv4Addr::from(v.to_le_bytes()))
            };
            let (destination, mask) = (hex(1)?, hex(7)?);
            let prefix = u32::from(mask).leading_ones() as u8;
            (prefix > 0).then(|| Ipv4Net::new(destination, prefix).ok())?
        })
        .collect()
}

/// The first /24 of `range` (all of it, if smaller) that no route covers or falls in, starting at a place
/// that depends on the bridge's name, so that a restarted worker finds its own subnet again.
fn choose_subnet(range: Ipv4Net, bridge: &str, used: &[Ipv4Net]) -> Option<Ipv4Net> {
    let subnets: Vec<Ipv4Net> = range.subnets(range.prefix_len().max(24)).ok()?.collect();
    let start = u64::from_str_radix(&short_hash(bridge)[..8], 16).ok()? as usize % subnets.len();
    (0..subnets.len())
        .map(|i| subnets[(start + i) % subnets.len()])
        .find(|s| !used.iter().any(|u| u.contains(s) || s.contains(u)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_read_from_the_kernels_hex() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                    eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                    gtb-x\t00011EAC\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let routes = parse_routes(text);
        assert_eq!(
            routes,
            vec![
                "192.0.2.0/24".parse::<Ipv4Net>().unwrap(),
                "172.30.1.0/24".parse().unwrap()
            ]
        );
    }

    #[test]
    fn a_subnet_in_use_is_skipped_and_small_ranges_are_taken_whole() {
        let range: Ipv4Net = "172.30.0.0/16".parse().unwrap();
        let first = choose_subnet(range, "gtb-a", &[]).unwrap();
        assert_eq!(first.prefix_len(), 24);
        assert!(range.contains(&first));
        let next = choose_subnet(range, "gtb-a", &[first]).unwrap();
        assert_ne!(next, first);
        let everything: Vec<Ipv4Net> = vec![range];
        assert_eq!(choose_subnet(range, "gtb-a", &everything), None);
        let small: Ipv4Net = "10.9.9.0/28".parse().unwrap();
        assert_eq!(choose_subnet(small, "gtb-a", &[]), Some(small));
    }

    #[test]
    fn names_fit_an_interface_name() {
        let egress = Egress::new("a-worker-with-a-long-name", EgressOptions::default());
        assert_eq!(egress.bridge.len(), 15);
        let (ok, bad) = (
            EgressOptions::default(),
            EgressOptions {
                range: "10.0.0.0/30".parse().unwrap(),
                ..EgressOptions::default()
            },
        );
        assert!(ok.check().is_ok());
        assert!(bad.check().unwrap_err().contains("too small"));
    }
}
