use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use ec2_quarantine::report::{Status, Step};
use futures::future::join_all;
use serde_json::Value;

use crate::containment::{contain, contain_with, trigger_event};
use crate::support::faults::{Faults, Gate};
use crate::support::scenario::{Options, Scenario};
use crate::support::{with_faults, INCIDENT_TABLE};

/// The incident record as DynamoDB holds it.
pub async fn record(s: &Scenario, instance_id: &str) -> HashMap<String, AttributeValue> {
    s.account
        .dynamodb
        .get_item()
        .table_name(INCIDENT_TABLE)
        .key("instance_id", AttributeValue::S(instance_id.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item()
        .cloned()
        .unwrap_or_else(|| panic!("no incident record for {instance_id}"))
}

fn json_attr(item: &HashMap<String, AttributeValue>, name: &str) -> Value {
    serde_json::from_str(item[name].as_s().unwrap()).unwrap()
}

#[tokio::test]
async fn the_record_holds_the_original_state_before_any_change_and_a_rerun_keeps_it() {
    let s = Scenario::build(Options::everything()).await;
    contain(&s, trigger_event(&[&s.instance_id]), &[])
        .await
        .0
        .unwrap();
    let item = record(&s, &s.instance_id).await;
    assert_eq!(item["status"].as_s().unwrap(), "contained");
    assert_eq!(
        crate::support::recorded_interface_groups(&item),
        vec![vec![s.app_groups[0].clone()], s.app_groups.clone()]
    );
    assert_eq!(
        json_attr(&item, "original_profile")["arn"].as_str(),
        s.original_profile_arn.as_deref()
    );
    assert_eq!(
        json_attr(&item, "original_auto_scaling_group")["name"].as_str(),
        s.auto_scaling_group.as_deref()
    );
    assert_eq!(
        json_attr(&item, "original_target_groups")
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        json_attr(&item, "original_classic_load_balancers"),
        serde_json::json!([s.classic_load_balancer.clone().unwrap()])
    );
    assert_eq!(
        json_attr(&item, "snapshots").as_array().unwrap().len(),
        s.volumes.len()
    );

    contain(&s, trigger_event(&[&s.instance_id]), &[])
        .await
        .0
        .unwrap();
    let again = record(&s, &s.instance_id).await;
    for field in [
        "incident",
        "claimed_by",
        "original_interfaces",
        "original_profile",
        "original_auto_scaling_group",
        "original_target_groups",
        "original_classic_load_balancers",
        "snapshots",
    ] {
        assert_eq!(again[field], item[field], "{field} is never overwritten");
    }
}

#[tokio::test]
async fn the_same_event_delivered_twice_at_once_converges_on_one_group_snapshot_set_and_record() {
    let s = Scenario::build(Options {
        second_interface: true,
        profile: true,
        ..Options::default()
    })
    .await;
    let event = trigger_event(&[&s.instance_id]);
    let runs = join_all((0..2).map(|_| contain(&s, event.clone(), &[]))).await;
    for (result, _) in &runs {
        result.as_ref().expect("both deliveries succeed");
    }
    s.isolation_group().await;
    let snapshots = s.account.snapshots_of(&s.instance_id).await;
    assert_eq!(
        snapshots.len(),
        s.volumes.len(),
        "one snapshot set: {snapshots:?}"
    );
    let item = record(&s, &s.instance_id).await;
    assert_eq!(
        json_attr(&item, "snapshots").as_array().unwrap().len(),
        s.volumes.len()
    );
    assert_eq!(
        s.account
            .tag_of(&s.instance_id, "ec2-quarantine:status")
            .await
            .as_deref(),
        Some("contained")
    );
    assert_eq!(
        s.account
            .tag_of(&s.instance_id, "ec2-quarantine:incident")
            .await
            .as_deref(),
        item["incident"].as_s().ok().map(String::as_str)
    );
}

#[tokio::test]
async fn two_different_events_for_one_instance_at_once_share_one_incident() {
    let s = Scenario::build(Options {
        second_interface: true,
        ..Options::default()
    })
    .await;
    let first = trigger_event(&[&s.instance_id]);
    let second = trigger_event(&[&s.instance_id]);
    assert_ne!(first["id"], second["id"]);
    let (a, b) = tokio::join!(contain(&s, first, &[]), contain(&s, second, &[]));
    let (a, b) = (a.0.expect("first succeeds"), b.0.expect("second succeeds"));
    assert_eq!(
        a.instances[0].incident, b.instances[0].incident,
        "one incident"
    );
    s.isolation_group().await;
    assert_eq!(
        s.account.snapshots_of(&s.instance_id).await.len(),
        s.volumes.len()
    );
    let item = record(&s, &s.instance_id).await;
    assert_eq!(
        item["incident"].as_s().ok(),
        a.instances[0].incident.as_ref()
    );
    // Exactly one of the two took the snapshots; the other found them or saw them being taken.
    let took: Vec<Status> = [&a, &b]
        .iter()
        .map(|r| r.instances[0].step(Step::SnapshotVolumes).unwrap().status)
        .collect();
    assert_eq!(
        took.iter().filter(|s| **s == Status::Done).count(),
        1,
        "{took:?}"
    );
}

#[tokio::test]
async fn a_first_claim_takes_the_snapshot_lease_with_it_and_records_the_snapshots() {
    let s = Scenario::build(Options::default()).await;
    let (result, log) = contain(&s, trigger_event(&[&s.instance_id]), &[]).await;
    let report = result.expect("contained");
    let item = record(&s, &s.instance_id).await;
    // The claimer holds the lease from the claim on: no separate write took it.
    assert_eq!(item["snapshot_lease_holder"], item["claimed_by"]);
    assert_eq!(log.count("PutItem"), 1);
    // One write for the snapshots, one at the end; none for the lease.
    assert_eq!(log.count("UpdateItem"), 2, "{:?}", log.calls());
    let recorded: Vec<String> = json_attr(&item, "snapshots")
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["snapshot_id"].as_str().unwrap().to_owned())
        .collect();
    let taken: Vec<String> = report.instances[0]
        .snapshots
        .iter()
        .map(|s| s.snapshot_id.clone())
        .collect();
    assert_eq!(recorded, taken);
    assert_eq!(recorded.len(), s.volumes.len());
}

#[tokio::test]
async fn a_snapshot_set_that_cannot_be_read_back_is_not_recorded_and_a_retry_takes_it() {
    let s = Scenario::build(Options::default()).await;
    let faults = crate::support::faults::Faults::default();
    // EC2 does not show the set it just created (an error state, a partial set, or the read
    // failing): the step fails, and the record must not call the evidence taken.
    faults.deny("DescribeSnapshots", "UnauthorizedOperation");
    let failing = crate::support::with_faults(&s.account.sdk, &faults);
    let (first, _) =
        crate::containment::contain_with(&s, trigger_event(&[&s.instance_id]), &[], &failing).await;
    let report = first.expect_err("the snapshot step fails the invocation");
    assert!(report.contains("snapshot-volumes"), "{report}");
    assert!(faults.injected("DescribeSnapshots") > 0);
    let item = record(&s, &s.instance_id).await;
    assert!(
        !item.contains_key("snapshots"),
        "a set that was not read back is not recorded: {item:?}"
    );
    assert!(
        !item.contains_key("snapshot_lease_holder"),
        "the lease is given up"
    );

    // Lambda's retry, with EC2 answering: the evidence is taken (or found) and recorded.
    let (again, _) = contain(&s, trigger_event(&[&s.instance_id]), &[]).await;
    let report = again.expect("contained on the retry");
    let step = report.instances[0].step(Step::SnapshotVolumes).unwrap();
    assert_ne!(step.status, Status::Failed, "{}", step.detail);
    assert_eq!(
        json_attr(&record(&s, &s.instance_id).await, "snapshots")
            .as_array()
            .unwrap()
            .len(),
        s.volumes.len()
    );
}

#[tokio::test]
async fn a_first_containment_creates_the_group_beside_the_claim_and_moves_no_interface_before_it() {
    // A bound on waits for conditions, not a pause: it only turns a hang into a failure.
    const AT_MOST: std::time::Duration = std::time::Duration::from_secs(60);
    let s = Scenario::build(Options {
        profile: true,
        ..Options::default()
    })
    .await;
    let faults = Faults::default();
    let (claim, group_read_back) = (Gate::default(), Gate::default());
    faults.hold("PutItem", &claim);
    let sdk = with_faults(&s.account.sdk, &faults);
    let containing = contain_with(&s, trigger_event(&[&s.instance_id]), &[], &sdk);
    let ordering = async {
        claim.arrived().await;
        // The claim follows the first round trip's reads, so the next DescribeSecurityGroups is
        // the read-back of a group this run created: the groups are ready, and the moves would
        // go out now if they did not wait for the claim.
        faults.hold("DescribeSecurityGroups", &group_read_back);
        tokio::time::timeout(AT_MOST, group_read_back.arrived())
            .await
            .expect("the groups are created and set while the claim is still out");
        group_read_back.open();
        claim.open();
    };
    let ((result, _), ()) = tokio::join!(containing, ordering);
    result.expect("contained");
    let timeline = faults.timeline();
    let claimed = timeline
        .iter()
        .find(|c| c.operation == "PutItem")
        .expect("the claim")
        .end;
    let created: Vec<_> = timeline
        .iter()
        .filter(|c| c.operation == "CreateSecurityGroup")
        .collect();
    assert!(!created.is_empty() && created.iter().all(|c| c.end <= claimed));
    let moves: Vec<_> = timeline
        .iter()
        .filter(|c| c.operation == "ModifyNetworkInterfaceAttribute")
        .collect();
    assert!(!moves.is_empty());
    assert!(
        moves.iter().all(|c| c.start >= claimed),
        "no interface changes before the claim has its original groups"
    );
    let (group, _, _) = s.isolation_group().await;
    for eni in &s.interfaces {
        assert_eq!(s.account.interface_groups(eni).await, vec![group.clone()]);
    }
    let item = record(&s, &s.instance_id).await;
    assert!(
        crate::support::recorded_interface_groups(&item)
            .iter()
            .flatten()
            .all(|g| s.app_groups.contains(g)),
        "the record holds the original groups, not ours"
    );
}
