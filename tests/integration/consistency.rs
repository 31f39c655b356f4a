//! AWS's eventual consistency, which the emulator lacks: new ids unknown for seconds, attributes
//! read back stale. The function waits them out; and when an interface cannot leave the
//! allow-all interim group, it closes that group instead of leaving the door open.

use std::time::Duration;

use aws_sdk_ec2::types::InstanceAttributeName;
use ec2_quarantine::contain::network::{create_or_adopt, interim_name};
use ec2_quarantine::report::Outcome;

use crate::containment::{contain_as, contain_with, trigger_event};
use crate::support::aws_like::Behaviour;
use crate::support::faults::Faults;
use crate::support::scenario::{Options, Scenario};
use crate::support::{arranging_clients, with_faults};

#[tokio::test]
async fn the_first_containment_in_a_new_vpc_succeeds_on_its_first_delivery_with_two_seconds_of_lag()
{
    let s = Scenario::build(Options {
        second_interface: true,
        profile: true,
        ..Options::default()
    })
    .await;
    let (result, _) = contain_as(
        &s,
        trigger_event(&[&s.instance_id]),
        &[],
        &s.account.sdk,
        Behaviour::with_lag(Duration::from_secs(2)),
    )
    .await;
    let report = result.expect("the first delivery succeeds");
    assert_eq!(report.outcome, Outcome::Contained);

    // Exactly one isolation group, with no rule at all (its default egress rule is gone).
    let (isolation, ingress, egress) = s.isolation_group().await;
    assert_eq!((ingress, egress), (0, 0), "the isolation group has no rule");
    for eni in &s.interfaces {
        assert_eq!(
            s.account.interface_groups(eni).await,
            vec![isolation.clone()]
        );
    }
    assert_eq!(
        s.account
            .profile_of(&s.instance_id)
            .await
            .map(|arn| arn.contains(&s.isolation_profile.1)),
        Some(true),
        "the isolation profile is associated"
    );
    for (name, wanted) in [
        (InstanceAttributeName::DisableApiTermination, "true"),
        (InstanceAttributeName::DisableApiStop, "true"),
        (
            InstanceAttributeName::InstanceInitiatedShutdownBehavior,
            "stop",
        ),
    ] {
        assert_eq!(
            s.account.attribute(&s.instance_id, name.clone()).await,
            wanted,
            "{name:?}"
        );
    }
    // Exactly one snapshot set: one snapshot per volume.
    let snapshots = s.account.snapshots_of(&s.instance_id).await;
    let mut volumes: Vec<String> = snapshots.iter().map(|(_, v)| v.clone()).collect();
    volumes.sort();
    let mut expected = s.volumes.clone();
    expected.sort();
    assert_eq!(
        volumes, expected,
        "one snapshot of each volume: {snapshots:?}"
    );
}

/// The scenario's isolation group, made beforehand, and faults under which every move onto it
/// fails (an interface then stays on the interim group).
async fn no_move_onto_isolation(s: &Scenario) -> (String, Faults) {
    // The emulator ignores IPv6 ranges when it revokes an outbound rule in a VPC without an
    // IPv6 block (AWS does not); the interim group's `::/0` rule must go too.
    s.account
        .ec2
        .associate_vpc_cidr_block()
        .vpc_id(&s.vpc_id)
        .amazon_provided_ipv6_cidr_block(true)
        .send()
        .await
        .unwrap();
    let isolation = create_or_adopt(
        &arranging_clients(&s.account.sdk),
        &s.isolation_group_name,
        &s.vpc_id,
    )
    .await
    .unwrap()
    .group_id()
    .unwrap()
    .to_owned();
    let faults = Faults::default();
    let onto_isolation: &'static str =
        Box::leak(format!("SecurityGroupId.1={isolation}").into_boxed_str());
    faults.deny_when(
        "ModifyNetworkInterfaceAttribute",
        onto_isolation,
        "UnauthorizedOperation",
    );
    (isolation, faults)
}

