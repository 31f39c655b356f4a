use ec2_quarantine::contain::network::{create_or_adopt, interim_name, IsolationGroups};
use ec2_quarantine::contain::rules::{allow_all, atoms_of};
use ec2_quarantine::report::{Status, Step};

use crate::containment::{contain, contain_with, trigger_event};
use crate::support::faults::{Faults, Gate};
use crate::support::scenario::{Options, Scenario};
use crate::support::{arranging_clients, recorded_clients, with_faults, CallLog, InterfaceChange};

fn two_interfaces() -> Options {
    Options {
        second_interface: true,
        ..Options::default()
    }
}

/// The VPC's interim group, which must be the only one of its name.
async fn interim_group(s: &Scenario) -> aws_sdk_ec2::types::SecurityGroup {
    let described = s
        .account
        .ec2
        .describe_security_groups()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("vpc-id")
                .values(&s.vpc_id)
                .build(),
        )
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("group-name")
                .values(interim_name(&s.isolation_group_name))
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(described.security_groups().len(), 1, "one interim group");
    described.security_groups()[0].clone()
}

#[tokio::test]
async fn each_interface_passes_through_the_interim_group_and_ends_on_the_isolation_group() {
    let s = Scenario::build(two_interfaces()).await;
    assert_eq!(s.interfaces.len(), 2);
    let (result, log) = contain(&s, trigger_event(&[&s.instance_id]), &[]).await;
    let report = result.expect("contained");
    let (isolation, _, _) = s.isolation_group().await;
    let interim = interim_group(&s).await;
    let interim_id = interim.group_id().unwrap().to_owned();

    // Exactly the four allow-all rules, tagged so that the function's role may use it.
    assert_eq!(atoms_of(interim.ip_permissions()), allow_all(), "ingress");
    assert_eq!(
        atoms_of(interim.ip_permissions_egress()),
        allow_all(),
        "egress"
    );
    assert!(interim
        .tags()
        .iter()
        .any(|t| t.key() == Some("ec2-quarantine:role") && t.value() == Some("interim")));

    let detail = &report.instances[0]
        .step(Step::MoveNetworkInterfaces)
        .unwrap()
        .detail;
    for eni in &s.interfaces {
        let mut changes = log.interface_changes(eni);
        assert_eq!(changes.len(), 3, "{eni}: {changes:?}");
        assert_eq!(
            changes.pop(),
            Some(InterfaceChange::Groups {
                eni: eni.clone(),
                groups: vec![isolation.clone()]
            }),
            "{eni}: the isolation group comes last"
        );
        // The timeouts and the interim move go out together, in either order, both before the
        // isolation move.
        for before in [
            InterfaceChange::ConnectionTracking {
                eni: eni.clone(),
                timeouts: (60, 60, 30),
            },
            InterfaceChange::Groups {
                eni: eni.clone(),
                groups: vec![interim_id.clone()],
            },
        ] {
            assert!(
                changes.contains(&before),
                "{eni}: {changes:?} lacks {before:?}"
            );
        }
        assert_eq!(
            s.account.interface_groups(eni).await,
            vec![isolation.clone()]
        );
        let sequence = format!("{eni}: conntrack 60/60/30, {interim_id} -> {isolation}");
        assert!(detail.contains(&sequence), "{detail}");
    }

    // A re-run finds both interfaces isolated and changes none of them.
    let (again, log) = contain(&s, trigger_event(&[&s.instance_id]), &[]).await;
    let report = again.expect("contained again");
    assert_eq!(
        report.instances[0]
            .step(Step::MoveNetworkInterfaces)
            .unwrap()
            .status,
        Status::Unchanged
    );
    assert_eq!(log.count("ModifyNetworkInterfaceAttribute"), 0);
}

#[tokio::test]
async fn without_cutting_tracked_connections_each_interface_gets_one_change_and_no_interim_group() {
    let s = Scenario::build(two_interfaces()).await;
    let (result, log) = contain(
        &s,
        trigger_event(&[&s.instance_id]),
        &[("CUT_TRACKED_CONNECTIONS", "false")],
    )
    .await;
    result.expect("contained");
    let (isolation, _, _) = s.isolation_group().await;
    assert!(s
        .account
        .groups_named(&s.vpc_id, &interim_name(&s.isolation_group_name))
        .await
        .is_empty());
    for eni in &s.interfaces {
        assert_eq!(
            log.interface_changes(eni),
            vec![InterfaceChange::Groups {
                eni: eni.clone(),
                groups: vec![isolation.clone()]
            }]
        );
    }
}

