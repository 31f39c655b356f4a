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
use crate::support::scenario::{Options, Scenario};
use crate::support::{recorded_clients, sdk_config, CallLog, INCIDENT_TABLE};

const POLICY: &str = "ec2-quarantine-revoke-instance-credentials";

fn instance_arn(instance_id: &str) -> String {
    format!("arn:aws:ec2:us-east-1:123456789012:instance/{instance_id}")
}

fn release_request(instance_ids: &[&str]) -> Value {
    json!({"action": "release", "instance_ids": instance_ids, "reason": "IR-42 closed by alice: reimaged"})
}

/// Runs the handler of the release function (`FUNCTION_MODE=release`) as Lambda would.
async fn release(s: &Scenario, request: Value) -> (Result<Report, String>, CallLog) {
    let log = CallLog::default();
    let deps = Deps {
        clients: recorded_clients(&s.account.sdk, &log),
        config: s.config(&[("FUNCTION_MODE", "release")]),
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
    let deps = Deps {
        clients: recorded_clients(&sdk_config().await, &log),
        config: crate::support::config(&[("ISOLATION_INSTANCE_PROFILE", "isolation")]),
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
    let deps = Deps {
        clients: recorded_clients(&sdk_config().await, &log),
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
