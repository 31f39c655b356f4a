use ec2_quarantine::report::{InstanceOutcome, Outcome, Status, Step};
use serde_json::Value;

use crate::containment::{contain, contain_with, trigger_event};
use crate::support::faults::Faults;
use crate::support::scenario::{Options, Scenario};
use crate::support::with_faults;

/// The report carried by a failed invocation.
pub fn failed_report(result: Result<ec2_quarantine::report::Report, String>) -> Value {
    let message = result.expect_err("the invocation fails so that Lambda retries it");
    serde_json::from_str(&message).expect("the error carries the report")
}

pub fn step<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["instances"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {report}"))
}

pub async fn assert_cut_off(s: &Scenario) {
    let (group, _, _) = s.isolation_group().await;
    for eni in &s.interfaces {
        assert_eq!(
            s.account.interface_groups(eni).await,
            vec![group.clone()],
            "{eni} isolated"
        );
    }
    assert_eq!(
        s.account.profile_of(&s.instance_id).await.as_deref(),
        Some(s.isolation_profile.1.as_str()),
        "isolation profile in place"
    );
}

#[tokio::test]
async fn throttling_is_absorbed_by_the_sdks_retries_and_containment_completes() {
    let s = Scenario::build(Options::everything()).await;
    let faults = Faults::default();
    faults
        .throttle("ModifyNetworkInterfaceAttribute", "RequestLimitExceeded", 2)
        .throttle("DetachInstances", "Throttling", 2)
        .throttle("DescribeTargetHealth", "Throttling", 2);
    let (result, _) = contain_with(
        &s,
        trigger_event(&[&s.instance_id]),
        &[],
        &with_faults(&s.account.sdk, &faults),
    )
    .await;
    let report = result.expect("containment completes despite throttling");
    assert_eq!(report.outcome, Outcome::Contained);
    crate::containment::assert_evidence_kept(&s, &report, true).await;
    for operation in [
        "ModifyNetworkInterfaceAttribute",
        "DetachInstances",
        "DescribeTargetHealth",
    ] {
        assert_eq!(
            faults.injected(operation),
            2,
            "{operation} was throttled twice, then retried"
        );
    }
    assert_cut_off(&s).await;
}

#[tokio::test]
async fn access_denied_on_a_non_critical_step_fails_it_with_the_aws_code_and_the_cuts_still_hold() {
    let cases = [
        (
            "CreateSnapshots",
            "UnauthorizedOperation",
            "snapshot-volumes",
        ),
        ("DetachInstances", "AccessDenied", "detach-auto-scaling"),
        (
            "DeregisterTargets",
            "AccessDenied",
            "deregister-target-groups",
        ),
        ("CreateTags", "UnauthorizedOperation", "tag-instance"),
    ];
    for (operation, code, step_name) in cases {
        let s = Scenario::build(Options::everything()).await;
        let faults = Faults::default();
        faults.deny(operation, code);
        let (result, _) = contain_with(
            &s,
            trigger_event(&[&s.instance_id]),
            &[],
            &with_faults(&s.account.sdk, &faults),
        )
        .await;
        let report = failed_report(result);
        assert_eq!(report["instances"][0]["outcome"], "partial", "{operation}");
        let failed = step(&report, step_name);
        assert_eq!(failed["status"], "failed", "{operation}");
        assert_eq!(failed["error"]["code"], code, "{operation}");
        assert_eq!(failed["error"]["operation"], operation);
        assert_cut_off(&s).await;
    }
}

#[tokio::test]
async fn a_denied_detach_reports_the_evidence_at_risk() {
    let s = Scenario::build(Options {
        auto_scaling_group: true,
        ..Options::default()
    })
    .await;
    let faults = Faults::default();
    faults.deny("DetachInstances", "AccessDenied");
    let (result, _) = contain_with(
        &s,
        trigger_event(&[&s.instance_id]),
        &[],
        &with_faults(&s.account.sdk, &faults),
    )
    .await;
    let report = failed_report(result);
    let detail = step(&report, "detach-auto-scaling")["detail"]
        .as_str()
        .unwrap();
    assert!(detail.contains("evidence at risk"), "{detail}");
}

#[tokio::test]
async fn a_failed_network_cut_says_not_contained_and_every_other_step_still_runs() {
    let s = Scenario::build(Options {
        second_interface: true,
        profile: true,
        ..Options::default()
    })
    .await;
    let faults = Faults::default();
    faults.deny("ModifyNetworkInterfaceAttribute", "UnauthorizedOperation");
    let (result, _) = contain_with(
        &s,
        trigger_event(&[&s.instance_id]),
        &[],
        &with_faults(&s.account.sdk, &faults),
    )
    .await;
    let report = failed_report(result);
    assert_eq!(report["instances"][0]["outcome"], "not_contained");
    assert_eq!(step(&report, "move-network-interfaces")["status"], "failed");
    for other in [
        "replace-instance-profile",
        "protect-instance",
        "keep-volumes",
        "snapshot-volumes",
    ] {
        assert_eq!(step(&report, other)["status"], "done", "{other} still ran");
    }
    assert_eq!(
        s.account.profile_of(&s.instance_id).await.as_deref(),
        Some(s.isolation_profile.1.as_str())
    );
    assert_eq!(
        s.account.interface_groups(&s.interfaces[0]).await,
        vec![s.app_groups[0].clone()]
    );
    assert_eq!(
        s.account
            .tag_of(&s.instance_id, "ec2-quarantine:status")
            .await
            .as_deref(),
        Some("not-contained")
    );
}

