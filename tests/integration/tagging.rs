//! The tags go out once every step's writes have returned, beside the last read-backs, and are
//! corrected when a read-back then disagrees with what its write returned.

use std::future::Future;
use std::time::Duration;

use ec2_quarantine::contain::tags::{CHANGES, INCIDENT, STATUS};
use ec2_quarantine::report::{InstanceOutcome, Outcome, Report, Status, Step};

use crate::containment::{contain_with, trigger_event};
use crate::support::faults::{Faults, Gate};
use crate::support::scenario::{Options, Scenario};
use crate::support::{with_faults, CallLog};

/// A bound on a wait for a condition, not a pause: it only turns a hang into a failure.
const AT_MOST: Duration = Duration::from_secs(60);

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
        // The read-back names the interfaces; round trip 1 reads by the instance (a filter).
        .hold_when(
            "DescribeNetworkInterfaces",
            "NetworkInterfaceId.1=",
            &read_back,
        )
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
        log.tag_writes_on(&s.instance_id),
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
        log.tag_writes_on(&s.instance_id),
        2,
        "the early write, then the correction"
    );
}

#[tokio::test]
async fn a_failed_early_tag_write_is_made_again_with_the_final_tags() {
    let s = with_profile().await;
    let faults = Faults::default();
    // The instance's own tags, not the marks on its interfaces and volumes.
    let on_the_instance: &'static str =
        Box::leak(format!("ResourceId.1={}", s.instance_id).into_boxed_str());
    faults.deny_next_when("CreateTags", on_the_instance, "UnauthorizedOperation", 1);
    let sdk = with_faults(&s.account.sdk, &faults);
    let (result, log) = contain_with(&s, trigger_event(&[&s.instance_id]), &[], &sdk).await;
    let report = result.expect("contained, and tagged at the second write");
    assert_eq!(report.outcome, Outcome::Contained);
    assert_eq!(faults.injected("CreateTags"), 1);
    assert_eq!(
        log.tag_writes_on(&s.instance_id),
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

#[tokio::test]
async fn every_interface_and_volume_is_marked_with_the_status_and_the_incident() {
    let s = with_profile().await;
    let (result, _) = contain_with(&s, trigger_event(&[&s.instance_id]), &[], &s.account.sdk).await;
    let report = result.expect("contained");
    let incident = report.instances[0].incident.clone().unwrap();
    assert!(!s.interfaces.is_empty() && !s.volumes.is_empty());
    for resource in s.interfaces.iter().chain(&s.volumes) {
        let marks = s.account.marks_of(resource).await;
        assert_eq!(
            marks.get(STATUS).map(String::as_str),
            Some("contained"),
            "{resource}: {marks:?}"
        );
        assert_eq!(
            marks.get(INCIDENT),
            Some(&incident),
            "{resource}: {marks:?}"
        );
    }
}

#[tokio::test]
async fn an_instance_close_to_fifty_tags_gets_its_status_and_incident_and_the_report_names_the_rest(
) {
    let s = with_profile().await;
    // 48 tags of its own: room for two more.
    let mut tagging = s.account.ec2.create_tags().resources(&s.instance_id);
    for i in 0..48 {
        tagging = tagging.tags(
            aws_sdk_ec2::types::Tag::builder()
                .key(format!("team-{i:02}"))
                .value("x")
                .build(),
        );
    }
    tagging.send().await.unwrap();
    let (result, _) = contain_with(&s, trigger_event(&[&s.instance_id]), &[], &s.account.sdk).await;
    let report = result.expect("the invocation succeeds");
    let instance = &report.instances[0];
    assert_eq!(instance.outcome, InstanceOutcome::Contained);
    assert_eq!(
        s.account.tag_of(&s.instance_id, STATUS).await.as_deref(),
        Some("contained")
    );
    assert_eq!(
        s.account.tag_of(&s.instance_id, INCIDENT).await,
        instance.incident
    );
    assert_eq!(s.account.instance(&s.instance_id).await.tags().len(), 50);
    let step = instance.step(Step::TagInstance).unwrap();
    assert!(
        step.detail
            .contains("did not fit in the 50 tags EC2 allows")
            && step.detail.contains(CHANGES),
        "{}",
        step.detail
    );
}
