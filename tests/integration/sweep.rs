//! The sweep for lost tag events: an instance tagged with no event delivered is contained; a
//! released one and a contained one are left alone without a single change; a member account's
//! instance is swept with the member role, and an account it cannot reach fails on its own.
//!
//! Every test quarantines with a trigger key of its own: the emulator is shared, and a sweep
//! with the default key would find (and contain) the instances of tests running beside it.

use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::AttributeValue;
use ec2_quarantine::handler::{handle, Deps, HandlerError};
use ec2_quarantine::report::{InstanceOutcome, Outcome, Report};
use ec2_quarantine::sweep::{SweepAction, SweptInstance};
use serde_json::json;

use crate::accounts::{member_role, security_profile_arn, MEMBER};
use crate::faults::assert_cut_off;
use crate::support::faults::Faults;
use crate::support::scenario::{Account, Options, Scenario};
use crate::support::{accounts, recorded_clients, unique, with_faults, CallLog, INCIDENT_TABLE};

/// A member account the function's role cannot be assumed in.
const UNREACHABLE: &str = "333333333333";

fn function(sdk: &SdkConfig, log: &CallLog, config: ec2_quarantine::config::Config) -> Deps {
    Deps {
        clients: recorded_clients(sdk, log),
        config,
        accounts: accounts(sdk, log),
    }
}

/// Sets the trigger tag as a person would, with no event delivered: the emulator emits none.
async fn tag(account: &Account, instance_id: &str, key: &str) {
    account
        .ec2
        .create_tags()
        .resources(instance_id)
        .tags(
            aws_sdk_ec2::types::Tag::builder()
                .key(key)
                .value("true")
                .build(),
        )
        .send()
        .await
        .unwrap();
}

async fn sweep(deps: &Deps) -> Result<Report, HandlerError> {
    handle(json!({"action": "sweep"}), &unique("sweep"), deps).await
}

/// What the report says the sweep did with `instance_id`, in whichever account.
fn swept<'a>(report: &'a Report, instance_id: &str) -> &'a SweptInstance {
    report
        .sweep
        .iter()
        .flat_map(|a| &a.instances)
        .find(|i| i.instance_id == instance_id)
        .unwrap_or_else(|| panic!("the sweep lists {instance_id}: {}", report.to_json()))
}

/// Every call that is not a read.
fn mutating(log: &CallLog) -> Vec<String> {
    log.calls()
        .into_iter()
        .filter(|call| {
            let operation = call.rsplit('.').next().unwrap_or_default();
            !["Describe", "Get", "List"]
                .iter()
                .any(|read| operation.starts_with(read))
        })
        .collect()
}