#[tokio::test]
async fn a_failed_credential_cut_says_not_contained_and_every_other_step_still_runs() {
    let s = Scenario::build(Options {
        profile: true,
        ..Options::default()
    })
    .await;
    let faults = Faults::default();
    faults.deny(
        "ReplaceIamInstanceProfileAssociation",
        "UnauthorizedOperation",
    );
    let (result, _) = contain_with(
        &s,
        trigger_event(&[&s.instance_id]),
        &[],
        &with_faults(&s.account.sdk, &faults),
    )
    .await;
    let report = failed_report(result);
    assert_eq!(report["instances"][0]["outcome"], "not_contained");
    let failed = step(&report, "replace-instance-profile");
    assert_eq!(failed["error"]["code"], "UnauthorizedOperation");
    assert_eq!(step(&report, "move-network-interfaces")["status"], "done");
    assert_eq!(step(&report, "snapshot-volumes")["status"], "done");
    assert_eq!(
        s.account.profile_of(&s.instance_id).await,
        s.original_profile_arn
    );
}

#[tokio::test]
async fn a_hanging_call_is_abandoned_by_the_timeouts_and_reported_never_a_silent_success() {
    // With the function's own timeouts (5 s an attempt, 20 s an operation), so this takes 20 s.
    let s = Scenario::build(Options::everything()).await;
    let faults = Faults::default();
    faults.hang("DescribeTargetHealth");
    let (result, _) = contain_with(
        &s,
        trigger_event(&[&s.instance_id]),
        &[],
        &with_faults(&s.account.sdk, &faults),
    )
    .await;
    let report = failed_report(result);
    let failed = step(&report, "deregister-target-groups");
    assert_eq!(failed["status"], "failed");
    assert!(failed["error"]["code"].is_null(), "no AWS answer: {failed}");
    assert!(
        failed["detail"].as_str().unwrap().contains("timeout"),
        "{failed}"
    );
    assert!(faults.injected("DescribeTargetHealth") >= 1);
    assert_cut_off(&s).await;
}

#[tokio::test]
async fn a_rerun_after_a_half_done_containment_completes_the_rest() {
    let s = Scenario::build(Options {
        profile: true,
        second_interface: true,
        ..Options::default()
    })
    .await;
    let faults = Faults::default();
    faults
        .deny(
            "ReplaceIamInstanceProfileAssociation",
            "UnauthorizedOperation",
        )
        .deny("CreateSnapshots", "UnauthorizedOperation");
    let (first, _) = contain_with(
        &s,
        trigger_event(&[&s.instance_id]),
        &[],
        &with_faults(&s.account.sdk, &faults),
    )
    .await;
    failed_report(first);

    // Lambda's retry delivers the same event again, now without the faults.
    let (second, log) = contain(&s, trigger_event(&[&s.instance_id]), &[]).await;
    let report = second.expect("the retry completes the containment");
    let instance = &report.instances[0];
    assert_eq!(instance.outcome, InstanceOutcome::Contained);
    let status = |step: Step| instance.step(step).unwrap().status;
    assert_eq!(status(Step::MoveNetworkInterfaces), Status::Unchanged);
    assert_eq!(status(Step::ProtectInstance), Status::Unchanged);
    assert_eq!(status(Step::ReplaceInstanceProfile), Status::Done);
    assert_eq!(status(Step::SnapshotVolumes), Status::Done);
    assert_eq!(log.count("ModifyNetworkInterfaceAttribute"), 0);
    assert_cut_off(&s).await;
    assert_eq!(
        s.account.snapshots_of(&s.instance_id).await.len(),
        s.volumes.len()
    );
}

#[tokio::test]
async fn an_invocation_that_runs_out_of_time_ends_with_the_report_so_far_in_the_record_and_tags() {
    use std::time::{Duration, Instant};

    use ec2_quarantine::handler::{handle_until, Deps};

    let s = Scenario::build(Options::default()).await;
    // The snapshots never answer: without a deadline the step would end only when the SDK's
    // timeouts give up (20 s per attempt budget), long after the function's own time.
    let faults = Faults::default();
    faults.hang("CreateSnapshots");
    let sdk = with_faults(&s.account.sdk, &faults);
    let log = crate::support::CallLog::default();
    let deps = Deps {
        clients: crate::support::recorded_clients(&sdk, &log),
        accounts: crate::support::accounts(&sdk, &log),
        config: s.config(&[]),
    };
    let started = Instant::now();
    let deadline = started + Duration::from_secs(6);
    let result = handle_until(
        trigger_event(&[&s.instance_id]),
        &crate::support::unique("request"),
        &deps,
        Some(deadline),
    )
    .await
    .map_err(|e| e.to_string());
    assert!(
        started.elapsed() < Duration::from_secs(6) + ec2_quarantine::contain::DEADLINE_RESERVE,
        "ended within the time kept for the report"
    );
    let report = failed_report(result);
    let snapshots = step(&report, "snapshot-volumes");
    assert_eq!(snapshots["status"], "failed");
    assert!(
        snapshots["detail"].as_str().unwrap().contains("cut short"),
        "{snapshots}"
    );
    // What ended before the deadline is reported as it ended: the cuts hold.
    assert_eq!(step(&report, "move-network-interfaces")["status"], "done");
    assert_eq!(report["instances"][0]["outcome"], "partial");
    assert_cut_off(&s).await;
    // The report so far is in the tags and the record.
    assert_eq!(
        s.account
            .tag_of(&s.instance_id, "ec2-quarantine:status")
            .await
            .as_deref(),
        Some("partial")
    );
    let record = crate::record::record(&s, &s.instance_id).await;
    assert_eq!(record["status"].as_s().unwrap(), "partial");
}
