//! What the runtime, the zygote and a container's init say to each other: one JSON document per datagram on
//! `SOCK_SEQPACKET` sockets, with file descriptors passed alongside as `SCM_RIGHTS`.
#![allow(unsafe_code)] // recvmsg hands over fds as raw numbers; owning them is the only way to close them

use crate::runtime::userns::IdMap;
use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

/// The most fds one message carries: a container's config, control and output pipes.
pub(crate) const MAX_FDS: usize = 3;

fn yes() -> bool {
    true
}

/// The largest message; requests and reports are small (the config travels on its own pipe).
pub(crate) const MAX_MESSAGE: usize = 64 * 1024;

/// What the runtime asks of the zygote. `child` is the runtime's name for one container init.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub(crate) enum Request {
    /// Fork an init into fresh namespaces (a network namespace only with `network`); it creates and joins the
    /// cgroup directories of the `procs` files, then waits for `Start`.
    Prepare {
        child: u64,
        procs: Vec<PathBuf>,
        network: bool,
        /// A session of its own (always, but when measuring what that costs).
        #[serde(default = "yes")]
        new_session: bool,
        /// The user namespace's map; none: the host's user namespace.
        id_map: Option<IdMap>,
    },
    /// Hand the init its config, control and output pipes (the message's fds, in that order): it builds the
    /// container now. `procs` are the container's cgroup files as they are named now (a spare's cgroup is
    /// renamed to the container's before it starts): the zygote removes them should the worker die.
    Start {
        child: u64,
        #[serde(default)]
        procs: Vec<PathBuf>,
    },
    /// SIGKILL the init, unless it was reaped already.
    Kill { child: u64 },
}

/// What the zygote tells the runtime.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum Report {
    /// The init is in its cgroup and namespaces, waiting for `Start`.
    Joined { child: u64 },
    /// The init could not be made, or could not join its cgroup.
    Failed { child: u64, message: String },
    /// The init was reaped; `status` is its raw wait status.
    Exited { child: u64, status: i32 },
}

/// What an init tells the zygote before it starts.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum InitNote {
    /// See [`Report::Joined`].
    Joined,
    /// See [`Report::Failed`].
    Failed { message: String },
    /// Started: the container's mount namespace is made, for the zygote to hold (see `server::Kid::mounts`).
    Unshared,
}

/// A connected pair of close-on-exec `SOCK_SEQPACKET` sockets.
pub(crate) fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?)
}

/// Sends one message with `fds`; fails with EPIPE rather than raising SIGPIPE when the peer is gone.
pub(crate) fn send(
    socket: &impl AsRawFd,
    message: &impl Serialize,
    fds: &[RawFd],
) -> io::Result<()> {
    let bytes = serde_json::to_vec(message).map_err(io::Error::other)?;
    let iov = [IoSlice::new(&bytes)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
    loop {
        match sendmsg::<()>(
            socket.as_raw_fd(),
            &iov,
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
            Ok(_) => return Ok(()),
        }
    }
}

/// Receives one message and the fds that came with it (close-on-exec); None once the peer is gone.
pub(crate) fn recv<T: DeserializeOwned>(
    socket: &impl AsRawFd,
    buf: &mut [u8],
) -> io::Result<Option<(T, Vec<OwnedFd>)>> {
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (len, fds, truncated) = loop {
        let mut iov = [IoSliceMut::new(buf)];
        let received = recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        );
        let msg = match received {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(msg) => msg,
        };
        let mut fds = Vec::new();
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(raw) = cmsg {
                // SAFETY: the kernel just installed these fds in this process for us; nothing else owns them.
                fds.extend(
                    raw.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        let truncated = msg
            .flags
            .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
        break (msg.bytes, fds, truncated);
    };
    if len == 0 && fds.is_empty() {
        return Ok(None);
    }
    if truncated {
        return Err(io::Error::other("a message or its fds did not fit"));
    }
    let message = serde_json::from_slice(&buf[..len]).map_err(io::Error::other)?;
    Ok(Some((message, fds)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn messages_and_fds_travel_together_and_eof_reads_as_none() {
        let (a, b) = seqpacket_pair().unwrap();
        let (reader, writer) = nix::unistd::pipe().unwrap();
        let request = Request::Prepare {
            child: 7,
            procs: vec!["/sys/fs/cgroup/pids/gantry/w-1/cgroup.procs".into()],
            network: true,
            new_session: true,
            id_map: Some(IdMap::for_worker("w")),
        };
        send(&a, &request, &[writer.as_raw_fd()]).unwrap();
        drop(writer);
        let mut buf = vec![0; MAX_MESSAGE];
        let (got, mut fds) = recv::<Request>(&b, &mut buf).unwrap().unwrap();
        assert_eq!(got, request);
        assert_eq!(fds.len(), 1);
        std::fs::File::from(fds.pop().unwrap())
            .write_all(b"hi")
            .unwrap();
        let mut text = String::new();
        std::fs::File::from(reader)
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "hi");
        drop(a);
        assert!(recv::<Request>(&b, &mut buf).unwrap().is_none());
    }
}