async fn record_status(account: &Account, instance_id: &str) -> Option<String> {
    account
        .dynamodb
        .get_item()
        .table_name(INCIDENT_TABLE)
        .key("instance_id", AttributeValue::S(instance_id.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item()
        .map(|item| item["status"].as_s().unwrap().clone())
}

#[tokio::test]
async fn an_instance_tagged_with_no_event_delivered_is_contained_by_the_sweep() {
    // GIVEN an instance carrying the trigger tag, and no event
    let s = Scenario::build(Options::everything()).await;
    let key = unique("Quarantine");
    tag(&s.account, &s.instance_id, &key).await;
    let log = CallLog::default();
    let deps = function(
        &s.account.sdk,
        &log,
        s.config(&[("QUARANTINE_TAG_KEY", &key)]),
    );

    // WHEN the schedule invokes the sweep
    let report = sweep(&deps)
        .await
        .unwrap_or_else(|e| panic!("the sweep succeeds: {e}"));

    // THEN it is contained, as the account shows
    assert_eq!(report.outcome, Outcome::Contained, "{}", report.to_json());
    let found = swept(&report, &s.instance_id);
    assert_eq!(found.action, SweepAction::Contain);
    assert!(found.why.contains("no incident record"), "{}", found.why);
    assert_eq!(report.instances.len(), 1);
    assert_eq!(report.instances[0].outcome, InstanceOutcome::Contained);
    assert_cut_off(&s).await;
    crate::containment::assert_evidence_kept(&s, &report, true).await;
    assert_eq!(
        s.account
            .tag_of(&s.instance_id, "ec2-quarantine:status")
            .await
            .as_deref(),
        Some("contained")
    );
    let reason = s
        .account
        .tag_of(&s.instance_id, "ec2-quarantine:reason")
        .await
        .unwrap_or_default();
    assert!(
        reason.contains("sweep"),
        "the reason says the sweep found it: {reason}"
    );
    assert_eq!(
        record_status(&s.account, &s.instance_id).await.as_deref(),
        Some("contained")
    );
}

#[tokio::test]
async fn an_instance_already_contained_is_left_alone_with_no_change() {
    let s = Scenario::build(Options::everything()).await;
    let key = unique("Quarantine");
    tag(&s.account, &s.instance_id, &key).await;
    let config = s.config(&[("QUARANTINE_TAG_KEY", &key)]);
    let contained = handle(
        json!({"instance_ids": [s.instance_id], "reason": "IR-9"}),
        "contain",
        &function(&s.account.sdk, &CallLog::default(), config.clone()),
    )
    .await
    .unwrap_or_else(|e| panic!("contained: {e}"));
    assert_eq!(contained.outcome, Outcome::Contained);

    let log = CallLog::default();
    let report = sweep(&function(&s.account.sdk, &log, config))
        .await
        .unwrap_or_else(|e| panic!("the sweep succeeds: {e}"));

    assert_eq!(report.outcome, Outcome::Swept, "{}", report.to_json());
    let found = swept(&report, &s.instance_id);
    assert_eq!(found.action, SweepAction::Leave);
    assert!(found.why.contains("contained already"), "{}", found.why);
    assert!(report.instances.is_empty(), "nothing handed to containment");
    assert_eq!(mutating(&log), Vec::<String>::new(), "not one change");
    assert_cut_off(&s).await;
}

#[tokio::test]
async fn a_released_instance_keeps_its_tag_and_the_sweep_leaves_it_alone() {
    // GIVEN an instance contained, then released through the release function
    let s = Scenario::build(Options::everything()).await;
    let key = unique("Quarantine");
    tag(&s.account, &s.instance_id, &key).await;
    let config = s.config(&[("QUARANTINE_TAG_KEY", &key)]);
    handle(
        json!({"instance_ids": [s.instance_id], "reason": "IR-10"}),
        "contain",
        &function(&s.account.sdk, &CallLog::default(), config.clone()),
    )
    .await
    .unwrap_or_else(|e| panic!("contained: {e}"));
    let released = handle(
        json!({"action": "release", "instance_ids": [s.instance_id], "reason": "IR-10 closed by alice"}),
        "release",
        &function(
            &s.account.sdk,
            &CallLog::default(),
            s.config(&[("QUARANTINE_TAG_KEY", &key), ("FUNCTION_MODE", "release")]),
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("released: {e}"));
    assert_eq!(released.outcome, Outcome::Released);
    assert_eq!(
        record_status(&s.account, &s.instance_id).await.as_deref(),
        Some("released")
    );
    assert_eq!(
        s.account.tag_of(&s.instance_id, &key).await.as_deref(),
        Some("true"),
        "a release keeps the trigger tag"
    );
    let groups_before: Vec<Vec<String>> = {
        let mut groups = Vec::new();
        for eni in &s.interfaces {
            groups.push(s.account.interface_groups(eni).await);
        }
        groups
    };

    // WHEN the sweep runs
    let log = CallLog::default();
    let report = sweep(&function(&s.account.sdk, &log, config))
        .await
        .unwrap_or_else(|e| panic!("the sweep succeeds: {e}"));

    // THEN it is left as released: no change, not even a tag
    let found = swept(&report, &s.instance_id);
    assert_eq!(found.action, SweepAction::Leave);
    assert!(found.why.contains("released"), "{}", found.why);
    assert!(report.instances.is_empty());
    assert_eq!(mutating(&log), Vec::<String>::new(), "not one change");
    for (eni, before) in s.interfaces.iter().zip(&groups_before) {
        assert_eq!(&s.account.interface_groups(eni).await, before, "{eni}");
    }
    assert_eq!(
        s.account.profile_of(&s.instance_id).await,
        s.original_profile_arn,
        "the original profile stays"
    );
    assert_eq!(
        record_status(&s.account, &s.instance_id).await.as_deref(),
        Some("released")
    );
}

#[tokio::test]
async fn a_member_accounts_instance_is_swept_and_an_unreachable_account_fails_on_its_own() {
    // GIVEN a tagged instance in a member account, and another account whose role is refused
    let member = Account::other(MEMBER).await;
    let role = member_role(&member).await;
    let s = Scenario::build_in(
        member,
        Options {
            profile: true,
            ..Options::default()
        },
    )
    .await;
    let key = unique("Quarantine");
    tag(&s.account, &s.instance_id, &key).await;
    let security = Account::new().await;
    let faults = Faults::default();
    faults.deny_when("AssumeRole", UNREACHABLE, "AccessDenied");
    let sdk = with_faults(&security.sdk, &faults);
    let log = CallLog::default();
    let profile_arn = security_profile_arn(&s);
    let deps = function(
        &sdk,
        &log,
        s.config(&[
            ("QUARANTINE_TAG_KEY", &key),
            ("MEMBER_ROLE_NAME", &role),
            ("ISOLATION_INSTANCE_PROFILE", &profile_arn),
            ("SWEEP_ACCOUNTS", &format!("{UNREACHABLE},{MEMBER}")),
        ]),
    );

    // WHEN the sweep runs
    let result = sweep(&deps).await;

    // THEN the unreachable account fails the invocation, clearly, and the member is contained
    let Err(HandlerError::SweepIncomplete(report)) = result else {
        panic!("the invocation fails for the unreachable account: {result:?}");
    };
    let accounts: Vec<Option<&str>> = report.sweep.iter().map(|a| a.account.as_deref()).collect();
    assert_eq!(
        accounts,
        vec![
            Some(crate::support::OWN_ACCOUNT),
            Some(UNREACHABLE),
            Some(MEMBER)
        ]
    );
    let unreachable = &report.sweep[1];
    let error = unreachable.error.as_ref().expect("the account failed");
    assert_eq!(error.operation, "AssumeRole");
    assert_eq!(error.code.as_deref(), Some("AccessDenied"));
    assert!(error.message.contains(UNREACHABLE), "{}", error.message);

    let found = swept(&report, &s.instance_id);
    assert_eq!(found.action, SweepAction::Contain);
    assert_eq!(report.sweep[2].error, None);
    assert_eq!(report.instances.len(), 1);
    assert_eq!(report.instances[0].outcome, InstanceOutcome::Contained);
    assert_cut_off(&s).await;
    let record = security
        .dynamodb
        .get_item()
        .table_name(INCIDENT_TABLE)
        .key("instance_id", AttributeValue::S(s.instance_id.clone()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    let item = record
        .item()
        .expect("the record is in the security account");
    assert_eq!(item["account"].as_s().unwrap(), MEMBER);
    assert_eq!(item["status"].as_s().unwrap(), "contained");
}
