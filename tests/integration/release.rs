//! Release: a contained instance put back exactly as it was, read from the account before and
//! after; what release must not touch (snapshots, protection); refusals with zero calls.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_ec2::types::{
    IamInstanceProfileSpecification, InstanceAttributeName, InstanceNetworkInterfaceSpecification,
    InstanceType,
};
use ec2_quarantine::contain::credentials::decode_document;
use ec2_quarantine::handler::{handle, Deps};
use ec2_quarantine::report::{InstanceOutcome, Outcome, Report, Status, Step};
use serde_json::{json, Value};

use crate::containment::{contain, trigger_event};
use crate::support::faults::Faults;
use crate::support::scenario::{Options, Scenario};
use crate::support::{
    recorded_clients, sdk_config, with_faults, CallLog, InterfaceChange, INCIDENT_TABLE,
};

const POLICY: &str = "ec2-quarantine-revoke-instance-credentials";

fn instance_arn(instance_id: &str) -> String {
    format!("arn:aws:ec2:us-east-1:123456789012:instance/{instance_id}")
}

fn release_request(instance_ids: &[&str]) -> Value {
    json!({"action": "release", "instance_ids": instance_ids, "reason": "IR-42 closed by alice: reimaged"})
}

/// Runs the handler of the release function (`FUNCTION_MODE=release`) as Lambda would.
async fn release(s: &Scenario, request: Value) -> (Result<Report, String>, CallLog) {
    release_with(s, request, &s.account.sdk).await
}

async fn release_with(
    s: &Scenario,
    request: Value,
    sdk: &aws_config::SdkConfig,
) -> (Result<Report, String>, CallLog) {
    let log = CallLog::default();
    let deps = Deps {
        clients: recorded_clients(sdk, &log),
        config: s.config(&[("FUNCTION_MODE", "release")]),
        accounts: crate::support::accounts(sdk, &log),
    };
    let result = handle(request, &crate::support::unique("request"), &deps)
        .await
        .map_err(|e| e.to_string());
    (result, log)
}

/// Everything containment changes and release restores, as the account shows it.
#[derive(Debug, PartialEq, Eq)]
struct Restorable {
    interface_groups: BTreeMap<String, BTreeSet<String>>,
    profile: Option<String>,
    auto_scaling_group: Option<String>,
    /// Target group ARN to the (target id, port) registered in it.
    targets: BTreeMap<String, BTreeSet<(String, Option<i32>)>>,
    classic: BTreeMap<String, BTreeSet<String>>,
}

async fn restorable(s: &Scenario) -> Restorable {
    let a = &s.account;
    let mut interface_groups = BTreeMap::new();
    for eni in &s.interfaces {
        interface_groups.insert(
            eni.clone(),
            a.interface_groups(eni).await.into_iter().collect(),
        );
    }
    let auto_scaling_group = a
        .autoscaling
        .describe_auto_scaling_instances()
        .instance_ids(&s.instance_id)
        .send()
        .await
        .unwrap()
        .auto_scaling_instances()
        .iter()
        .find(|i| i.instance_id() == Some(s.instance_id.as_str()))
        .and_then(|i| i.auto_scaling_group_name().map(str::to_owned));
    let mut targets = BTreeMap::new();
    let groups = s
        .target_groups
        .iter()
        .map(|(arn, _)| arn.clone())
        .chain(s.ip_target_group.clone());
    for arn in groups {
        let health = a
            .elbv2
            .describe_target_health()
            .target_group_arn(&arn)
            .send()
            .await
            .unwrap();
        let registered = health
            .target_health_descriptions()
            .iter()
            .filter(|d| {
                d.target_health()
                    .and_then(|h| h.state())
                    .map(|s| s.as_str())
                    != Some("draining")
            })
            .filter_map(|d| d.target())
            .map(|t| (t.id().unwrap().to_owned(), t.port()))
            .collect();
        targets.insert(arn, registered);
    }
    let mut classic = BTreeMap::new();
    if let Some(name) = &s.classic_load_balancer {
        let out = a
            .elb
            .describe_load_balancers()
            .load_balancer_names(name)
            .send()
            .await
            .unwrap();
        let members = out.load_balancer_descriptions()[0]
            .instances()
            .iter()
            .filter_map(|i| i.instance_id().map(str::to_owned))
            .collect();
        classic.insert(name.clone(), members);
    }
    Restorable {
        interface_groups,
        profile: a.profile_of(&s.instance_id).await,
        auto_scaling_group,
        targets,
        classic,
    }
}

async fn role_policy(s: &Scenario, role: &str) -> Option<Value> {
    match s
        .account
        .iam
        .get_role_policy()
        .role_name(role)
        .policy_name(POLICY)
        .send()
        .await
    {
        Ok(out) => {
            Some(serde_json::from_str(&decode_document(out.policy_document()).unwrap()).unwrap())
        }
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_no_such_entity_exception()) =>
        {
            None
        }
        Err(e) => panic!("GetRolePolicy {role}: {e:?}"),
    }
}

