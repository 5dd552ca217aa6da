//! A small synchronous rtnetlink client over `netlink-sys`, with messages from `netlink-packet-route`: links,
//! addresses and routes in the network namespace the socket was opened in. Synchronous on purpose: it runs in
//! a container's single-threaded init and in the runtime's blocking calls, where a request is a send and a
//! receive of a few hundred bytes and an async runtime would only add a round trip to its thread.

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd};

/// A route netlink socket in the network namespace of the thread that opened it.
pub(crate) struct Netlink {
    socket: Socket,
    sequence: u32,
    buf: Vec<u8>,
}

/// A link as a dump lists it.
#[derive(Debug)]
pub(crate) struct Link {
    /// Its index.
    pub index: u32,
    /// Its name.
    pub name: String,
    /// The index of the bridge it is a port of, if any.
    pub controller: Option<u32>,
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Netlink> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Netlink {
            socket,
            sequence: 0,
            buf: vec![0; 64 * 1024],
        })
    }

    /// The index of the link called `name`, if there is one.
    pub fn link_index(&mut self, name: &str) -> io::Result<Option<u32>> {
        let mut message = LinkMessage::default();
        message
            .attributes
            .push(LinkAttribute::IfName(name.to_owned()));
        let mut index = None;
        let result = self.exchange(RouteNetlinkMessage::GetLink(message), 0, |reply| {
            if let RouteNetlinkMessage::NewLink(link) = reply {
                index = Some(link.header.index);
            }
        });
        match result {
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
            Ok(()) => Ok(index),
        }
    }

    /// Every link of the namespace.
    pub fn links(&mut self) -> io::Result<Vec<Link>> {
        let mut links = Vec::new();
        self.exchange(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
            |reply| {
                if let RouteNetlinkMessage::NewLink(link) = reply {
                    let mut name = String::new();
                    let mut controller = None;
                    for attribute in link.attributes {
                        match attribute {
                            LinkAttribute::IfName(n) => name = n,
                            LinkAttribute::Controller(c) => controller = Some(c),
                            _ => {}
                        }
                    }
                    links.push(Link {
                        index: link.header.index,
                        name,
                        controller,
                    });
                }
            },
        )?;
        Ok(links)
    }

    /// Makes a bridge called `name`, down; fails if the name is taken.
    pub fn add_bridge(&mut self, name: &str) -> io::Result<()> {
        let mut message = LinkMessage::default();
        message.attributes = vec![
            LinkAttribute::IfName(name.to_owned()),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]),
        ];
        self.request(
            RouteNetlinkMessage::NewLink(message),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Makes a veth pair: `name` here, up, a port of bridge `controller`, and `peer` in the network
    /// namespace `peer_netns`, down.
    pub fn add_veth(
        &mut self,
        name: &str,
        controller: u32,
        peer: &str,
        peer_netns: BorrowedFd<'_>,
    ) -> io::Result<()> {
        // The peer stays down: bringing it up before the pair is linked fails (ENOTCONN, veth_open).
        let mut peer_message = LinkMessage::default();
        peer_message.attributes = vec![
            LinkAttribute::IfName(peer.to_owned()),
            LinkAttribute::NetNsFd(peer_netns.as_raw_fd()),
        ];
        let mut message = LinkMessage::default();
        message.header.flags = LinkFlags::Up;
        message.header.change_mask = LinkFlags::Up;
        message.attributes = vec![
            LinkAttribute::IfName(name.to_owned()),
            LinkAttribute::Controller(controller),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_message))),
            ]),
        ];
        self.request(
            RouteNetlinkMessage::NewLink(message),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Makes bridge port `name` isolated: the bridge forwards nothing between two isolated ports, so the jobs
    /// behind them cannot reach each other, not even by ARP.
    pub fn isolate_port(&mut self, name: &str) -> io::Result<()> {
        let mut message = LinkMessage::default();
        message.attributes = vec![
            LinkAttribute::IfName(name.to_owned()),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::PortKind(InfoPortKind::Bridge),
                LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::Isolated(
                    true,
                )])),
            ]),
        ];
        self.request(RouteNetlinkMessage::NewLink(message), 0)
    }

    /// Brings link `index` up.
    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.header.flags = LinkFlags::Up;
        message.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(message), 0)
    }

    /// Removes the link called `name` (a veth takes its peer with it); Ok if there is none.
    pub fn delete_link(&mut self, name: &str) -> io::Result<()> {
        let mut message = LinkMessage::default();
        message
            .attributes
            .push(LinkAttribute::IfName(name.to_owned()));
        match self.request(RouteNetlinkMessage::DelLink(message), 0) {
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
            other => other,
        }
    }

    /// Gives link `index` the address `address/prefix_len`.
    pub fn add_address(&mut self, index: u32, address: Ipv4Addr, prefix_len: u8) -> io::Result<()> {
        let mut message = AddressMessage::default();
        message.header.family = AddressFamily::Inet;
        message.header.prefix_len = prefix_len;
        message.header.scope = AddressScope::Universe;
        message.header.index = index;
        message.attributes = vec![
            AddressAttribute::Local(address.into()),
            AddressAttribute::Address(address.into()),
        ];
        self.request(
            RouteNetlinkMessage::NewAddress(message),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Adds the default route through `gateway` on link `index`.
    pub fn add_default_route(&mut self, index: u32, gateway: Ipv4Addr) -> io::Result<()> {
        let mut message = RouteMessage::default();
        message.header.address_family = AddressFamily::Inet;
        message.header.table = libc::RT_TABLE_MAIN;
        message.header.protocol = RouteProtocol::Boot;
        message.header.scope = RouteScope::Universe;
        message.header.kind = RouteType::Unicast;
        message.attributes = vec![
            RouteAttribute::Gateway(RouteAddress::Inet(gateway)),
            RouteAttribute::Oif(index),
        ];
        self.request(
            RouteNetlinkMessage::NewRoute(message),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Sends a request and waits for its acknowledgement.
    fn request(&mut self, message: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.exchange(message, flags, |_| {})
    }

    /// Sends `message` and hands each reply to `each` until the kernel's acknowledgement, its error, or the
    /// end of a dump.
    fn exchange(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
        mut each: impl FnMut(RouteNetlinkMessage),
    ) -> io::Result<()> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket.send(&out, 0)?;
        loop {
            let size = self.socket.recv(&mut &mut self.buf[..], 0)?;
            let mut offset = 0;
            while offset < size {
                let reply =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[offset..size])
                        .map_err(|e| io::Error::other(format!("a netlink reply: {e}")))?;
                let length = reply.header.length as usize;
                if length == 0 {
                    return Err(io::Error::other("a netlink reply of length 0"));
                }
                offset += length;
                if reply.header.sequence_number != self.sequence {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Error(error) => {
                        return match error.code {
                            None => Ok(()),
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::InnerMessage(inner) => each(inner),
                    _ => {}
                }
            }
        }
    }
}