#[tokio::test]
async fn timeouts_the_instance_type_refuses_are_reported_and_the_cut_goes_on() {
    let s = Scenario::build(two_interfaces()).await;
    let faults = Faults::default();
    // What AWS answers for an instance type without configurable timeouts.
    faults.deny_when(
        "ModifyNetworkInterfaceAttribute",
        "ConnectionTrackingSpecification",
        "UnsupportedOperation",
    );
    let (result, log) = contain_with(
        &s,
        trigger_event(&[&s.instance_id]),
        &[],
        &with_faults(&s.account.sdk, &faults),
    )
    .await;
    let report = result.expect("contained");
    let step = report.instances[0]
        .step(Step::MoveNetworkInterfaces)
        .unwrap();
    assert_eq!(step.status, Status::Done);
    assert!(
        step.detail.contains("conntrack timeouts not shortened"),
        "{}",
        step.detail
    );
    assert!(
        step.detail.contains("UnsupportedOperation"),
        "{}",
        step.detail
    );
    let (isolation, _, _) = s.isolation_group().await;
    let interim = interim_group(&s).await.group_id().unwrap().to_owned();
    for eni in &s.interfaces {
        assert_eq!(
            log.group_changes(eni),
            vec![vec![interim.clone()], vec![isolation.clone()]]
        );
        assert_eq!(
            s.account.interface_groups(eni).await,
            vec![isolation.clone()]
        );
    }
}

#[tokio::test]
async fn without_an_interim_group_the_cut_goes_straight_to_isolation_and_says_what_may_survive() {
    let s = Scenario::build(two_interfaces()).await;
    // The isolation group exists; the interim group cannot be created.
    let group = create_or_adopt(
        &arranging_clients(&s.account.sdk),
        &s.isolation_group_name,
        &s.vpc_id,
    )
    .await
    .unwrap();
    let isolation = group.group_id().unwrap().to_owned();
    let faults = Faults::default();
    faults.deny("CreateSecurityGroup", "UnauthorizedOperation");
    let (result, log) = contain_with(
        &s,
        trigger_event(&[&s.instance_id]),
        &[],
        &with_faults(&s.account.sdk, &faults),
    )
    .await;
    let report = result.expect("contained");
    let step = report.instances[0]
        .step(Step::MoveNetworkInterfaces)
        .unwrap();
    assert_eq!(step.status, Status::Done);
    assert!(
        step.detail.contains("tracked connections may survive"),
        "{}",
        step.detail
    );
    for eni in &s.interfaces {
        assert_eq!(log.group_changes(eni), vec![vec![isolation.clone()]]);
        assert_eq!(
            s.account.interface_groups(eni).await,
            vec![isolation.clone()]
        );
    }
}

#[tokio::test]
async fn interfaces_in_two_vpcs_each_end_on_their_own_vpcs_group() {
    let s = Scenario::build(Options {
        interface_in_other_vpc: true,
        ..Options::default()
    })
    .await;
    let (result, _) = contain(&s, trigger_event(&[&s.instance_id]), &[]).await;
    result.expect("contained");
    let other_vpc = s.other_vpc_id.as_deref().unwrap();
    let (home_group, _, _) = s.isolation_group().await;
    let other = s
        .account
        .groups_named(other_vpc, &s.isolation_group_name)
        .await;
    assert_eq!(other.len(), 1, "one isolation group in the second VPC");
    assert_ne!(other[0].0, home_group);
    assert_eq!(
        s.account.interface_groups(&s.interfaces[0]).await,
        vec![home_group]
    );
    assert_eq!(
        s.account.interface_groups(&s.interfaces[1]).await,
        vec![other[0].0.clone()]
    );
}

