//! The worker's nftables table (through the `nftables` crate, which hands its JSON to `nft -j -f -`): what an
//! egress job may not reach, and the NAT that lets it reach the rest. One `inet` table per worker, written in
//! one atomic batch when its bridge is made and deleted with it; nothing changes per container (the jobs'
//! ports on the bridge are isolated instead), so a container start never waits for `nft`.

use ipnet::Ipv4Net;
use nftables::batch::Batch;
use nftables::expr::{CT, Payload, PayloadField, Prefix, SetItem};
use nftables::expr::{Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression};
use nftables::helper::NftablesError;
use nftables::schema::{Chain, NfListObject, Rule, Table};
use nftables::stmt::{Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use std::borrow::Cow;

/// What the table is made from.
pub(crate) struct Rules<'a> {
    /// The table's name.
    pub table: &'a str,
    /// The worker's bridge.
    pub bridge: &'a str,
    /// The bridge's subnet, masqueraded.
    pub subnet: Ipv4Net,
    /// Destinations refused from the bridge besides the host's own addresses: link-local, loopback, every
    /// egress range (other jobs, this worker's and others'), `egress_deny`.
    pub denied: &'a [Ipv4Net],
    /// Whether Gantry turned forwarding on, so that nothing but Gantry's bridges may be forwarded through.
    pub forwarding_ours: bool,
}

/// Writes (or rewrites) the table.
pub(crate) fn apply(rules: &Rules<'_>) -> Result<(), String> {
    let mut batch = Batch::new();
    batch.add(NfListObject::Table(table(rules.table)));
    // Emptied first, so a rewrite never stacks a second copy of the rules.
    batch.add_cmd(nftables::schema::NfCmd::Flush(
        nftables::schema::FlushObject::Table(table(rules.table)),
    ));
    let chain = |name: &'static str, kind, hook, prio| {
        NfListObject::Chain(Chain {
            family: NfFamily::INet,
            table: rules.table.to_owned().into(),
            name: name.into(),
            _type: Some(kind),
            hook: Some(hook),
            prio: Some(prio),
            policy: Some(NfChainPolicy::Accept),
            ..Chain::default()
        })
    };
    // Before routing, so that a packet to any address of the host — the bridge's, every other interface's,
    // one added after the worker started — is dropped whatever happens to it next.
    batch.add(chain(
        "prerouting",
        NfChainType::Filter,
        NfHook::Prerouting,
        -150,
    ));
    batch.add(chain("input", NfChainType::Filter, NfHook::Input, 0));
    batch.add(chain("forward", NfChainType::Filter, NfHook::Forward, 0));
    batch.add(chain(
        "postrouting",
        NfChainType::NAT,
        NfHook::Postrouting,
        100,
    ));
    let from_bridge = || is(meta(MetaKey::Iifname), text(rules.bridge));
    let to_bridge = || is(meta(MetaKey::Oifname), text(rules.bridge));
    let mut rule = |chain: &'static str, expr: Vec<Statement<'static>>| {
        batch.add(NfListObject::Rule(Rule {
            family: NfFamily::INet,
            table: rules.table.to_owned().into(),
            chain: chain.into(),
            expr: expr.into(),
            ..Rule::default()
        }));
    };
    let fib_local = Expression::Named(NamedExpression::Fib(Fib {
        result: FibResult::Type,
        flags: [FibFlag::Daddr].into_iter().collect(),
    }));
    // Only answers to what the host itself opened (a connection to a job's server) come back in.
    rule(
        "prerouting",
        vec![from_bridge(), answers(), Statement::Accept(None)],
    );
    rule(
        "prerouting",
        vec![from_bridge(), is(fib_local, text("local")), drop()],
    );
    // Whatever else reaches the host from a job (IPv6 too, ARP aside) ends here.
    rule(
        "input",
        vec![from_bridge(), answers(), Statement::Accept(None)],
    );
    rule("input", vec![from_bridge(), drop()]);
    let denied = rules
        .denied
        .iter()
        .map(|net| {
            SetItem::Element(Expression::Named(NamedExpression::Prefix(Prefix {
                addr: Box::new(text(&net.network().to_string())),
                len: u32::from(net.prefix_len()),
            })))
        })
        .collect();
    rule(
        "forward",
        vec![
            from_bridge(),
            is(
                payload("ip", "daddr"),
                Expression::Named(NamedExpression::Set(denied)),
            ),
            drop(),
        ],
    );
    // Jobs get no IPv6 address; nothing of theirs leaves over IPv6.
    rule(
        "forward",
        vec![
            from_bridge(),
            is(meta(MetaKey::Nfproto), text("ipv6")),
            drop(),
        ],
    );
    rule("forward", vec![from_bridge(), to_bridge(), drop()]);
    // Into the bridge only the answers to what jobs asked: nobody outside opens a connection to a job.
    rule(
        "forward",
        vec![to_bridge(), answers(), Statement::Accept(None)],
    );
    rule("forward", vec![to_bridge(), drop()]);
    if rules.forwarding_ours {
        rule(
            "forward",
            vec![
                not(meta(MetaKey::Iifname), text("gtb-*")),
                not(meta(MetaKey::Oifname), text("gtb-*")),
                drop(),
            ],
        );
    }
    rule(
        "postrouting",
        vec![
            is(
                payload("ip", "saddr"),
                Expression::Named(NamedExpression::Prefix(Prefix {
                    addr: Box::new(text(&rules.subnet.network().to_string())),
                    len: u32::from(rules.subnet.prefix_len()),
                })),
            ),
            not(meta(MetaKey::Oifname), text(rules.bridge)),
            Statement::Masquerade(None),
        ],
    );
    nftables::helper::apply_ruleset(&batch.to_nftables()).map_err(explain)
}

/// Deletes the table, if there is one.
pub(crate) fn remove(name: &str) -> Result<(), String> {
    let mut batch = Batch::new();
    // Added first, so that deleting never fails on a table that is not there.
    batch.add(NfListObject::Table(table(name)));
    batch.delete(NfListObject::Table(table(name)));
    nftables::helper::apply_ruleset(&batch.to_nftables()).map_err(explain)
}

/// Whether `nft` can be run at all (a worker that never had an egress job needs none to sweep).
pub(crate) fn available() -> bool {
    std::process::Command::new("nft")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn explain(error: NftablesError) -> String {
    match error {
        NftablesError::NftExecution { inner, .. }
            if inner.kind() == std::io::ErrorKind::NotFound =>
        {
            "`nft` is not installed: egress jobs need nftables (apt-get install nftables)"
                .to_owned()
        }
        NftablesError::NftFailed { stderr, hint, .. } => {
            format!("nft failed while {hint}: {}", stderr.trim())
        }
        other => format!("nft: {other}"),
    }
}

fn table(name: &str) -> Table<'static> {
    Table {
        family: NfFamily::INet,
        name: name.to_owned().into(),
        handle: None,
    }
}

fn text(value: &str) -> Expression<'static> {
    Expression::String(Cow::Owned(value.to_owned()))
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: field.into(),
        },
    )))
}

fn is(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::EQ,
    })
}

fn not(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::NEQ,
    })
}

/// Packets of a connection already accepted, or errors about one.
fn answers() -> Statement<'static> {
    Statement::Match(Match {
        left: Expression::Named(NamedExpression::CT(CT {
            key: "state".into(),
            family: None,
            dir: None,
        })),
        right: Expression::List(vec![text("established"), text("related")]),
        op: Operator::IN,
    })
}

fn drop() -> Statement<'static> {
    Statement::Drop(None)
}
