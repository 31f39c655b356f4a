use ec2_quarantine::report::{InstanceOutcome, Outcome};
use futures::future::join_all;

use crate::containment::{contain_with, trigger_event};
use crate::support::scenario::Scenario;

const FLEET: i32 = 50;
const PATIENT_CLAIM: (&str, &str) = ("CLAIM_TIMEOUT_MS", "120000");

/// The emulator serves one request at a time, far below AWS's capacity: fifty containments at
/// once queue there for longer than the function's 5 s attempt timeout and 3 s claim budget,
/// which are sized for AWS; so these tests wait longer (`support::patient`, and
/// `PATIENT_CLAIM`, the function's own `CLAIM_TIMEOUT_MS` setting).
fn patient(s: &Scenario) -> aws_config::SdkConfig {
    crate::support::patient(&s.account.sdk)
}

/// Every instance of the fleet sits on the one isolation group of its VPC, with a snapshot.
async fn assert_all_contained(s: &Scenario, ids: &[String]) {
    let (group, ingress, egress) = s.isolation_group().await;
    assert_eq!((ingress, egress), (0, 0));
    for id in ids {
        let instance = s.account.instance(id).await;
        for eni in instance.network_interfaces() {
            let groups: Vec<&str> = eni.groups().iter().filter_map(|g| g.group_id()).collect();
            assert_eq!(groups, [group.as_str()], "{id} isolated");
        }
        assert_eq!(
            s.account.snapshots_of(id).await.len(),
            1,
            "{id} snapshotted once"
        );
    }
}

#[tokio::test]
async fn one_event_naming_fifty_instances_contains_them_all_with_one_group() {
    let (s, ids) = Scenario::fleet(FLEET).await;
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let (result, log) =
        contain_with(&s, trigger_event(&refs), &[PATIENT_CLAIM], &patient(&s)).await;
    let report = result.expect("all fifty contained");
    assert_eq!(report.outcome, Outcome::Contained);
    assert_eq!(report.instances.len(), ids.len());
    assert!(report
        .instances
        .iter()
        .all(|i| i.outcome == InstanceOutcome::Contained));
    // The isolation group and the interim group (CUT_TRACKED_CONNECTIONS), each once.
    assert_eq!(
        log.count("CreateSecurityGroup"),
        2,
        "each of the VPC's groups is ensured once"
    );
    assert_all_contained(&s, &ids).await;
}

#[tokio::test]
async fn fifty_concurrent_invocations_in_one_vpc_end_with_exactly_one_group() {
    // Fifty separate invocations (each its own incident and group lookup), racing to create
    // the VPC's isolation group.
    let (s, ids) = Scenario::fleet(FLEET).await;
    let sdk = patient(&s);
    let runs = join_all(
        ids.iter()
            .map(|id| contain_with(&s, trigger_event(&[id]), &[PATIENT_CLAIM], &sdk)),
    )
    .await;
    for (result, _) in runs {
        let report = result.expect("every invocation contains its instance");
        assert_eq!(report.outcome, Outcome::Contained);
    }
    assert_all_contained(&s, &ids).await;
}