fn denied_arns(policy: &Option<Value>) -> Vec<String> {
    policy
        .as_ref()
        .and_then(|p| {
            p["Statement"].as_array()?.iter().find_map(|st| {
                serde_json::from_value(
                    st["Condition"]["ArnEquals"]["ec2:SourceInstanceARN"].clone(),
                )
                .ok()
            })
        })
        .unwrap_or_default()
}

async fn record_status(s: &Scenario, instance_id: &str) -> Option<String> {
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
        .and_then(|i| i.get("status")?.as_s().ok().cloned())
}

/// A second instance with the same profile, and so the same role: its deny must survive.
async fn neighbour(s: &Scenario) -> String {
    let profile = s.original_profile_arn.as_deref().unwrap();
    let name = profile.rsplit('/').next().unwrap();
    let out = s
        .account
        .ec2
        .run_instances()
        .image_id("ami-0123456789abcdef0")
        .instance_type(InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .network_interfaces(
            InstanceNetworkInterfaceSpecification::builder()
                .device_index(0)
                .subnet_id(&s.subnet_id)
                .groups(&s.app_groups[0])
                .build(),
        )
        .iam_instance_profile(
            IamInstanceProfileSpecification::builder()
                .name(name)
                .build(),
        )
        .send()
        .await
        .unwrap();
    out.instances()[0].instance_id().unwrap().to_owned()
}

#[tokio::test]
async fn a_contained_two_interface_instance_is_released_to_its_exact_original_state() {
    let s = Scenario::build(Options::everything()).await;
    let other = neighbour(&s).await;
    let role = s
        .original_profile_arn
        .as_deref()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let before = restorable(&s).await;
    assert_eq!(before.interface_groups.len(), 2, "{before:?}");
    assert!(before.profile.is_some() && before.auto_scaling_group.is_some());

    let contained = contain(&s, trigger_event(&[&s.instance_id, &other]), &[])
        .await
        .0
        .expect("containment succeeds");
    let incident = contained.instances[0].incident.clone().unwrap();
    let isolated = restorable(&s).await;
    assert_ne!(isolated.interface_groups, before.interface_groups);
    assert_ne!(isolated.profile, before.profile);
    assert_ne!(isolated.auto_scaling_group, before.auto_scaling_group);
    assert_ne!(isolated.targets, before.targets);
    assert_ne!(isolated.classic, before.classic);
    let mut both = vec![instance_arn(&s.instance_id), instance_arn(&other)];
    both.sort();
    assert_eq!(denied_arns(&role_policy(&s, &role).await), both);
    let snapshots = s.account.snapshots_of(&s.instance_id).await;
    assert_eq!(snapshots.len(), s.volumes.len());

    let (result, log) = release(&s, release_request(&[&s.instance_id])).await;
    let report = result.expect("the release succeeds");
    assert_eq!(report.outcome, Outcome::Released);
    let instance = &report.instances[0];
    assert_eq!(instance.outcome, InstanceOutcome::Released, "{instance:#?}");
    for step in [
        Step::RestoreNetworkInterfaces,
        Step::RestoreInstanceProfile,
        Step::RestoreCredentials,
        Step::RegisterTargetGroups,
        Step::RegisterClassicLoadBalancers,
        Step::AttachAutoScaling,
        Step::TagInstance,
        Step::RecordIncident,
    ] {
        assert_eq!(
            instance.step(step).map(|s| s.status),
            Some(Status::Done),
            "{step:?}: {instance:#?}"
        );
    }

    // Exactly as before containment, read from the account.
    assert_eq!(restorable(&s).await, before);
    // The marks say released, so the guard lets go of the interfaces and volumes.
    for resource in s.interfaces.iter().chain(&s.volumes) {
        assert_eq!(
            s.account
                .marks_of(resource)
                .await
                .get("ec2-quarantine:status")
                .map(String::as_str),
            Some("released"),
            "{resource}"
        );
    }
    // The deny is gone for this instance and kept for the other.
    assert_eq!(
        denied_arns(&role_policy(&s, &role).await),
        vec![instance_arn(&other)]
    );
    // Evidence and protection stay.
    assert_eq!(s.account.snapshots_of(&s.instance_id).await, snapshots);
    let a = &s.account;
    assert_eq!(
        a.attribute(&s.instance_id, InstanceAttributeName::DisableApiTermination)
            .await,
        "true"
    );
    assert_eq!(
        a.attribute(
            &s.instance_id,
            InstanceAttributeName::InstanceInitiatedShutdownBehavior
        )
        .await,
        "stop"
    );
    for mapping in a.instance(&s.instance_id).await.block_device_mappings() {
        assert_eq!(mapping.ebs().unwrap().delete_on_termination(), Some(false));
    }
    // Tags: released, with the incident and the reason; the trigger tag and nothing else gone.
    assert_eq!(
        a.tag_of(&s.instance_id, "ec2-quarantine:status")
            .await
            .as_deref(),
        Some("released")
    );
    assert_eq!(
        a.tag_of(&s.instance_id, "ec2-quarantine:released-incident")
            .await,
        Some(incident)
    );
    assert_eq!(
        a.tag_of(&s.instance_id, "ec2-quarantine:incident").await,
        None
    );
    assert_eq!(
        record_status(&s, &s.instance_id).await.as_deref(),
        Some("released")
    );
    assert_eq!(
        record_status(&s, &other).await.as_deref(),
        Some("contained")
    );
    // The other instance is untouched by this release.
    assert_eq!(
        a.tag_of(&other, "ec2-quarantine:status").await.as_deref(),
        Some("contained")
    );
    // Release removes only what the allowlist names, and never a snapshot.
    for call in log.calls() {
        assert!(
            !call.contains("Snapshot") || call.contains("Describe"),
            "release never touches snapshots: {call}"
        );
        assert!(!call.contains(".Terminate"), "{call}");
    }

    // A second release is refused: there is nothing left to restore.
    let (again, log) = release(&s, release_request(&[&s.instance_id])).await;
    let err = again.expect_err("a second release is refused");
    assert!(err.contains("already released"), "{err}");
    assert_no_change(&log);
}

/// Reads only: no call that changes anything.
fn assert_no_change(log: &CallLog) {
    for call in log.calls() {
        let operation = call.rsplit('.').next().unwrap();
        assert!(
            operation.starts_with("Describe") || operation.starts_with("Get"),
            "no change, only reads: {call} in {:?}",
            log.calls()
        );
    }
}

#[tokio::test]
async fn releasing_an_instance_never_contained_is_an_error_that_changes_nothing() {
    let s = Scenario::build(Options {
        profile: true,
        ..Options::default()
    })
    .await;
    let groups = s.account.interface_groups(&s.interfaces[0]).await;
    let (result, log) = release(&s, release_request(&[&s.instance_id])).await;
    let err = result.expect_err("nothing to release");
    assert!(err.contains("never contained"), "{err}");
    assert!(err.contains(&s.instance_id), "{err}");
    assert_no_change(&log);
    assert!(log.count("GetItem") == 1, "{:?}", log.calls());
    assert_eq!(s.account.interface_groups(&s.interfaces[0]).await, groups);
    assert_eq!(
        s.account.profile_of(&s.instance_id).await,
        s.original_profile_arn
    );
    assert_eq!(record_status(&s, &s.instance_id).await, None);
    assert_eq!(
        s.account
            .tag_of(&s.instance_id, "ec2-quarantine:status")
            .await,
        None
    );
}

#[tokio::test]
async fn the_containment_function_refuses_a_release_with_zero_calls() {
    let log = CallLog::default();
    let sdk = sdk_config().await;
    let deps = Deps {
        clients: recorded_clients(&sdk, &log),
        config: crate::support::config(&[("ISOLATION_INSTANCE_PROFILE", "isolation")]),
        accounts: crate::support::accounts(&sdk, &log),
    };
    let err = handle(release_request(&["i-0123456789abcdef0"]), "req", &deps)
        .await
        .expect_err("the containment function never releases");
    let message = err.to_string();
    assert!(message.contains("release function"), "{message}");
    assert!(message.contains("FUNCTION_MODE=release"), "{message}");
    assert_eq!(
        lambda_runtime::Diagnostic::from(err).error_type,
        "InvalidEvent"
    );
    assert_eq!(log.calls(), Vec::<String>::new());
}

#[tokio::test]
async fn the_release_function_refuses_containment_and_events_with_zero_calls() {
    let log = CallLog::default();
    let sdk = sdk_config().await;
    let deps = Deps {
        accounts: crate::support::accounts(&sdk, &log),
        clients: recorded_clients(&sdk, &log),
        config: crate::support::config(&[
            ("ISOLATION_INSTANCE_PROFILE", "isolation"),
            ("FUNCTION_MODE", "release"),
        ]),
    };
    let mut other_key = trigger_event(&["i-0123456789abcdef0"]);
    other_key["detail"]["changed-tag-keys"] = json!(["Owner"]);
    let mut removed = trigger_event(&["i-0123456789abcdef0"]);
    removed["detail"]["tags"] = json!({});
    for request in [
        json!({"instance_ids": ["i-0123456789abcdef0"], "reason": "r"}),
        json!({"action": "contain", "instance_ids": ["i-0123456789abcdef0"]}),
        trigger_event(&["i-0123456789abcdef0"]),
        other_key,
        // Removing the quarantine tag is no release request either.
        removed,
    ] {
        let err = handle(request.clone(), "req", &deps)
            .await
            .expect_err(&format!("the release function refuses {request}"));
        let message = err.to_string();
        assert!(message.contains("only releases"), "{message}");
        assert_eq!(
            lambda_runtime::Diagnostic::from(err).error_type,
            "InvalidEvent"
        );
    }
    assert_eq!(log.calls(), Vec::<String>::new());
}

#[tokio::test]
async fn a_released_instance_can_be_quarantined_again_as_a_new_incident() {
    let s = Scenario::build(Options {
        second_interface: true,
        profile: true,
        ..Options::default()
    })
    .await;
    let first = contain(&s, trigger_event(&[&s.instance_id]), &[])
        .await
        .0
        .expect("first containment");
    let first_incident = first.instances[0].incident.clone().unwrap();
    release(&s, release_request(&[&s.instance_id]))
        .await
        .0
        .expect("release");
    assert_eq!(
        s.account.interface_groups(&s.interfaces[1]).await,
        s.app_groups
    );
    let role = s
        .original_profile_arn
        .as_deref()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(
        role_policy(&s, &role).await,
        None,
        "the last instance out of the deny deletes the policy"
    );

    let second = contain(&s, trigger_event(&[&s.instance_id]), &[])
        .await
        .0
        .expect("second containment");
    let instance = &second.instances[0];
    assert_eq!(instance.outcome, InstanceOutcome::Contained);
    assert_eq!(
        instance.step(Step::RecordIncident).map(|s| s.status),
        Some(Status::Done),
        "a new claim: {instance:#?}"
    );
    let second_incident = instance.incident.clone().unwrap();
    assert_ne!(second_incident, first_incident);
    let (group_id, _, _) = s.isolation_group().await;
    for eni in &s.interfaces {
        assert_eq!(
            s.account.interface_groups(eni).await,
            vec![group_id.clone()]
        );
    }
    assert_eq!(
        s.account.profile_of(&s.instance_id).await,
        Some(s.isolation_profile.1.clone())
    );
    // A new set of snapshots for the new incident; the first set is kept.
    assert_eq!(
        s.account.snapshots_of(&s.instance_id).await.len(),
        2 * s.volumes.len()
    );
    assert_eq!(
        s.account
            .tag_of(&s.instance_id, "ec2-quarantine:incident")
            .await,
        Some(second_incident)
    );
    assert_eq!(
        record_status(&s, &s.instance_id).await.as_deref(),
        Some("contained")
    );
    // The new claim replaced the live record; the first incident's is kept beside it.
    let kept = kept_records(&s, &s.instance_id).await;
    assert_eq!(kept.len(), 1, "one copy of the first incident's record");
    let kept = &kept[0];
    assert_eq!(kept["status"].as_s().unwrap(), "released");
    assert_eq!(kept["incident"].as_s().unwrap(), &first_incident);
    assert_eq!(
        crate::support::recorded_interface_groups(kept),
        vec![vec![s.app_groups[0].clone()], s.app_groups.clone()]
    );
    let first_snapshots: Vec<String> = first.instances[0]
        .snapshots
        .iter()
        .map(|snapshot| snapshot.snapshot_id.clone())
        .collect();
    assert!(
        first_snapshots
            .iter()
            .all(|id| kept["snapshots"].as_s().unwrap().contains(id.as_str())),
        "the first incident's snapshots are named in the copy"
    );
    // And it can be released again, from the new record.
    let again = release(&s, release_request(&[&s.instance_id]))
        .await
        .0
        .expect("second release");
    assert_eq!(again.outcome, Outcome::Released);
    assert_eq!(
        s.account.interface_groups(&s.interfaces[1]).await,
        s.app_groups
    );
}

#[tokio::test]
async fn an_instance_that_had_no_profile_is_released_without_one() {
    let s = Scenario::build(Options {
        second_interface: true,
        ..Options::default()
    })
    .await;
    contain(&s, trigger_event(&[&s.instance_id]), &[])
        .await
        .0
        .expect("containment");
    assert_eq!(
        s.account.profile_of(&s.instance_id).await,
        Some(s.isolation_profile.1.clone())
    );
    let report = release(&s, release_request(&[&s.instance_id]))
        .await
        .0
        .expect("release");
    let instance = &report.instances[0];
    assert_eq!(
        instance
            .step(Step::RestoreInstanceProfile)
            .map(|s| s.status),
        Some(Status::Done),
        "{instance:#?}"
    );
    assert_eq!(s.account.profile_of(&s.instance_id).await, None);
    assert_eq!(
        instance.step(Step::RestoreCredentials).map(|s| s.status),
        Some(Status::Unchanged)
    );
}

#[tokio::test]
async fn a_record_whose_containment_is_still_running_is_not_released() {
    let s = Scenario::build(Options {
        profile: true,
        ..Options::default()
    })
    .await;
    contain(&s, trigger_event(&[&s.instance_id]), &[])
        .await
        .0
        .expect("containment");
    // As a containment that has claimed the instance and not yet finished leaves it.
    s.account
        .dynamodb
        .update_item()
        .table_name(INCIDENT_TABLE)
        .key("instance_id", AttributeValue::S(s.instance_id.clone()))
        .update_expression("SET #s = :s")
        .expression_attribute_names("#s", "status")
        .expression_attribute_values(":s", AttributeValue::S("containing".into()))
        .send()
        .await
        .unwrap();
    let isolated = s.account.interface_groups(&s.interfaces[0]).await;
    let (result, log) = release(&s, release_request(&[&s.instance_id])).await;
    let err = result.expect_err("a containment in progress is not released");
    assert!(err.contains("being contained"), "{err}");
    assert_no_change(&log);
    assert_eq!(s.account.interface_groups(&s.interfaces[0]).await, isolated);
    assert_eq!(
        record_status(&s, &s.instance_id).await.as_deref(),
        Some("containing")
    );
}

#[tokio::test]
async fn a_role_wide_revocation_keeps_its_issue_time_deny_after_the_release() {
    let s = Scenario::build(Options {
        profile: true,
        ..Options::default()
    })
    .await;
    let role = s
        .original_profile_arn
        .as_deref()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    contain(
        &s,
        trigger_event(&[&s.instance_id]),
        &[("REVOKE_INSTANCE_CREDENTIALS", "role-wide")],
    )
    .await
    .0
    .expect("containment");
    let before = role_policy(&s, &role).await.expect("the deny is there");
    let older = before["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|st| st["Sid"] == "Ec2QuarantineRevokeOlderSessions")
        .cloned()
        .expect("the issue-time statement");

    let report = release(&s, release_request(&[&s.instance_id]))
        .await
        .0
        .expect("release");
    let step = report.instances[0].step(Step::RestoreCredentials).unwrap();
    assert!(step.detail.contains("stays"), "{}", step.detail);
    let after = role_policy(&s, &role).await.expect("the policy stays");
    assert_eq!(denied_arns(&Some(after.clone())), Vec::<String>::new());
    assert_eq!(after["Statement"], json!([older]));
}

#[tokio::test]
async fn a_group_at_its_maximum_size_leaves_the_release_partial_and_a_retry_finishes_it() {
    let s = Scenario::build(Options::everything()).await;
    contain(&s, trigger_event(&[&s.instance_id]), &[])
        .await
        .0
        .expect("containment");
    let group = s.auto_scaling_group.clone().unwrap();
    let set_max = |max: i32| {
        s.account
            .autoscaling
            .update_auto_scaling_group()
            .auto_scaling_group_name(&group)
            .max_size(max)
            .send()
    };
    let desired = s
        .account
        .autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(&group)
        .send()
        .await
        .unwrap()
        .auto_scaling_groups()[0]
        .desired_capacity()
        .unwrap();
    set_max(desired).await.unwrap();

    let (result, _) = release(&s, release_request(&[&s.instance_id])).await;
    let err = result.expect_err("the group cannot take the instance");
    assert!(err.contains("maximum size"), "{err}");
    // Everything else is back; the group is not.
    assert_eq!(
        s.account.interface_groups(&s.interfaces[1]).await,
        s.app_groups
    );
    assert_eq!(
        s.account.profile_of(&s.instance_id).await,
        s.original_profile_arn
    );
    assert_eq!(
        record_status(&s, &s.instance_id).await.as_deref(),
        Some("release-partial")
    );
    let a = &s.account;
    assert_eq!(
        a.tag_of(&s.instance_id, "ec2-quarantine:status")
            .await
            .as_deref(),
        Some("release-partial")
    );
    assert!(
        a.tag_of(&s.instance_id, "ec2-quarantine:incident")
            .await
            .is_some(),
        "a partial release keeps the incident"
    );

    set_max(desired + 1).await.unwrap();
    let report = release(&s, release_request(&[&s.instance_id]))
        .await
        .0
        .expect("the retry finishes the release");
    let instance = &report.instances[0];
    assert_eq!(
        instance.step(Step::AttachAutoScaling).map(|s| s.status),
        Some(Status::Done)
    );
    assert_eq!(
        instance
            .step(Step::RestoreNetworkInterfaces)
            .map(|s| s.status),
        Some(Status::Unchanged),
        "what the first attempt restored is not written again"
    );
    assert_eq!(
        record_status(&s, &s.instance_id).await.as_deref(),
        Some("released")
    );
}

#[tokio::test]
async fn recorded_connection_tracking_timeouts_are_put_back() {
    let s = Scenario::build(Options {
        second_interface: true,
        ..Options::default()
    })
    .await;
    contain(&s, trigger_event(&[&s.instance_id]), &[])
        .await
        .0
        .expect("containment");
    // The emulator shows no connection tracking configuration, so nothing was recorded; write
    // into the record what DescribeInstances shows on AWS for the first interface.
    let key = AttributeValue::S(s.instance_id.clone());
    let item = s
        .account
        .dynamodb
        .get_item()
        .table_name(INCIDENT_TABLE)
        .key("instance_id", key.clone())
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    let mut interfaces: Value =
        serde_json::from_str(item.item().unwrap()["original_interfaces"].as_s().unwrap()).unwrap();
    assert!(interfaces[0].get("connection_tracking").is_none());
    interfaces[0]["connection_tracking"] = json!({
        "tcp_established_timeout": 432000, "udp_stream_timeout": 180, "udp_timeout": 30
    });
    s.account
        .dynamodb
        .update_item()
        .table_name(INCIDENT_TABLE)
        .key("instance_id", key)
        .update_expression("SET original_interfaces = :i")
        .expression_attribute_values(":i", AttributeValue::S(interfaces.to_string()))
        .send()
        .await
        .unwrap();

    let (result, log) = release(&s, release_request(&[&s.instance_id])).await;
    let report = result.expect("release");
    let first = interfaces[0]["network_interface_id"].as_str().unwrap();
    let second = interfaces[1]["network_interface_id"].as_str().unwrap();
    assert!(
        log.interface_changes(first)
            .contains(&InterfaceChange::ConnectionTracking {
                eni: first.to_owned(),
                timeouts: (432000, 180, 30)
            }),
        "{:?}",
        log.interface_changes(first)
    );
    assert!(
        !log.interface_changes(second)
            .iter()
            .any(|c| matches!(c, InterfaceChange::ConnectionTracking { .. })),
        "nothing recorded, nothing written"
    );
    let detail = &report.instances[0]
        .step(Step::RestoreNetworkInterfaces)
        .unwrap()
        .detail;
    assert!(detail.contains("conntrack 432000/180/30"), "{detail}");
    assert!(detail.contains("were not recorded"), "{detail}");
}

/// Issue 12, point 7: without a record of the timeouts, a release undoes only what containment
/// does, and says so.
#[tokio::test]
async fn unrecorded_timeouts_go_back_to_awss_defaults_only_where_containment_set_them() {
    let s = Scenario::build(Options {
        second_interface: true,
        ..Options::default()
    })
    .await;
    // The emulator reports no timeouts, so containment records none.
    contain(&s, trigger_event(&[&s.instance_id]), &[])
        .await
        .0
        .expect("containment");
    let (ours, theirs) = (&s.interfaces[0], &s.interfaces[1]);
    // As AWS would report them now: the first with containment's timeouts, the second with
    // timeouts someone set after containment.
    let faults = Faults::default();
    faults
        .connection_tracking(ours, (60, 60, 30))
        .connection_tracking(theirs, (600, 60, 30));

    let (result, log) = release_with(
        &s,
        release_request(&[&s.instance_id]),
        &with_faults(&s.account.sdk, &faults),
    )
    .await;
    let report = result.expect("release");
    let timeouts_sent = |eni: &str| -> Vec<InterfaceChange> {
        log.interface_changes(eni)
            .into_iter()
            .filter(|c| matches!(c, InterfaceChange::ConnectionTracking { .. }))
            .collect()
    };
    assert_eq!(
        timeouts_sent(ours),
        [InterfaceChange::ConnectionTracking {
            eni: ours.clone(),
            timeouts: (432000, 180, 30)
        }]
    );
    assert_eq!(
        timeouts_sent(theirs),
        [],
        "not containment's timeouts: left"
    );
    let detail = &report.instances[0]
        .step(Step::RestoreNetworkInterfaces)
        .unwrap()
        .detail;
    assert!(
        detail.contains(&format!("{ours} conntrack 432000/180/30 (AWS's defaults")),
        "{detail}"
    );
    assert!(
        detail.contains(&format!(
            "{theirs}: connection tracking timeouts not recorded; left at 600/60/30"
        )),
        "{detail}"
    );
}

#[tokio::test]
async fn an_instance_whose_interfaces_cannot_be_restored_gets_no_traffic_or_auto_scaling_back() {
    let s = Scenario::build(Options::everything()).await;
    contain(&s, trigger_event(&[&s.instance_id]), &[])
        .await
        .0
        .expect("containment");
    let isolated = restorable(&s).await;
    let faults = Faults::default();
    faults.deny("ModifyNetworkInterfaceAttribute", "UnauthorizedOperation");
    let sdk = with_faults(&s.account.sdk, &faults);

    let (result, log) = release_with(&s, release_request(&[&s.instance_id]), &sdk).await;
    let err = result.expect_err("the release is partial");
    assert!(err.contains("UnauthorizedOperation"), "{err}");
    for operation in [
        "AttachInstances",
        "RegisterTargets",
        "RegisterInstancesWithLoadBalancer",
    ] {
        assert_eq!(log.count(operation), 0, "{operation} in {:?}", log.calls());
    }
    let now = restorable(&s).await;
    assert_eq!(now.interface_groups, isolated.interface_groups);
    assert_eq!(now.auto_scaling_group, None);
    assert_eq!(now.targets, isolated.targets);
    assert_eq!(now.classic, isolated.classic);
    assert_eq!(
        record_status(&s, &s.instance_id).await.as_deref(),
        Some("release-partial")
    );
}

#[tokio::test]
async fn a_released_instance_stays_released_when_another_instance_of_its_role_is_contained() {
    let s = Scenario::build(Options {
        profile: true,
        ..Options::default()
    })
    .await;
    let (later, kept) = (neighbour(&s).await, neighbour(&s).await);
    contain(&s, trigger_event(&[&s.instance_id, &kept]), &[])
        .await
        .0
        .expect("both contained");
    release(&s, release_request(&[&s.instance_id]))
        .await
        .0
        .expect("released");
    // The next containment under the same role writes the role's revocation list into the
    // policy: the released instance must have left the list, not only the policy.
    contain(&s, trigger_event(&[&later]), &[])
        .await
        .0
        .expect("a third contained");
    let role = s
        .original_profile_arn
        .as_deref()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let mut expected = vec![instance_arn(&kept), instance_arn(&later)];
    expected.sort();
    assert_eq!(denied_arns(&role_policy(&s, &role).await), expected);
}

/// The security account's functions, for a scenario built in a member account: containment with
/// the member role, release with the member release role (`None`: the stack has no member roles).
fn security_functions(
    s: &Scenario,
    sdk: &aws_config::SdkConfig,
    (contain_role, release_role): (&str, Option<&str>),
    group_name: &str,
) -> (Deps, Deps, CallLog) {
    let profile = crate::accounts::security_profile_arn(s);
    let deps = |extra: &[(&str, &str)], log: &CallLog| {
        let mut vars = vec![
            ("ISOLATION_INSTANCE_PROFILE", profile.as_str()),
            ("ISOLATION_SECURITY_GROUP_NAME", group_name),
        ];
        vars.extend_from_slice(extra);
        Deps {
            clients: recorded_clients(sdk, log),
            config: s.config(&vars),
            accounts: crate::support::accounts(sdk, log),
        }
    };
    let release_log = CallLog::default();
    let mut release_vars = vec![("FUNCTION_MODE", "release")];
    release_vars.extend(release_role.map(|role| ("MEMBER_ROLE_NAME", role)));
    (
        deps(&[("MEMBER_ROLE_NAME", contain_role)], &CallLog::default()),
        deps(&release_vars, &release_log),
        release_log,
    )
}

#[tokio::test]
async fn a_members_instance_is_released_in_its_account_with_the_member_release_role() {
    use crate::accounts::{member_role, tag_event, MEMBER};
    let member = crate::support::scenario::Account::other(MEMBER).await;
    let (contain_role, release_role) = (member_role(&member).await, member_role(&member).await);
    let s = Scenario::build_in(member, Options::everything()).await;
    let before = restorable(&s).await;
    let security = crate::support::scenario::Account::new().await;
    let faults = Faults::default();
    let sdk = with_faults(&security.sdk, &faults);
    let group_name = crate::support::unique("iso");
    let (contain, release, _) =
        security_functions(&s, &sdk, (&contain_role, Some(&release_role)), &group_name);
    handle(tag_event(MEMBER, &s.instance_id), "contain", &contain)
        .await
        .unwrap_or_else(|e| panic!("contained in the member: {e}"));
    assert_ne!(restorable(&s).await, before, "contained");

    // The request names no account: the record does. The containment's member role is refused
    // to the release, so only the member release role can have reached the account.
    let contain_role_name: &'static str = Box::leak(
        contain_role
            .rsplit('/')
            .next()
            .unwrap()
            .to_owned()
            .into_boxed_str(),
    );
    faults.deny_when("AssumeRole", contain_role_name, "AccessDenied");
    let report = handle(release_request(&[&s.instance_id]), "release", &release)
        .await
        .unwrap_or_else(|e| panic!("released in the member: {e}"));
    assert_eq!(report.outcome, Outcome::Released, "{}", report.to_json());
    assert_eq!(
        restorable(&s).await,
        before,
        "the member's instance is whole again"
    );
    let original_role = s
        .original_profile_arn
        .as_deref()
        .and_then(|arn| arn.rsplit('/').next())
        .unwrap();
    assert_eq!(
        crate::credentials::role_policy(
            &s.account,
            original_role,
            "ec2-quarantine-revoke-instance-credentials"
        )
        .await,
        None,
        "the deny is lifted from the member's role"
    );
    let assumed = faults
        .timeline()
        .iter()
        .filter(|c| c.operation == "AssumeRole")
        .count();
    assert_eq!(
        assumed, 2,
        "the member role to contain, the release role to release"
    );
}

#[tokio::test]
async fn without_a_member_release_role_a_members_instance_is_refused_with_no_change() {
    use crate::accounts::{member_role, tag_event, MEMBER};
    let member = crate::support::scenario::Account::other(MEMBER).await;
    let contain_role = member_role(&member).await;
    let s = Scenario::build_in(
        member,
        Options {
            profile: true,
            ..Options::default()
        },
    )
    .await;
    let security = crate::support::scenario::Account::new().await;
    let group_name = crate::support::unique("iso");
    let (contain, release, release_log) =
        security_functions(&s, &security.sdk, (&contain_role, None), &group_name);
    handle(tag_event(MEMBER, &s.instance_id), "contain", &contain)
        .await
        .unwrap_or_else(|e| panic!("contained in the member: {e}"));
    let contained = restorable(&s).await;

    let message = handle(release_request(&[&s.instance_id]), "release", &release)
        .await
        .expect_err("the release is refused")
        .to_string();
    assert!(
        message.contains(MEMBER) && message.contains("ReleaseFunctionRoleArn"),
        "{message}"
    );
    assert_no_change(&release_log);
    assert_eq!(restorable(&s).await, contained, "still contained");
}

#[tokio::test]
async fn instances_of_a_role_whose_deny_was_refused_are_released_without_writing_it() {
    let s = Scenario::build(Options {
        profile: true,
        ..Options::default()
    })
    .await;
    let other = neighbour(&s).await;
    // As for a role that did not opt in under RevocableRoles=tagged: both ARNs are listed, the
    // deny is refused, and the role has no policy.
    let faults = Faults::default();
    faults.deny("PutRolePolicy", "AccessDenied");
    let sdk = with_faults(&s.account.sdk, &faults);
    let (contained, _) =
        crate::containment::contain_with(&s, trigger_event(&[&s.instance_id, &other]), &[], &sdk)
            .await;
    contained.expect_err("the refused deny fails the containment");
    // The scenarios give role and profile one name.
    let role = s
        .original_profile_arn
        .as_deref()
        .and_then(|arn| arn.rsplit('/').next())
        .unwrap()
        .to_owned();
    assert_eq!(role_policy(&s, &role).await, None);

    let (released, log) = release(&s, release_request(&[&s.instance_id])).await;
    let report = released.expect("released");
    assert_eq!(report.outcome, Outcome::Released, "{}", report.to_json());
    assert_eq!(
        report.instances[0]
            .step(Step::RestoreCredentials)
            .map(|step| step.status),
        Some(Status::Unchanged)
    );
    assert_eq!(
        log.count("PutRolePolicy"),
        0,
        "the other ARN is not written"
    );
    assert_eq!(role_policy(&s, &role).await, None);
}

#[tokio::test]
async fn a_released_record_is_kept_whole_and_a_record_changed_during_the_release_is_not_marked() {
    let s = Scenario::build(Options {
        profile: true,
        ..Options::default()
    })
    .await;
    contain(&s, trigger_event(&[&s.instance_id]), &[])
        .await
        .0
        .expect("contained");
    release(&s, release_request(&[&s.instance_id]))
        .await
        .0
        .expect("released");
    let mut live = crate::record::record(&s, &s.instance_id).await;
    let kept = kept_records(&s, &s.instance_id).await;
    assert_eq!(kept.len(), 1);
    let mut kept = kept[0].clone();
    live.remove("instance_id");
    kept.remove("instance_id");
    assert_eq!(
        kept, live,
        "the copy holds every attribute of the released record"
    );

    // Quarantined again; a release whose instance is contained once more while it runs leaves
    // the record as the containment finished it, and keeps no copy.
    contain(&s, trigger_event(&[&s.instance_id]), &[])
        .await
        .0
        .expect("contained again");
    let faults = Faults::default();
    let restoring = crate::support::faults::Gate::default();
    // Held after the release has read the record, before it marks it.
    faults.hold("ModifyNetworkInterfaceAttribute", &restoring);
    let sdk = with_faults(&s.account.sdk, &faults);
    let releasing = release_with(&s, release_request(&[&s.instance_id]), &sdk);
    let meanwhile = async {
        restoring.arrived().await;
        // A redelivered containment event: it finishes the record again, which moves its
        // updated_at (the status stays contained).
        contain(&s, trigger_event(&[&s.instance_id]), &[])
            .await
            .0
            .expect("contained during the release");
        restoring.open();
    };
    let ((result, _), ()) = tokio::join!(releasing, meanwhile);
    let message = result.expect_err("the release cannot mark the record");
    assert!(
        message.contains("the record changed during the release"),
        "{message}"
    );
    assert_eq!(
        record_status(&s, &s.instance_id).await.as_deref(),
        Some("contained")
    );
    assert_eq!(
        kept_records(&s, &s.instance_id).await.len(),
        1,
        "no second copy"
    );
}

/// The copies releases kept of `instance_id`'s records.
async fn kept_records(
    s: &Scenario,
    instance_id: &str,
) -> Vec<std::collections::HashMap<String, AttributeValue>> {
    s.account
        .dynamodb
        .scan()
        .table_name(INCIDENT_TABLE)
        .filter_expression("begins_with(instance_id, :prefix)")
        .expression_attribute_values(
            ":prefix",
            AttributeValue::S(format!("released#{instance_id}#")),
        )
        .send()
        .await
        .unwrap()
        .items()
        .to_vec()
}

#[tokio::test]
async fn a_refused_lift_names_the_tag_that_opts_the_role_in_and_leaves_the_release_partial() {
    let s = Scenario::build(Options {
        profile: true,
        ..Options::default()
    })
    .await;
    contain(&s, trigger_event(&[&s.instance_id]), &[])
        .await
        .0
        .expect("contained");
    // What IAM answers a stack deployed with RevocableRoles=tagged once the tag is gone.
    let faults = Faults::default();
    faults.deny("DeleteRolePolicy", "AccessDenied");
    let sdk = with_faults(&s.account.sdk, &faults);
    let (result, _) = release_with(&s, release_request(&[&s.instance_id]), &sdk).await;
    let message = result.expect_err("the release is partial");
    let report: Value = serde_json::from_str(&message).expect("the report");
    let lifted = report["instances"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|step| step["step"] == "restore-credentials")
        .expect("the step")
        .clone();
    assert_eq!(lifted["status"], "failed");
    assert!(
        lifted["detail"]
            .as_str()
            .unwrap()
            .contains("ec2-quarantine:revocable=true"),
        "{lifted}"
    );
    assert_eq!(
        record_status(&s, &s.instance_id).await.as_deref(),
        Some("release-partial")
    );
}
