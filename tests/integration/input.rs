use ec2_quarantine::handler::{handle, Deps, HandlerError};
use ec2_quarantine::report::Outcome;
use serde_json::json;

use crate::containment::{contain, trigger_event};
use crate::support::scenario::{Account, Options, Scenario};
use crate::support::{config, recorded_clients, CallLog};

async fn deps(log: &CallLog) -> Deps {
    let account = Account::new().await;
    Deps {
        clients: recorded_clients(&account.sdk, log),
        accounts: crate::support::accounts(&account.sdk, log),
        config: config(&[("ISOLATION_INSTANCE_PROFILE", "isolation")]),
    }
}

#[tokio::test]
async fn well_formed_events_that_ask_for_nothing_are_ignored_with_no_aws_call() {
    let log = CallLog::default();
    let deps = deps(&log).await;
    let arn = "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0";
    let tag_event = |keys: &[&str], tags: serde_json::Value, service: &str, kind: &str| {
        json!({
            "version": "0", "id": "e", "detail-type": "Tag Change on Resource", "source": "aws.tag",
            "account": "123456789012", "time": "2026-11-23T10:00:00Z", "region": "us-east-1",
            "resources": [arn],
            "detail": {"changed-tag-keys": keys, "service": service, "resource-type": kind, "version": 1, "tags": tags}
        })
    };
    let ignored = [
        tag_event(
            &["Owner"],
            json!({"Owner": "x", "Quarantine": "true"}),
            "ec2",
            "instance",
        ),
        tag_event(
            &["Quarantine"],
            json!({"Quarantine": "false"}),
            "ec2",
            "instance",
        ),
        tag_event(
            &["Quarantine"],
            json!({"Quarantine": "True"}),
            "ec2",
            "instance",
        ),
        tag_event(&["Quarantine"], json!({}), "ec2", "instance"),
        tag_event(
            &["Quarantine"],
            json!({"Quarantine": "true"}),
            "ec2",
            "volume",
        ),
        tag_event(&["Quarantine"], json!({"Quarantine": "true"}), "rds", "db"),
        json!({"source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification", "detail": {}}),
        crate::guardduty::sample("guardduty-instance-low.json"),
        crate::guardduty::sample("guardduty-s3-finding.json"),
    ];
    for event in ignored {
        let report = handle(event.clone(), "r", &deps)
            .await
            .expect("ignored events succeed");
        assert_eq!(report.outcome, Outcome::Ignored, "{event}");
        assert!(report.reason.as_deref().is_some_and(|r| !r.is_empty()));
    }
    assert_eq!(
        log.calls(),
        Vec::<String>::new(),
        "ignored events make no AWS call"
    );
}

#[tokio::test]
async fn malformed_events_are_errors_that_name_the_problem_with_no_aws_call() {
    let log = CallLog::default();
    let deps = deps(&log).await;
    let invalid = [
        (json!("i-0123456789abcdef0"), "string"),
        (json!({"instance_ids": []}), "empty"),
        (json!({"instance_ids": ["i-nothex"]}), "i-nothex"),
        (
            json!({"instance_ids": ["i-12345678"], "dry-run": true}),
            "dry-run",
        ),
        (
            json!({"detail-type": "Tag Change on Resource", "source": "aws.tag"}),
            "detail",
        ),
        (
            json!({"source": "aws.guardduty", "detail-type": "GuardDuty Finding", "detail": {}}),
            "detail.id is missing",
        ),
        (
            crate::guardduty::with_account(
                crate::guardduty::sample("guardduty-instance-high.json"),
                "210987654321",
            ),
            "MEMBER_ROLE_NAME is not set",
        ),
    ];
    for (event, expected) in invalid {
        let err = handle(event.clone(), "r", &deps)
            .await
            .expect_err("invalid events fail");
        assert!(
            matches!(err, HandlerError::InvalidEvent(_)),
            "{event}: {err}"
        );
        assert!(
            err.to_string().contains(expected),
            "{event}: {err} should mention {expected}"
        );
    }
    assert_eq!(
        log.calls(),
        Vec::<String>::new(),
        "invalid events make no AWS call"
    );
}

#[tokio::test]
async fn an_unknown_instance_is_an_error_naming_it_and_nothing_is_changed() {
    let log = CallLog::default();
    let deps = deps(&log).await;
    let err = handle(
        json!({"instance_ids": ["i-0000000000000dead"], "reason": "test"}),
        "r",
        &deps,
    )
    .await
    .expect_err("an unknown instance fails the invocation");
    let message = err.to_string();
    assert!(message.contains("i-0000000000000dead"), "{message}");
    assert!(message.contains("InvalidInstanceID.NotFound"), "{message}");
    let mutating: Vec<String> = log
        .calls()
        .into_iter()
        .filter(|c| !c.contains(".Describe"))
        .collect();
    assert!(mutating.is_empty(), "nothing was changed: {mutating:?}");
}

#[tokio::test]
async fn a_terminated_instance_is_rejected_and_nothing_is_changed() {
    let s = Scenario::build(Options::default()).await;
    s.account
        .ec2
        .terminate_instances()
        .instance_ids(&s.instance_id)
        .send()
        .await
        .unwrap();
    let (result, log) = contain(&s, trigger_event(&[&s.instance_id]), &[]).await;
    let message = result.expect_err("a terminated instance fails the invocation");
    let report: serde_json::Value = serde_json::from_str(&message).unwrap();
    assert_eq!(report["instances"][0]["outcome"], "rejected");
    assert!(report["instances"][0]["steps"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("terminated"));
    let mutating: Vec<String> = log
        .calls()
        .into_iter()
        .filter(|c| !c.contains(".Describe"))
        .collect();
    assert!(mutating.is_empty(), "nothing was changed: {mutating:?}");
}

#[tokio::test]
async fn every_instance_of_an_event_is_contained() {
    let first = Scenario::build(Options::default()).await;
    let second = Scenario::build(Options::default()).await;
    let event = trigger_event(&[&first.instance_id, &second.instance_id]);
    let (result, _) = contain(&first, event, &[]).await;
    let report = result.expect("both contained");
    assert_eq!(report.instances.len(), 2);
    for s in [&first, &second] {
        let (group, _, _) = s.isolation_group().await;
        assert_eq!(
            s.account.interface_groups(&s.interfaces[0]).await,
            vec![group]
        );
    }
}
