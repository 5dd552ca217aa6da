//! The resolvers an egress job asks: `[worker] dns`, or the host's own from `/etc/resolv.conf` — and when the
//! host asks a resolver on loopback (systemd-resolved's 127.0.0.53, a local dnsmasq), which a job cannot
//! reach, the upstream servers that one forwards to.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

/// systemd-resolved writes the servers it forwards to here.
const RESOLVED_UPSTREAMS: &str = "/run/systemd/resolve/resolv.conf";

/// The `/etc/resolv.conf` egress jobs get, or why there can be none.
pub(crate) fn resolv_conf(configured: &[IpAddr]) -> Result<String, String> {
    if !configured.is_empty() {
        return render(&usable(configured)?, &[]);
    }
    let host = read("/etc/resolv.conf")?;
    let (servers, other) = parse(&host);
    let reachable: Vec<IpAddr> = servers
        .iter()
        .copied()
        .filter(|s| !s.is_loopback())
        .collect();
    if !reachable.is_empty() {
        return render(&usable(&reachable)?, &other);
    }
    // Only loopback resolvers: ask for the ones they forward to.
    if Path::new(RESOLVED_UPSTREAMS).exists() {
        let (upstream, _) = parse(&read(RESOLVED_UPSTREAMS)?);
        let upstream: Vec<IpAddr> = upstream.into_iter().filter(|s| !s.is_loopback()).collect();
        if !upstream.is_empty() {
            return render(&usable(&upstream)?, &other);
        }
    }
    Err(format!(
        "this host resolves names through {} on loopback, which jobs cannot reach, and its upstream servers \
         are unknown: set [worker] dns to the servers egress jobs should ask",
        servers
            .first()
            .map_or("nothing".to_owned(), ToString::to_string)
    ))
}

fn read(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("read {path}: {e}"))
}

/// The nameservers, and the `search` and `options` lines kept as they are.
fn parse(text: &str) -> (Vec<IpAddr>, Vec<String>) {
    let mut servers = Vec::new();
    let mut other = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                // A scoped IPv6 address (`fe80::1%eth0`) names a host interface: not for jobs.
                if let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) {
                    servers.push(ip);
                }
            }
            Some("search" | "domain" | "options") => other.push(line.trim().to_owned()),
            _ => {}
        }
    }
    (servers, other)
}

/// The IPv4 servers (jobs have no IPv6), at most three as the C library reads.
fn usable(servers: &[IpAddr]) -> Result<Vec<Ipv4Addr>, String> {
    let v4: Vec<Ipv4Addr> = servers
        .iter()
        .filter_map(|s| match s {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        })
        .take(3)
        .collect();
    if v4.is_empty() {
        return Err(format!(
            "no IPv4 name server among {servers:?}, and egress jobs have IPv4 only: set [worker] dns"
        ));
    }
    Ok(v4)
}

fn render(servers: &[Ipv4Addr], other: &[String]) -> Result<String, String> {
    let mut text = String::from("# written by Gantry for this job (network: egress)\n");
    for server in servers {
        text.push_str(&format!("nameserver {server}\n"));
    }
    for line in other {
        text.push_str(line);
        text.push('\n');
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_scoped_servers_are_left_out_and_search_lines_kept() {
        let (servers, other) = parse(
            "# comment\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\nnameserver 10.0.0.2\n\
             search example.com\noptions edns0 trust-ad\n",
        );
        assert_eq!(
            servers,
            vec![
                "127.0.0.53".parse::<IpAddr>().unwrap(),
                "10.0.0.2".parse().unwrap()
            ]
        );
        assert_eq!(other, ["search example.com", "options edns0 trust-ad"]);
        let text = render(&usable(&servers[1..]).unwrap(), &other).unwrap();
        assert!(text.contains("nameserver 10.0.0.2\nsearch example.com\n"));
    }

    #[test]
    fn configured_servers_win_and_ipv6_only_is_refused() {
        let text = resolv_conf(&["192.0.2.53".parse().unwrap()]).unwrap();
        assert!(text.ends_with("nameserver 192.0.2.53\n"), "{text}");
        let err = resolv_conf(&["2001:db8::53".parse().unwrap()]).unwrap_err();
        assert!(err.contains("IPv4 only"), "{err}");
    }
}