#[tokio::test]
async fn a_later_containment_in_the_same_vpc_reuses_the_group_and_strips_rules_added_to_it() {
    let first = Scenario::build(Options::default()).await;
    contain(&first, trigger_event(&[&first.instance_id]), &[])
        .await
        .0
        .unwrap();
    let (group_id, _, _) = first.isolation_group().await;

    // Someone opens the group; a second instance in the same VPC is quarantined.
    first
        .account
        .ec2
        .authorize_security_group_ingress()
        .group_id(&group_id)
        .ip_protocol("tcp")
        .from_port(22)
        .to_port(22)
        .cidr_ip("0.0.0.0/0")
        .send()
        .await
        .unwrap();
    let second = first
        .account
        .ec2
        .run_instances()
        .image_id("ami-0123456789abcdef0")
        .min_count(1)
        .max_count(1)
        .subnet_id(&first.subnet_id)
        .send()
        .await
        .unwrap()
        .instances()[0]
        .instance_id()
        .unwrap()
        .to_owned();
    let (result, _) = contain(&first, trigger_event(&[&second]), &[]).await;
    let report = result.expect("contained");
    let step = report.instances[0].step(Step::IsolationGroup).unwrap();
    assert_eq!(step.status, Status::Done);
    assert!(step.detail.contains("removed 1 "), "{}", step.detail);

    let (same_group, ingress, egress) = first.isolation_group().await;
    assert_eq!(same_group, group_id, "the group is reused");
    assert_eq!((ingress, egress), (0, 0), "the added rule is gone");
    let eni = first.account.instance(&second).await.network_interfaces()[0]
        .network_interface_id()
        .unwrap()
        .to_owned();
    assert_eq!(first.account.interface_groups(&eni).await, vec![group_id]);
}

