//! Preferred SOCKS5 ports: which principal of a node listens on which port.
//!
//! On a device, the port is how an application picks an identity: a browser
//! set to `127.0.0.1:1081` speaks as whoever holds 1081. So a port belongs to
//! a principal by what the YAML says, never by position: adding or removing a
//! principal leaves every other principal's port where it was.
//!
//! ```text
//! band      1080 ..................................... 1179   (+ the device's scope offset)
//!           ^ the one user/service of a node             ^ the node identity
//!             without socks_port                           without socks_port
//!           declared socks_port: anywhere in the band, a user's on every node alike
//! ```
//!
//! - A declared `socks_port` (users.yaml, services.yaml, nodes.yaml) is the port.
//! - The node identity without one gets [`NODE_DEFAULT`] (a node holds one node identity).
//! - A user or calling service without one gets [`SOLE_DEFAULT`], but only while
//!   it is the only such principal on the node: with two, a later addition
//!   could take over the default, so [`check`] refuses and asks for ports.
//! - [`check`] refuses two principals of one node on one port, saying which
//!   declaration to change.
//!
//! Two users may declare the same port as long as no node holds both: the
//! band has 100 ports and a rete may have thousands of users (each device
//! holds a few). Putting both on one node later is refused, not resolved by
//! moving one of them.
//!
//! Which principals get a SOCKS5 listener at all (every held user; a hosted
//! service or the node only if it may reach some service) and in what order
//! they appear in the artifact is [`assign`]'s too, so compile and validate
//! cannot disagree.

use std::collections::BTreeMap;

use flor_vertex::artifact::{SOCKS_PORT_FIRST, SOCKS_PORT_LAST};
use flor_vertex::identity::SpiffeId;

use crate::checked::{Access, DeclaredPort, Node, Rete, Service};
use crate::model::{self, Problem};

/// First port of the band (the device's `SOCKS_PORT_FIRST`).
pub const FIRST: u16 = SOCKS_PORT_FIRST;
/// Last port of the band (the device's `SOCKS_PORT_LAST`).
pub const LAST: u16 = SOCKS_PORT_LAST;
/// The node identity's port when nodes.yaml declares none: the top of the
/// band, which no default user or service ever gets.
pub const NODE_DEFAULT: u16 = LAST;
/// The port of the one user or calling service of a node that declares none:
/// the conventional SOCKS port, so a single-user laptop needs no ports at all.
pub const SOLE_DEFAULT: u16 = FIRST;
const _: () = assert!(SOLE_DEFAULT != NODE_DEFAULT, "the two defaults never meet");

/// Where a principal's port comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `socks_port:` at this line of this file.
    Declared {
        /// users.yaml, services.yaml or nodes.yaml.
        file: &'static str,
        /// Line of `socks_port:`.
        line: u64,
    },
    /// [`SOLE_DEFAULT`]: the node's one user or service without `socks_port`.
    SoleDefault {
        /// Line of the principal's `name:` in its file.
        file: &'static str,
        /// Line of its `name:`.
        line: u64,
    },
    /// [`NODE_DEFAULT`]: the node identity without `socks_port`.
    NodeDefault,
}

/// One SOCKS5 listener of a node: who, on which preferred port, and why.
#[derive(Clone, Debug)]
pub struct Assigned<'a> {
    /// The principal every flow through the listener speaks as.
    pub id: &'a SpiffeId,
    /// Its preferred port (before the device's scope offset).
    pub port: u16,
    /// Where the port comes from.
    pub origin: Origin,
    /// `user "bob"`, `service "beta/tcp-echo"`, `node "laptop"`.
    pub who: String,
}

/// A node's SOCKS5 listeners in artifact order (held users by name, hosted
/// services that may call out by identity, the node if it may call out),
/// each with its port, and what is wrong with them. Ports are filled in even
/// when there are problems; compile only runs once [`check`] found none.
pub fn assign<'a>(rete: &'a Rete, access: &Access, node: &'a Node) -> Vec<Assigned<'a>> {
    let mut out = Vec::new();
    let mut users: Vec<&str> = node.users.iter().map(String::as_str).collect();
    users.sort_unstable();
    for name in users {
        if let Some(u) = rete.users.get(name) {
            out.push(principal(
                &u.id,
                format!("user {name:?}"),
                u.socks_port,
                model::USERS_FILE,
                u.line,
            ));
        }
    }
    let mut services: Vec<(&String, &Service)> = rete
        .services
        .iter()
        .filter(|(_, s)| s.node == node.name.as_str() && access.reach.contains_key(&s.id))
        .collect();
    services.sort_by(|a, b| a.1.id.cmp(&b.1.id));
    for (key, s) in services {
        out.push(principal(
            &s.id,
            format!("service {key:?}"),
            s.socks_port,
            model::SERVICES_FILE,
            s.line,
        ));
    }
    if access.reach.contains_key(&node.id) {
        let (port, origin) = match node.socks_port {
            Some(p) => (
                p.port,
                Origin::Declared {
                    file: model::NODES_FILE,
                    line: p.line,
                },
            ),
            None => (NODE_DEFAULT, Origin::NodeDefault),
        };
        out.push(Assigned {
            id: &node.id,
            port,
            origin,
            who: format!("node {:?}", node.name.as_str()),
        });
    }
    out
}

