//! The network cut, planned: the isolation group (and the interim group, with
//! `CUT_TRACKED_CONNECTIONS`) looked up by its candidate names in each VPC of the instance (only
//! a group tagged with its role is ours), and what a real run would create or change on them;
//! then each interface's moves.
//!
//! IAM: `ec2:DescribeSecurityGroups`.
//!
//! The rules are compared atom by atom with [`rules`], as the real step does. A group that does
//! not exist yet is planned from the rules EC2 gives a new group: none in, all IPv4 out.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use aws_sdk_ec2::types::{Filter, SecurityGroup};

use super::{change, report, Plan};
use crate::aws::{AwsError, Clients};
use crate::config::Config;
use crate::contain::instance::InstanceFacts;
use crate::contain::network::{candidate_names, describe_groups, interim_name, ours, tagged_in};
use crate::contain::rules::{self, Atom, Source};
use crate::contain::tags;
use crate::report::{PlannedChange, Step, StepReport};

/// Idle timeouts a real run sets before the interim group: see `network::CONNTRACK_TIMEOUTS`.
const CONNTRACK: &str = "60/60/30";

struct Kind {
    name: String,
    role: &'static str,
    ingress: BTreeSet<Atom>,
    egress: BTreeSet<Atom>,
}

/// A group as the moves refer to it: its id, or its name while a real run would still create it.
#[derive(Clone)]
enum GroupRef {
    Existing(String),
    New { name: String, vpc_id: String },
}

impl std::fmt::Display for GroupRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Existing(id) => f.write_str(id),
            Self::New { name, vpc_id } => write!(f, "{name} (new, in {vpc_id})"),
        }
    }
}

/// `(isolation-group, move-network-interfaces)`.
pub(super) async fn plan(
    clients: &Clients,
    config: &Config,
    facts: &InstanceFacts,
) -> (StepReport, StepReport) {
    let started = Instant::now();
    let mut vpcs: Vec<&str> = facts.interfaces.iter().map(|i| i.vpc_id.as_str()).collect();
    vpcs.sort_unstable();
    vpcs.dedup();
    if vpcs.is_empty() {
        let none = || Ok(Plan::skipped("the instance has no network interface"));
        return (
            report(Step::IsolationGroup, started, none()),
            report(Step::MoveNetworkInterfaces, started, none()),
        );
    }
    let mut kinds = vec![Kind {
        name: config.isolation_group_name.clone(),
        role: tags::ROLE_ISOLATION,
        ingress: rules::allowed_ingress(&config.responder_access),
        egress: BTreeSet::new(),
    }];
    if config.cut_tracked_connections {
        kinds.push(Kind {
            name: interim_name(&config.isolation_group_name),
            role: tags::ROLE_INTERIM,
            ingress: rules::allow_all(),
            egress: rules::allow_all(),
        });
    }
    let found = match lookup(clients, &kinds, &vpcs).await {
        Ok(found) => found,
        Err(e) => {
            return (
                report(Step::IsolationGroup, started, Err(e.clone())),
                report(Step::MoveNetworkInterfaces, started, Err(e)),
            )
        }
    };

    let mut changes = Vec::new();
    let mut unchanged = Vec::new();
    // (vpc, role) -> the group the moves use.
    let mut refs: BTreeMap<(&str, &str), GroupRef> = BTreeMap::new();
    for vpc_id in &vpcs {
        for kind in &kinds {
            let (group_ref, mut planned) = plan_group(kind, vpc_id, &found);
            if planned.is_empty() {
                unchanged.push(match kind.role {
                    tags::ROLE_INTERIM => {
                        format!(
                            "interim {group_ref} in {vpc_id} has only allow-all rules in and out"
                        )
                    }
                    _ => format!("{group_ref} in {vpc_id} has {}", rules_text(kind)),
                });
            }
            changes.append(&mut planned);
            refs.insert((vpc_id, kind.role), group_ref);
        }
    }
    let groups = report(
        Step::IsolationGroup,
        started,
        Ok(Plan::changes(changes, unchanged.join("; "))),
    );

    let moves_started = Instant::now();
    let mut moves = Vec::new();
    let mut in_place = Vec::new();
    for eni in &facts.interfaces {
        let Some(isolation) = refs.get(&(eni.vpc_id.as_str(), tags::ROLE_ISOLATION)) else {
            continue;
        };
        if matches!(isolation, GroupRef::Existing(id) if eni.groups == [id.as_str()]) {
            in_place.push(eni.id.as_str());
            continue;
        }
        let from = if eni.groups.is_empty() {
            "no group".to_owned()
        } else {
            eni.groups.join(", ")
        };
        match refs.get(&(eni.vpc_id.as_str(), tags::ROLE_INTERIM)) {
            Some(interim) => {
                moves.push(change(
                    "ModifyNetworkInterfaceAttribute",
                    &eni.id,
                    format!(
                        "would shorten the connection tracking timeouts of {} to {CONNTRACK} s",
                        eni.id
                    ),
                ));
                moves.push(change(
                    "ModifyNetworkInterfaceAttribute",
                    &eni.id,
                    format!(
                        "would move {} from {from} to the interim group {interim} (allow-all, \
                         to untrack open connections)",
                        eni.id
                    ),
                ));
                moves.push(change(
                    "ModifyNetworkInterfaceAttribute",
                    &eni.id,
                    format!(
                        "would move {} from {interim} to the isolation group {isolation}",
                        eni.id
                    ),
                ));
            }
            None => moves.push(change(
                "ModifyNetworkInterfaceAttribute",
                &eni.id,
                format!(
                    "would move {} from {from} to the isolation group {isolation}",
                    eni.id
                ),
            )),
        }
    }
    let interfaces = report(
        Step::MoveNetworkInterfaces,
        moves_started,
        Ok(Plan::changes(
            moves,
            format!("{} already on the isolation group", in_place.join(", ")),
        )),
    );
    (groups, interfaces)
}