#[tokio::test]
async fn a_create_that_loses_the_race_adopts_the_winners_group() {
    let s = Scenario::build(Options::default()).await;
    let log = CallLog::default();
    let clients = recorded_clients(&s.account.sdk, &log);
    // The winner: another invocation created the group after ours looked and found none.
    let winner = create_or_adopt(&clients, &s.isolation_group_name, &s.vpc_id)
        .await
        .unwrap();
    let ours = create_or_adopt(&clients, &s.isolation_group_name, &s.vpc_id)
        .await
        .unwrap();
    assert_eq!(ours.group_id(), winner.group_id());
    assert_eq!(
        log.count("CreateSecurityGroup"),
        2,
        "the second create was really attempted"
    );
    assert_eq!(
        s.account
            .groups_named(&s.vpc_id, &s.isolation_group_name)
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn concurrent_invocations_in_one_vpc_end_with_exactly_one_group() {
    let s = Scenario::build(Options::default()).await;
    let clients = recorded_clients(&s.account.sdk, &CallLog::default());
    // Eight invocations, each with its own view of the VPC, racing to ensure the group.
    let invocations: Vec<IsolationGroups> = (0..8)
        .map(|_| IsolationGroups::new(&s.isolation_group_name, &Default::default()))
        .collect();
    let results =
        futures::future::join_all(invocations.iter().map(|g| g.ensure(&clients, &s.vpc_id))).await;
    let ids: Vec<String> = results
        .into_iter()
        .map(|r| r.expect("every invocation gets the group").group_id)
        .collect();
    let (group_id, ingress, egress) = s.isolation_group().await;
    assert!(ids.iter().all(|id| *id == group_id), "{ids:?}");
    assert_eq!((ingress, egress), (0, 0));
}

#[tokio::test]
async fn a_hand_made_group_of_that_name_is_left_alone_and_ours_is_created_beside_it() {
    let s = Scenario::build(Options::default()).await;
    // Made by someone else: no role tag, and the default allow-all egress rule. The function may
    // tag a group only as it creates it, so this one can never be its isolation group.
    let by_hand = s
        .account
        .ec2
        .create_security_group()
        .group_name(&s.isolation_group_name)
        .description("made by hand")
        .vpc_id(&s.vpc_id)
        .send()
        .await
        .unwrap()
        .group_id()
        .unwrap()
        .to_owned();
    let (result, _) = contain(&s, trigger_event(&[&s.instance_id]), &[]).await;
    result.expect("contained");
    let vpc_named = format!("{}-{}", s.isolation_group_name, s.vpc_id);
    let groups = s.account.groups_named(&s.vpc_id, &vpc_named).await;
    let [(ours, ingress, egress)] = groups.as_slice() else {
        panic!("exactly one group {vpc_named}: {groups:?}");
    };
    assert_eq!((*ingress, *egress), (0, 0));
    for eni in &s.interfaces {
        assert_eq!(s.account.interface_groups(eni).await, vec![ours.clone()]);
    }
    let tags = |id: &str| {
        let id = id.to_owned();
        let ec2 = s.account.ec2.clone();
        async move {
            ec2.describe_tags()
                .filters(
                    aws_sdk_ec2::types::Filter::builder()
                        .name("resource-id")
                        .values(id)
                        .build(),
                )
                .send()
                .await
                .unwrap()
                .tags()
                .iter()
                .map(|t| (t.key().unwrap().to_owned(), t.value().unwrap().to_owned()))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        tags(ours).await,
        vec![("ec2-quarantine:role".to_owned(), "isolation".to_owned())]
    );
    // The hand-made group is as it was: untagged, its rules untouched.
    assert_eq!(tags(&by_hand).await, vec![]);
    let untouched = s
        .account
        .groups_named(&s.vpc_id, &s.isolation_group_name)
        .await;
    assert_eq!(untouched, vec![(by_hand.clone(), 0, 1)]);
}

#[tokio::test]
async fn responder_access_is_the_isolation_groups_only_rule_and_nothing_else_survives() {
    let s = Scenario::build(Options::default()).await;
    // A group someone opened wider than the responders' access.
    let group = create_or_adopt(
        &arranging_clients(&s.account.sdk),
        &s.isolation_group_name,
        &s.vpc_id,
    )
    .await
    .unwrap();
    let group_id = group.group_id().unwrap().to_owned();
    s.account
        .ec2
        .authorize_security_group_ingress()
        .group_id(&group_id)
        .ip_protocol("tcp")
        .from_port(22)
        .to_port(22)
        .cidr_ip("0.0.0.0/0")
        .send()
        .await
        .unwrap();
    let responders = [
        ("FORENSIC_INGRESS_CIDRS", "203.0.113.0/24,2001:db8::/32"),
        ("FORENSIC_INGRESS_PORTS", "22,3389"),
    ];
    let (result, _) = contain(&s, trigger_event(&[&s.instance_id]), &responders).await;
    result.expect("contained");

    let described = s
        .account
        .ec2
        .describe_security_groups()
        .group_ids(&group_id)
        .send()
        .await
        .unwrap();
    let group = &described.security_groups()[0];
    assert!(group.ip_permissions_egress().is_empty(), "no outbound rule");
    let mut inbound: Vec<(i32, String)> = Vec::new();
    for p in group.ip_permissions() {
        assert_eq!(p.ip_protocol(), Some("tcp"));
        assert_eq!(p.from_port(), p.to_port());
        for r in p.ip_ranges() {
            inbound.push((p.from_port().unwrap(), r.cidr_ip().unwrap().to_owned()));
        }
        for r in p.ipv6_ranges() {
            inbound.push((p.from_port().unwrap(), r.cidr_ipv6().unwrap().to_owned()));
        }
    }
    inbound.sort();
    assert_eq!(
        inbound,
        vec![
            (22, "2001:db8::/32".to_owned()),
            (22, "203.0.113.0/24".to_owned()),
            (3389, "2001:db8::/32".to_owned()),
            (3389, "203.0.113.0/24".to_owned()),
        ],
        "exactly the responder access, and the 0.0.0.0/0 rule is gone"
    );

    // A second containment in the VPC finds the group as it should be and changes nothing.
    let (again, _) = contain(&s, trigger_event(&[&s.instance_id]), &responders).await;
    let report = again.expect("contained");
    assert_eq!(
        report.instances[0]
            .step(Step::IsolationGroup)
            .unwrap()
            .status,
        Status::Unchanged
    );
}

#[tokio::test]
async fn an_interface_a_concurrent_run_left_on_the_interim_group_is_moved_on_to_isolation() {
    let s = Scenario::build(Options::default()).await;
    let eni = s.interfaces[0].clone();
    // Our read-back waits at the gate while another delivery of the same event, one round trip
    // behind ours, puts the interface on the interim group after our isolation move.
    let gate = Gate::default();
    let faults = Faults::default();
    // The read-back names the interface; round trip 1 reads by the instance (a filter).
    faults.hold_when("DescribeNetworkInterfaces", "NetworkInterfaceId.1=", &gate);
    let held = with_faults(&s.account.sdk, &faults);
    let ours = contain_with(&s, trigger_event(&[&s.instance_id]), &[], &held);
    let theirs = async {
        gate.arrived().await;
        let interim = interim_group(&s).await.group_id().unwrap().to_owned();
        s.account
            .ec2
            .modify_network_interface_attribute()
            .network_interface_id(&eni)
            .groups(&interim)
            .send()
            .await
            .unwrap();
        gate.open();
    };
    let ((result, log), ()) = tokio::join!(ours, theirs);
    result.expect("contained");
    let (isolation, _, _) = s.isolation_group().await;
    let changes = log.group_changes(&eni);
    assert_eq!(
        changes.last(),
        Some(&vec![isolation.clone()]),
        "moved on again: {changes:?}"
    );
    assert_eq!(
        changes
            .iter()
            .filter(|g| **g == [isolation.clone()])
            .count(),
        2,
        "{changes:?}"
    );
    assert_eq!(s.account.interface_groups(&eni).await, vec![isolation]);
}
