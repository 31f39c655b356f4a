//! The tags go out once every step's writes have returned, beside the last read-backs, and are
//! corrected when a read-back then disagrees with what its write returned.

use std::future::Future;
use std::time::Duration;

use ec2_quarantine::contain::tags::{CHANGES, STATUS};
use ec2_quarantine::report::{InstanceOutcome, Outcome, Report, Status, Step};

use crate::containment::{contain_with, trigger_event};
use crate::support::faults::{Faults, Gate};
use crate::support::scenario::{Options, Scenario};
use crate::support::{with_faults, CallLog};

/// A bound on a wait for a condition, not a pause: it only turns a hang into a failure.
const AT_MOST: Duration = Duration::from_secs(60);

fn tag_writes(calls: &[String]) -> usize {
    calls.iter().filter(|c| c.ends_with(".CreateTags")).count()
}

async fn with_profile() -> Scenario {
    Scenario::build(Options {
        profile: true,
        ..Options::default()
    })
    .await
}

/// Contains the scenario's instance with the interfaces' read-back held until the tags have been
/// sent (a hang, were the tags to wait for it); `meanwhile` runs while both calls are held.
async fn with_read_back_held_until_tagged(
    s: &Scenario,
    meanwhile: impl Future<Output = ()>,
) -> (Result<Report, String>, CallLog) {
    let faults = Faults::default();
    let (read_back, tagging) = (Gate::default(), Gate::default());
    faults
        .hold("DescribeNetworkInterfaces", &read_back)
        .hold("CreateTags", &tagging);
    let sdk = with_faults(&s.account.sdk, &faults);
    let containing = contain_with(s, trigger_event(&[&s.instance_id]), &[], &sdk);
    let ordering = async {
        read_back.arrived().await;
        tokio::time::timeout(AT_MOST, tagging.arrived())
            .await
            .expect("CreateTags is sent while the interfaces' read-back is held");
        meanwhile.await;
        tagging.open();
        read_back.open();
    };
    let (contained, ()) = tokio::join!(containing, ordering);
    contained
}

#[tokio::test]
async fn the_tags_are_written_while_the_interfaces_are_still_being_read_back() {
    let s = with_profile().await;
    let (result, log) = with_read_back_held_until_tagged(&s, async {}).await;
    let report = result.expect("contained");
    assert_eq!(report.outcome, Outcome::Contained);
    assert_eq!(
        s.account.tag_of(&s.instance_id, STATUS).await.as_deref(),
        Some("contained")
    );
    assert_eq!(
        tag_writes(&log.calls()),
        1,
        "every read-back agreed, so the early tags stand"
    );
}

#[tokio::test]
async fn a_read_back_that_disagrees_after_the_tags_went_out_corrects_them() {
    let s = with_profile().await;
    // Someone puts the interface back on its application group after our move returned: the
    // read-back will find it there.
    let moved_back = async {
        aws_sdk_ec2::Client::new(&s.account.sdk)
            .modify_network_interface_attribute()
            .network_interface_id(&s.interfaces[0])
            .groups(&s.app_groups[0])
            .send()
            .await
            .expect("interface moved back");
    };
    let (result, log) = with_read_back_held_until_tagged(&s, moved_back).await;
    let message = result.expect_err("a failed cut fails the invocation");
    let report: serde_json::Value = serde_json::from_str(&message).expect("the report");
    let instance = &report["instances"][0];
    assert_eq!(
        instance["outcome"],
        serde_json::to_value(InstanceOutcome::NotContained).unwrap()
    );
    let step = |step: Step| {
        let name = serde_json::to_value(step).unwrap();
        instance["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["step"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no step {name}"))
    };
    let failed = serde_json::to_value(Status::Failed).unwrap();
    assert_eq!(step(Step::MoveNetworkInterfaces)["status"], failed);
    assert_eq!(
        step(Step::TagInstance)["status"],
        serde_json::to_value(Status::Done).unwrap()
    );
    assert_eq!(
        s.account.tag_of(&s.instance_id, STATUS).await.as_deref(),
        Some("not-contained"),
        "the early status is corrected"
    );
    let changes = s.account.tag_of(&s.instance_id, CHANGES).await.unwrap();
    assert!(
        !changes.contains("move-network-interfaces"),
        "a move the read-back contradicts is not named as a change: {changes}"
    );
    assert_eq!(
        tag_writes(&log.calls()),
        2,
        "the early write, then the correction"
    );
}

#[tokio::test]
async fn a_failed_early_tag_write_is_made_again_with_the_final_tags() {
    let s = with_profile().await;
    let faults = Faults::default();
    faults.deny_next("CreateTags", "UnauthorizedOperation", 1);
    let sdk = with_faults(&s.account.sdk, &faults);
    let (result, log) = contain_with(&s, trigger_event(&[&s.instance_id]), &[], &sdk).await;
    let report = result.expect("contained, and tagged at the second write");
    assert_eq!(report.outcome, Outcome::Contained);
    assert_eq!(faults.injected("CreateTags"), 1);
    assert_eq!(
        tag_writes(&log.calls()),
        2,
        "the early write, then the final one"
    );
    assert_eq!(
        report.instances[0]
            .step(Step::TagInstance)
            .map(|step| step.status),
        Some(Status::Done)
    );
    assert_eq!(
        s.account.tag_of(&s.instance_id, STATUS).await.as_deref(),
        Some("contained")
    );
}
