//! The container's network: a fresh network namespace holds only `lo`, and it starts down. An egress
//! container's init also plugs it into the worker's bridge (see `egress`): it is the process that holds the
//! new namespace and still sits in the worker's, and it is single-threaded, so `setns` moves all of it.
#![allow(unsafe_code)] // SIOCGIFFLAGS/SIOCSIFFLAGS have no safe wrapper in nix or std

use super::egress::EgressLink;
use super::netlink::Netlink;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Brings `lo` up, so services a job starts on localhost are reachable. Asking costs nothing, changing takes
/// the kernel's global RTNL lock (which a dying network namespace may hold a while), so it only changes what
/// is not so already: the spare init brings `lo` up before it is needed, and PID 1's call then only asks.
pub(crate) fn loopback_up() -> io::Result<()> {
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain data for which all zeroes is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: the socket is open and `request` is a valid ifreq that outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let up = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: SIOCGIFFLAGS filled in the flags member of the union.
    if unsafe { request.ifr_ifru.ifru_flags } & up == up {
        return Ok(());
    }
    // SAFETY: as above.
    unsafe { request.ifr_ifru.ifru_flags |= up };
    // SAFETY: as above.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &request) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The worker's side: a veth pair whose host end is an isolated port of the bridge and whose other end is
/// `eth0` in `netns`. Runs in the worker's network namespace.
pub(crate) fn plug_in(link: &EgressLink, netns: BorrowedFd<'_>) -> Result<(), String> {
    let mut netlink = Netlink::open().map_err(|e| format!("open a netlink socket: {e}"))?;
    netlink
        .add_veth(&link.host_name, link.bridge, "eth0", netns)
        .map_err(|e| format!("make the veth pair {}: {e}", link.host_name))?;
    netlink
        .isolate_port(&link.host_name)
        .map_err(|e| format!("isolate the bridge port {}: {e}", link.host_name))
}

/// The container's side: `eth0`'s address and the default route through the bridge. Runs in the container's
/// network namespace.
pub(crate) fn configure(link: &EgressLink) -> Result<(), String> {
    let mut netlink = Netlink::open().map_err(|e| format!("open a netlink socket: {e}"))?;
    let index = netlink
        .link_index("eth0")
        .map_err(|e| format!("find eth0: {e}"))?
        .ok_or("eth0 is missing from the container's network namespace")?;
    netlink
        .set_up(index)
        .map_err(|e| format!("bring eth0 up: {e}"))?;
    netlink
        .add_address(index, link.address, link.prefix_len)
        .map_err(|e| format!("give eth0 the address {}: {e}", link.address))?;
    netlink
        .add_default_route(index, link.gateway)
        .map_err(|e| format!("route through {}: {e}", link.gateway))
}