#[tokio::test]
async fn an_interface_that_cannot_leave_the_interim_group_is_closed_there_and_reported() {
    let s = Scenario::build(Options {
        second_interface: true,
        ..Options::default()
    })
    .await;
    let (_, faults) = no_move_onto_isolation(&s).await;
    let (result, _) = contain_with(
        &s,
        trigger_event(&[&s.instance_id]),
        &[],
        &with_faults(&s.account.sdk, &faults),
    )
    .await;
    let error = result.expect_err("the invocation fails, so that it is retried");

    // Every interface sits on the interim group, and that group now lets nothing in or out.
    let interim = s
        .account
        .groups_named(&s.vpc_id, &interim_name(&s.isolation_group_name))
        .await;
    let [(interim_id, ingress, egress)] = interim.as_slice() else {
        panic!("exactly one interim group: {interim:?}");
    };
    assert_eq!((*ingress, *egress), (0, 0), "the interim group was closed");
    for eni in &s.interfaces {
        assert_eq!(
            s.account.interface_groups(eni).await,
            vec![interim_id.clone()]
        );
    }
    // The report says what happened, and does not call the instance contained.
    let report: serde_json::Value = serde_json::from_str(&error).expect("the report as the error");
    let instance = &report["instances"][0];
    assert_eq!(instance["outcome"], "not_contained");
    let moved = instance["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|step| step["step"] == "move-network-interfaces")
        .unwrap();
    assert_eq!(moved["status"], "failed");
    let detail = moved["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("left on the interim group {interim_id}"))
            && detail.contains(&format!("the rules of {interim_id} were revoked")),
        "{detail}"
    );
}

/// The layer itself: what it reads ids from, and what it leaves out of a listing.
mod layer {
    use crate::support::aws_like::{ids_in, strip_items};

    #[test]
    fn ids_are_found_in_form_values_and_xml() {
        assert_eq!(
            ids_in("GroupId=sg-0123456789abcdef0&x=i-abc"),
            vec!["sg-0123456789abcdef0".to_owned()]
        );
        assert_eq!(
            ids_in("<groupId>sg-12345678</groupId><snapshotId>snap-1234abcd</snapshotId>"),
            vec!["sg-12345678".to_owned(), "snap-1234abcd".to_owned()]
        );
    }

    #[test]
    fn a_hidden_group_is_stripped_from_a_listing_with_its_nested_items() {
        let xml = "<R><securityGroupInfo><item><groupId>sg-11111111</groupId><ipPermissions><item>a</item></ipPermissions></item>\
                   <item><groupId>sg-22222222</groupId></item></securityGroupInfo></R>";
        let stripped = strip_items(xml, "securityGroupInfo", &["sg-11111111".to_owned()]);
        assert_eq!(
            stripped,
            "<R><securityGroupInfo><item><groupId>sg-22222222</groupId></item></securityGroupInfo></R>"
        );
    }
}

#[tokio::test]
async fn an_interface_left_on_a_closed_interim_group_moves_to_isolation_before_the_group_reopens() {
    let (s, ids) = Scenario::fleet(2).await;
    let (isolation, faults) = no_move_onto_isolation(&s).await;
    let eni_of = |id: String| {
        let account = &s.account;
        async move {
            account.instance(&id).await.network_interfaces()[0]
                .network_interface_id()
                .unwrap()
                .to_owned()
        }
    };
    let (first, second) = (eni_of(ids[0].clone()).await, eni_of(ids[1].clone()).await);

    // The first instance's move onto isolation fails: it is left on the interim group, closed.
    let (result, _) = contain_with(
        &s,
        trigger_event(&[&ids[0]]),
        &[],
        &with_faults(&s.account.sdk, &faults),
    )
    .await;
    result.expect_err("the first containment fails");
    let interim = interim_name(&s.isolation_group_name);
    let groups = s.account.groups_named(&s.vpc_id, &interim).await;
    let [(interim_id, 0, 0)] = groups.as_slice() else {
        panic!("the interim group is closed: {groups:?}");
    };
    assert_eq!(
        s.account.interface_groups(&first).await,
        vec![interim_id.clone()]
    );

    // The next containment in the VPC needs the interim group open again: it first moves the
    // stranded interface onto isolation.
    let (result, _) = contain_as(
        &s,
        trigger_event(&[&ids[1]]),
        &[],
        &s.account.sdk,
        Behaviour::default(),
    )
    .await;
    result.expect("the second containment succeeds");
    assert_eq!(
        s.account.interface_groups(&first).await,
        vec![isolation.clone()]
    );
    assert_eq!(
        s.account.interface_groups(&second).await,
        vec![isolation.clone()]
    );
}
