use std::path::Path;

use ec2_quarantine::handler::{handle, Deps, HandlerError};
use ec2_quarantine::report::Outcome;
use serde_json::{json, Value};

use crate::containment::contain;
use crate::support::scenario::{Account, Options, Scenario};
use crate::support::{config, recorded_clients, CallLog};

/// A file of events/, as GuardDuty sends it.
pub fn sample(file: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("events")
        .join(file);
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

/// The sample finding, about `instance_id`, with its own event id: each test is its own
/// incident, as each finding delivery is.
fn finding_about(file: &str, instance_id: &str) -> Value {
    let mut event = sample(file);
    event["id"] = json!(crate::support::unique("gd-event"));
    event["detail"]["resource"]["instanceDetails"]["instanceId"] = json!(instance_id);
    event
}

/// The finding as an administrator account receives a member's.
pub fn with_account(mut event: Value, member: &str) -> Value {
    event["detail"]["accountId"] = json!(member);
    event
}

#[tokio::test]
async fn a_high_severity_finding_about_an_instance_contains_it() {
    let s = Scenario::build(Options {
        second_interface: true,
        ..Options::default()
    })
    .await;
    let event = finding_about("guardduty-instance-high.json", &s.instance_id);
    let event_id = event["id"].as_str().unwrap().to_owned();
    let (result, log) = contain(&s, event, &[]).await;
    let report = result.expect("containment succeeds");
    assert_eq!(report.outcome, Outcome::Contained, "{}", report.to_json());
    assert_eq!(report.instances.len(), 1);
    assert_eq!(report.instances[0].instance_id, s.instance_id);

    let (group_id, _, _) = s.isolation_group().await;
    for eni in &s.interfaces {
        assert_eq!(
            s.account.interface_groups(eni).await,
            vec![group_id.clone()],
            "{eni} is on the isolation group only"
        );
    }
    // Per interface: the tracking timeouts, then the interim and the isolation group.
    assert_eq!(log.count("ModifyNetworkInterfaceAttribute"), 6);
    assert_eq!(log.group_change_count(), 4);
    // The finding's event is the incident, and the reason names the finding.
    assert_eq!(
        report.instances[0].incident.as_deref(),
        Some(event_id.as_str())
    );
    assert_eq!(
        s.account
            .tag_of(&s.instance_id, "ec2-quarantine:reason")
            .await
            .as_deref(),
        Some(
            "GuardDuty finding Backdoor:EC2/C&CActivity.B!DNS (severity 8, id a6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1)"
        )
    );
    assert!(
        !s.account.snapshots_of(&s.instance_id).await.is_empty(),
        "the evidence is kept"
    );
}

#[tokio::test]
async fn a_low_severity_finding_makes_no_aws_call_and_changes_nothing() {
    let s = Scenario::build(Options::default()).await;
    let before = s.account.interface_groups(&s.interfaces[0]).await;
    let event = finding_about("guardduty-instance-low.json", &s.instance_id);
    let (result, log) = contain(&s, event, &[]).await;
    let report = result.expect("an ignored finding succeeds");
    assert_eq!(report.outcome, Outcome::Ignored);
    assert!(
        report
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("severity 2 is below the threshold 7")),
        "{:?}",
        report.reason
    );
    assert_eq!(log.calls(), Vec::<String>::new(), "no AWS call");
    assert_eq!(s.account.interface_groups(&s.interfaces[0]).await, before);
}

#[tokio::test]
async fn the_functions_threshold_applies_to_a_finding_the_rule_let_through() {
    // A rule edited by hand (or a lower GuardDutyMinSeverity) delivers the severity-2
    // finding; the function's own setting decides.
    let s = Scenario::build(Options::default()).await;
    let event = finding_about("guardduty-instance-low.json", &s.instance_id);
    let (result, _) = contain(&s, event, &[("GUARDDUTY_MIN_SEVERITY", "2")]).await;
    let report = result.expect("containment succeeds");
    assert_eq!(report.outcome, Outcome::Contained, "{}", report.to_json());
}

#[tokio::test]
async fn a_finding_about_an_instance_in_another_region_is_refused_with_no_aws_call() {
    let log = CallLog::default();
    let account = Account::new().await;
    let deps = Deps {
        clients: recorded_clients(&account.sdk, &log),
        accounts: crate::support::accounts(&account.sdk, &log),
        config: config(&[
            ("ISOLATION_INSTANCE_PROFILE", "isolation"),
            ("AWS_REGION", "us-east-1"),
        ]),
    };
    let mut event = sample("guardduty-instance-high.json");
    event["detail"]["region"] = json!("eu-west-1");
    let err = handle(event, "r", &deps)
        .await
        .expect_err("another region's instance is refused");
    assert!(matches!(err, HandlerError::InvalidEvent(_)), "{err}");
    assert!(err.to_string().contains("eu-west-1"), "{err}");
    assert_eq!(log.calls(), Vec::<String>::new(), "no AWS call");
}