fn principal<'a>(
    id: &'a SpiffeId,
    who: String,
    declared: Option<DeclaredPort>,
    file: &'static str,
    name_line: u64,
) -> Assigned<'a> {
    let (port, origin) = match declared {
        Some(p) => (p.port, Origin::Declared { file, line: p.line }),
        None => (
            SOLE_DEFAULT,
            Origin::SoleDefault {
                file,
                line: name_line,
            },
        ),
    };
    Assigned {
        id,
        port,
        origin,
        who,
    }
}

/// What a principal's port is, for a message: `user "bob" (socks_port at users.yaml:7)`.
fn describe(a: &Assigned<'_>) -> String {
    match a.origin {
        Origin::Declared { file, line } => format!("{} (socks_port at {file}:{line})", a.who),
        Origin::SoleDefault { file, line } => format!(
            "{} ({file}:{line}, no socks_port: the default {SOLE_DEFAULT})",
            a.who
        ),
        Origin::NodeDefault => format!(
            "{} (no socks_port in {}: the node default {NODE_DEFAULT})",
            a.who,
            model::NODES_FILE
        ),
    }
}

/// Every node's SOCKS5 port problems, at the node's line in nodes.yaml.
pub fn check(rete: &Rete, access: &Access) -> Vec<Problem> {
    let mut problems = Vec::new();
    for node in rete.nodes.values() {
        let at = |msg: String| Problem::new(model::NODES_FILE, node.line, msg);
        let n = node.name.as_str();
        let listeners = assign(rete, access, node);
        let undeclared: Vec<&Assigned<'_>> = listeners
            .iter()
            .filter(|a| matches!(a.origin, Origin::SoleDefault { .. }))
            .collect();
        if undeclared.len() > 1 {
            let list: Vec<String> = undeclared
                .iter()
                .map(|a| match a.origin {
                    Origin::SoleDefault { file, line } => format!("{} ({file}:{line})", a.who),
                    _ => describe(a),
                })
                .collect();
            problems.push(at(format!(
                "node {n:?} holds {} principals with a SOCKS5 listener and no socks_port: {}; only one may go without (it gets {SOLE_DEFAULT}), or adding one could take over another's port: declare socks_port ({FIRST}-{LAST}) for the others, and leave {SOLE_DEFAULT} to whoever uses it today",
                undeclared.len(),
                list.join(", "),
            )));
        }
        let mut by_port: BTreeMap<u16, Vec<&Assigned<'_>>> = BTreeMap::new();
        for a in &listeners {
            // Several undeclared principals were reported above as such.
            if undeclared.len() > 1 && matches!(a.origin, Origin::SoleDefault { .. }) {
                continue;
            }
            by_port.entry(a.port).or_default().push(a);
        }
        for (port, holders) in by_port {
            let Some((first, rest)) = holders.split_first() else {
                continue;
            };
            for other in rest {
                // Either change can be right: the principal that uses the
                // port today should keep it, and only the operator knows which.
                let fix = match (first.origin, other.origin) {
                    (
                        Origin::Declared { file: f1, line: l1 },
                        Origin::Declared { file: f2, line: l2 },
                    ) => format!(
                        "change the socks_port at {f1}:{l1} or the one at {f2}:{l2}; whoever uses {port} today should keep it"
                    ),
                    (Origin::Declared { file, line }, _) | (_, Origin::Declared { file, line }) => {
                        let default = if matches!(first.origin, Origin::Declared { .. }) {
                            &other.who
                        } else {
                            &first.who
                        };
                        format!(
                            "declare a socks_port for {default}, or change the one at {file}:{line}; whoever uses {port} today should keep it"
                        )
                    }
                    // Two defaults are never equal (SOLE_DEFAULT != NODE_DEFAULT, one sole default).
                    _ => "declare a socks_port for one of them".to_owned(),
                };
                problems.push(at(format!(
                    "node {n:?}: {} and {} would share SOCKS5 port {port}; {fix}",
                    describe(first),
                    describe(other),
                )));
            }
        }
    }
    problems
}