/// The groups that decide the plan in every VPC of the instance: ours by their role tag, and
/// any group under a candidate name (one made by someone else is passed over).
async fn lookup(
    clients: &Clients,
    kinds: &[Kind],
    vpcs: &[&str],
) -> Result<Vec<SecurityGroup>, AwsError> {
    let names: BTreeSet<String> = kinds
        .iter()
        .flat_map(|k| vpcs.iter().flat_map(|vpc| candidate_names(&k.name, vpc)))
        .collect();
    let by_name = vec![
        Filter::builder()
            .name("group-name")
            .set_values(Some(names.into_iter().collect()))
            .build(),
        Filter::builder()
            .name("vpc-id")
            .set_values(Some(vpcs.iter().map(|v| v.to_string()).collect()))
            .build(),
    ];
    let mut found = describe_groups(clients, by_name).await?;
    for kind in kinds {
        for vpc in vpcs {
            for group in describe_groups(clients, tagged_in(kind.role, vpc)).await? {
                if !found.iter().any(|g| g.group_id() == group.group_id()) {
                    found.push(group);
                }
            }
        }
    }
    Ok(found)
}

/// What a real run would do to one group: use ours (the first candidate name held by a group
/// tagged with the role), or create it under the first name nobody holds; and bring its rules
/// to `kind`'s.
fn plan_group(
    kind: &Kind,
    vpc_id: &str,
    found: &[SecurityGroup],
) -> (GroupRef, Vec<PlannedChange>) {
    let mut changes = Vec::new();
    let candidates = candidate_names(&kind.name, vpc_id);
    let held = |name: &String| {
        found
            .iter()
            .find(|g| g.vpc_id() == Some(vpc_id) && g.group_name() == Some(name.as_str()))
    };
    let (group_ref, has_in, has_out) = match ours(found, &kind.name, kind.role, vpc_id) {
        None => {
            let squatters: Vec<String> = candidates
                .iter()
                .filter_map(|name| {
                    let id = held(name)?.group_id().unwrap_or_default();
                    Some(format!(
                        "{name} is held by {id}, which ec2-quarantine did not create"
                    ))
                })
                .collect();
            let name = candidates
                .iter()
                .find(|name| held(name).is_none())
                .cloned()
                .unwrap_or_else(|| format!("{}-{vpc_id}-<8 random hex digits>", kind.name));
            let mut detail = format!(
                "would create the {} group {name} in {vpc_id}, tagged {}={}",
                kind.role,
                tags::ROLE,
                kind.role
            );
            if !squatters.is_empty() {
                detail = format!("{detail} ({})", squatters.join("; "));
            }
            changes.push(change(
                "CreateSecurityGroup",
                format!("{name} in {vpc_id}"),
                detail,
            ));
            let group_ref = GroupRef::New {
                name,
                vpc_id: vpc_id.to_owned(),
            };
            (group_ref, BTreeSet::new(), new_group_egress())
        }
        Some(group) => {
            let id = group.group_id().unwrap_or_default().to_owned();
            (
                GroupRef::Existing(id),
                rules::atoms_of(group.ip_permissions()),
                rules::atoms_of(group.ip_permissions_egress()),
            )
        }
    };
    let target = group_ref.to_string();
    let diff = [
        (
            "RevokeSecurityGroupIngress",
            "remove inbound",
            has_in.difference(&kind.ingress).collect::<Vec<_>>(),
        ),
        (
            "RevokeSecurityGroupEgress",
            "remove outbound",
            has_out.difference(&kind.egress).collect(),
        ),
        (
            "AuthorizeSecurityGroupIngress",
            "add inbound",
            kind.ingress.difference(&has_in).collect(),
        ),
        (
            "AuthorizeSecurityGroupEgress",
            "add outbound",
            kind.egress.difference(&has_out).collect(),
        ),
    ];
    for (action, verb, atoms) in diff {
        if atoms.is_empty() {
            continue;
        }
        let atoms: Vec<String> = atoms.into_iter().map(atom_text).collect();
        changes.push(change(
            action,
            &target,
            format!("would {verb} {} on {target}", atoms.join(", ")),
        ));
    }
    (group_ref, changes)
}

