//! Security group rules as single atoms (one protocol, one port range, one source), so that the
//! isolation group's rules can be compared with the responder access it may keep. Pure: no I/O.
//!
//! EC2 describes a group's rules grouped (one `IpPermission` with several address ranges);
//! revoking or authorizing atom by atom lets the network step remove exactly what is not
//! allowed and add exactly what is missing.

use std::collections::BTreeSet;

use aws_sdk_ec2::types::{IpPermission, IpRange, Ipv6Range, PrefixListId, UserIdGroupPair};

use crate::config::ResponderAccess;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Ipv4(String),
    Ipv6(String),
    Group(String),
    PrefixList(String),
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Atom {
    pub protocol: String,
    pub from_port: Option<i32>,
    pub to_port: Option<i32>,
    pub source: Source,
}

/// Every atom of the described permissions.
pub fn atoms_of(permissions: &[IpPermission]) -> BTreeSet<Atom> {
    let mut atoms = BTreeSet::new();
    for p in permissions {
        let protocol = p.ip_protocol().unwrap_or("-1");
        // All protocols has no ports; some readers show -1 or 0 there, which must not make the
        // same rule look different from the one we ask for.
        let (from_port, to_port) = match protocol {
            "-1" => (None, None),
            _ => (p.from_port(), p.to_port()),
        };
        let atom = |source: Source| Atom {
            protocol: protocol.to_owned(),
            from_port,
            to_port,
            source,
        };
        atoms.extend(
            p.ip_ranges()
                .iter()
                .filter_map(|r| r.cidr_ip())
                .map(|c| atom(Source::Ipv4(c.to_owned()))),
        );
        atoms.extend(
            p.ipv6_ranges()
                .iter()
                .filter_map(|r| r.cidr_ipv6())
                .map(|c| atom(Source::Ipv6(c.to_owned()))),
        );
        atoms.extend(
            p.user_id_group_pairs()
                .iter()
                .filter_map(|g| g.group_id())
                .map(|g| atom(Source::Group(g.to_owned()))),
        );
        atoms.extend(
            p.prefix_list_ids()
                .iter()
                .filter_map(|l| l.prefix_list_id())
                .map(|l| atom(Source::PrefixList(l.to_owned()))),
        );
    }
    atoms
}

/// One permission for one atom, in the form revoke and authorize take.
pub fn permission_of(atom: &Atom) -> IpPermission {
    let builder = IpPermission::builder()
        .ip_protocol(&atom.protocol)
        .set_from_port(atom.from_port)
        .set_to_port(atom.to_port);
    match &atom.source {
        Source::Ipv4(cidr) => builder.ip_ranges(IpRange::builder().cidr_ip(cidr).build()),
        Source::Ipv6(cidr) => builder.ipv6_ranges(Ipv6Range::builder().cidr_ipv6(cidr).build()),
        Source::Group(id) => {
            builder.user_id_group_pairs(UserIdGroupPair::builder().group_id(id).build())
        }
        Source::PrefixList(id) => {
            builder.prefix_list_ids(PrefixListId::builder().prefix_list_id(id).build())
        }
    }
    .build()
}

/// The inbound atoms responder access allows: TCP on each port from each address range.
pub fn allowed_ingress(access: &ResponderAccess) -> BTreeSet<Atom> {
    let mut atoms = BTreeSet::new();
    for cidr in &access.cidrs {
        for port in &access.ports {
            let source = if cidr.contains(':') {
                Source::Ipv6(cidr.clone())
            } else {
                Source::Ipv4(cidr.clone())
            };
            atoms.insert(Atom {
                protocol: "tcp".to_owned(),
                from_port: Some(i32::from(*port)),
                to_port: Some(i32::from(*port)),
                source,
            });
        }
    }
    atoms
}

/// All protocols from or to every IPv4 and IPv6 address. Rules this open make EC2 stop tracking
/// the flows they allow, which is what the interim group is for.
pub fn allow_all() -> BTreeSet<Atom> {
    [
        Source::Ipv4("0.0.0.0/0".to_owned()),
        Source::Ipv6("::/0".to_owned()),
    ]
    .into_iter()
    .map(|source| Atom {
        protocol: "-1".to_owned(),
        from_port: None,
        to_port: None,
        source,
    })
    .collect()
}

/// The one rule AWS gives every new security group in a VPC: all traffic out to every IPv4
/// address (no inbound rule, and no IPv6 rule unless one is asked for).
pub fn default_egress() -> Atom {
    Atom {
        protocol: "-1".to_owned(),
        from_port: None,
        to_port: None,
        source: Source::Ipv4("0.0.0.0/0".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(cidrs: &[&str], ports: &[u16]) -> ResponderAccess {
        ResponderAccess {
            cidrs: cidrs.iter().map(|c| c.to_string()).collect(),
            ports: ports.to_vec(),
        }
    }

    #[test]
    fn a_grouped_permission_splits_into_one_atom_per_source() {
        let permission = IpPermission::builder()
            .ip_protocol("tcp")
            .from_port(22)
            .to_port(22)
            .ip_ranges(IpRange::builder().cidr_ip("203.0.113.0/24").build())
            .ip_ranges(IpRange::builder().cidr_ip("198.51.100.7/32").build())
            .ipv6_ranges(Ipv6Range::builder().cidr_ipv6("2001:db8::/32").build())
            .build();
        let atoms = atoms_of(&[permission]);
        assert_eq!(atoms.len(), 3);
        assert!(atoms
            .iter()
            .all(|a| a.protocol == "tcp" && a.from_port == Some(22)));
    }

    #[test]
    fn responder_access_allows_each_port_from_each_range_and_nothing_else() {
        let allowed = allowed_ingress(&access(&["203.0.113.0/24", "2001:db8::/32"], &[22, 3389]));
        assert_eq!(allowed.len(), 4);
        assert!(allowed.contains(&Atom {
            protocol: "tcp".into(),
            from_port: Some(3389),
            to_port: Some(3389),
            source: Source::Ipv6("2001:db8::/32".into()),
        }));
        assert!(allowed_ingress(&access(&[], &[22])).is_empty());
    }

    #[test]
    fn allow_all_survives_the_round_trip_whatever_ports_are_shown() {
        let shown = IpPermission::builder()
            .ip_protocol("-1")
            .from_port(-1)
            .to_port(-1)
            .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
            .ipv6_ranges(Ipv6Range::builder().cidr_ipv6("::/0").build())
            .build();
        assert_eq!(atoms_of(&[shown]), allow_all());
        let asked: Vec<IpPermission> = allow_all().iter().map(permission_of).collect();
        assert_eq!(atoms_of(&asked), allow_all());
    }

    #[test]
    fn an_atom_survives_the_round_trip_through_a_permission() {
        let atom = Atom {
            protocol: "tcp".into(),
            from_port: Some(22),
            to_port: Some(22),
            source: Source::Ipv4("203.0.113.0/24".into()),
        };
        assert_eq!(atoms_of(&[permission_of(&atom)]), BTreeSet::from([atom]));
    }
}
