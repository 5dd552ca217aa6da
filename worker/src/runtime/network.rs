//! The container's network: a fresh network namespace holds only `lo`, and it starts down.
#![allow(unsafe_code)] // SIOCGIFFLAGS/SIOCSIFFLAGS have no safe wrapper in nix or std

use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
use std::io;
use std::os::fd::AsRawFd;

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