/// The rule EC2 gives a new VPC security group: all traffic out to every IPv4 address.
fn new_group_egress() -> BTreeSet<Atom> {
    BTreeSet::from([Atom {
        protocol: "-1".to_owned(),
        from_port: None,
        to_port: None,
        source: Source::Ipv4("0.0.0.0/0".to_owned()),
    }])
}

fn rules_text(kind: &Kind) -> String {
    match kind.ingress.len() {
        0 => "no rules".to_owned(),
        n => format!("only {n} responder ingress rule(s)"),
    }
}

/// `tcp 22 203.0.113.0/24`, `all traffic 0.0.0.0/0`.
fn atom_text(atom: &Atom) -> String {
    let what = match (atom.protocol.as_str(), atom.from_port, atom.to_port) {
        ("-1", _, _) => "all traffic".to_owned(),
        (p, Some(from), Some(to)) if from == to => format!("{p} {from}"),
        (p, Some(from), Some(to)) => format!("{p} {from}-{to}"),
        (p, _, _) => p.to_owned(),
    };
    let peer = match &atom.source {
        Source::Ipv4(c) | Source::Ipv6(c) | Source::Group(c) | Source::PrefixList(c) => c,
    };
    format!("{what} {peer}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn isolation(ingress: BTreeSet<Atom>) -> Kind {
        Kind {
            name: "iso".into(),
            role: tags::ROLE_ISOLATION,
            ingress,
            egress: BTreeSet::new(),
        }
    }

    fn found(groups: &[(&str, SecurityGroup)]) -> Vec<SecurityGroup> {
        groups
            .iter()
            .map(|(name, g)| {
                let mut g = g.clone();
                g.group_name = Some(name.to_string());
                g.vpc_id = Some("vpc-1".to_owned());
                g
            })
            .collect()
    }

    fn tagged(group: aws_sdk_ec2::types::builders::SecurityGroupBuilder) -> SecurityGroup {
        group
            .tags(
                aws_sdk_ec2::types::Tag::builder()
                    .key(tags::ROLE)
                    .value(tags::ROLE_ISOLATION)
                    .build(),
            )
            .build()
    }

    #[test]
    fn a_missing_group_is_created_and_loses_the_default_outbound_rule() {
        let (group_ref, changes) = plan_group(&isolation(BTreeSet::new()), "vpc-1", &[]);
        assert_eq!(group_ref.to_string(), "iso (new, in vpc-1)");
        let actions: Vec<&str> = changes.iter().map(|c| c.action.as_str()).collect();
        assert_eq!(
            actions,
            ["CreateSecurityGroup", "RevokeSecurityGroupEgress"]
        );
        assert_eq!(changes[0].target, "iso in vpc-1");
        assert!(
            changes[1].detail.contains("all traffic 0.0.0.0/0"),
            "{changes:?}"
        );
    }

    #[test]
    fn an_existing_group_with_exactly_its_rules_and_tag_needs_nothing() {
        let responders = crate::config::ResponderAccess {
            cidrs: vec!["203.0.113.0/24".into()],
            ports: vec![22],
        };
        let ingress = rules::allowed_ingress(&responders);
        let group = tagged(
            SecurityGroup::builder()
                .group_id("sg-1")
                .set_ip_permissions(Some(ingress.iter().map(rules::permission_of).collect())),
        );
        let (_, changes) = plan_group(&isolation(ingress), "vpc-1", &found(&[("iso", group)]));
        assert_eq!(changes, vec![]);
    }

    #[test]
    fn a_group_of_that_name_made_by_someone_else_is_passed_over_for_the_vpc_named_one() {
        let untagged = SecurityGroup::builder().group_id("sg-2").build();
        let (group_ref, changes) = plan_group(
            &isolation(BTreeSet::new()),
            "vpc-1",
            &found(&[("iso", untagged.clone())]),
        );
        assert_eq!(group_ref.to_string(), "iso-vpc-1 (new, in vpc-1)");
        assert_eq!(
            (changes[0].action.as_str(), changes[0].target.as_str()),
            ("CreateSecurityGroup", "iso-vpc-1 in vpc-1")
        );
        assert!(
            changes[0].detail.contains("iso is held by sg-2"),
            "{changes:?}"
        );
        // Once created, the VPC-named group is ours and is used as it is.
        let ours = tagged(SecurityGroup::builder().group_id("sg-3"));
        let (group_ref, changes) = plan_group(
            &isolation(BTreeSet::new()),
            "vpc-1",
            &found(&[("iso", untagged), ("iso-vpc-1", ours)]),
        );
        assert_eq!(group_ref.to_string(), "sg-3");
        assert_eq!(changes, vec![]);
    }

    #[test]
    fn rules_read_as_protocol_port_and_peer() {
        let atom = |protocol: &str, from, to| Atom {
            protocol: protocol.into(),
            from_port: from,
            to_port: to,
            source: Source::Ipv6("::/0".into()),
        };
        assert_eq!(atom_text(&atom("tcp", Some(22), Some(22))), "tcp 22 ::/0");
        assert_eq!(atom_text(&atom("udp", Some(1), Some(9))), "udp 1-9 ::/0");
        assert_eq!(atom_text(&atom("-1", None, None)), "all traffic ::/0");
    }
}
