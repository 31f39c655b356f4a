//! `DRY_RUN=true` and `"dry_run": true`: every read made, every change a real run would make
//! listed with its target, and not one mutating call. The account is read back through the SDK
//! before and after, and must be the same.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_ec2::types::InstanceAttributeName;
use ec2_quarantine::report::{InstanceOutcome, Outcome, Report, Status, Step, StepReport};
use serde_json::{json, Value};

use crate::containment::{contain, contain_as, contain_with, trigger_event};
use crate::support::aws_like::Behaviour;
use crate::support::scenario::{Options, Scenario};
use crate::support::{CallLog, INCIDENT_TABLE};

fn direct(instance_id: &str, dry_run: bool) -> Value {
    json!({"instance_ids": [instance_id], "reason": "dry-run test", "dry_run": dry_run})
}

/// Every call that is not a read, as `Service.Operation`.
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

/// What containment would change, as the account shows it from outside the function.
#[derive(Debug, PartialEq)]
struct Observed {
    interface_groups: Vec<Vec<String>>,
    isolation_groups: usize,
    interim_groups: usize,
    profile: Option<String>,
    role_policies: Vec<String>,
    auto_scaling_members: Vec<String>,
    target_health: BTreeMap<String, Vec<String>>,
    classic_instances: Vec<String>,
    attributes: Vec<String>,
    delete_on_termination: Vec<Option<bool>>,
    snapshots: Vec<(String, String)>,
    own_tags: Vec<String>,
    record: Option<std::collections::HashMap<String, AttributeValue>>,
}

async fn observe(s: &Scenario) -> Observed {
    let a = &s.account;
    let mut interface_groups = Vec::new();
    for eni in &s.interfaces {
        interface_groups.push(a.interface_groups(eni).await);
    }
    let role_policies = match &s.original_profile_arn {
        Some(arn) => a
            .iam
            .list_role_policies()
            .role_name(arn.rsplit('/').next().unwrap())
            .send()
            .await
            .unwrap()
            .policy_names()
            .to_vec(),
        None => Vec::new(),
    };
    let auto_scaling_members = a
        .autoscaling
        .describe_auto_scaling_instances()
        .instance_ids(&s.instance_id)
        .send()
        .await
        .unwrap()
        .auto_scaling_instances()
        .iter()
        .map(|i| {
            format!(
                "{:?} {:?}",
                i.auto_scaling_group_name(),
                i.lifecycle_state()
            )
        })
        .collect();
    let mut target_health = BTreeMap::new();
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
        let targets = health
            .target_health_descriptions()
            .iter()
            .map(|d| {
                let t = d.target().unwrap();
                format!("{}:{:?}", t.id().unwrap_or_default(), t.port())
            })
            .collect();
        target_health.insert(arn, targets);
    }
    let classic_instances = match &s.classic_load_balancer {
        Some(name) => a
            .elb
            .describe_load_balancers()
            .load_balancer_names(name)
            .send()
            .await
            .unwrap()
            .load_balancer_descriptions()[0]
            .instances()
            .iter()
            .filter_map(|i| i.instance_id().map(str::to_owned))
            .collect(),
        None => Vec::new(),
    };
    let mut attributes = Vec::new();
    for name in [
        InstanceAttributeName::DisableApiTermination,
        InstanceAttributeName::DisableApiStop,
        InstanceAttributeName::InstanceInitiatedShutdownBehavior,
    ] {
        attributes.push(a.attribute(&s.instance_id, name).await);
    }
    let instance = a.instance(&s.instance_id).await;
    let record = a
        .dynamodb
        .get_item()
        .table_name(INCIDENT_TABLE)
        .key("instance_id", AttributeValue::S(s.instance_id.clone()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item()
        .cloned();
    Observed {
        interface_groups,
        isolation_groups: a
            .groups_named(&s.vpc_id, &s.isolation_group_name)
            .await
            .len(),
        interim_groups: a
            .groups_named(&s.vpc_id, &format!("{}-interim", s.isolation_group_name))
            .await
            .len(),
        profile: a.profile_of(&s.instance_id).await,
        role_policies,
        auto_scaling_members,
        target_health,
        classic_instances,
        attributes,
        delete_on_termination: instance
            .block_device_mappings()
            .iter()
            .map(|m| m.ebs().and_then(|e| e.delete_on_termination()))
            .collect(),
        snapshots: a.snapshots_of(&s.instance_id).await,
        own_tags: instance
            .tags()
            .iter()
            .filter_map(|t| t.key())
            .filter(|k| k.starts_with("ec2-quarantine:"))
            .map(str::to_owned)
            .collect(),
        record,
    }
}

fn step(report: &Report, step: Step) -> &StepReport {
    report.instances[0]
        .step(step)
        .unwrap_or_else(|| panic!("{step:?} is in the report"))
}

/// `(action, target)` of each change a step lists.
fn planned(report: &Report, which: Step) -> Vec<(String, String)> {
    let s = step(report, which);
    s.changes
        .iter()
        .map(|c| (c.action.clone(), c.target.clone()))
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, t)| (a.to_string(), t.to_string()))
        .collect()
}

#[tokio::test]
async fn a_dry_run_reads_everything_lists_every_change_and_changes_nothing() {
    let s = Scenario::build(Options::everything()).await;
    let before = observe(&s).await;
    // The scenario holds everything a containment changes, or "unchanged" would prove nothing.
    assert_eq!(before.profile, s.original_profile_arn);
    assert_eq!(before.auto_scaling_members.len(), 1);
    assert!(before.target_health.values().all(|t| t.len() == 1));
    assert_eq!(before.classic_instances, vec![s.instance_id.clone()]);
    assert_eq!(before.attributes, ["false", "false", "terminate"]);
    assert_eq!(before.delete_on_termination, [Some(true), Some(true)]);
    assert_eq!((before.isolation_groups, before.snapshots.len()), (0, 0));
    assert!(before.record.is_none());

    let (result, log) = contain_with(&s, direct(&s.instance_id, true), &[], &s.account.sdk).await;
    let report = result.expect("a dry run succeeds");

    assert_eq!(mutating(&log), Vec::<String>::new(), "no mutating call");
    assert_eq!(observe(&s).await, before, "the account is unchanged");
    for read in [
        "DescribeInstances",
        "DescribeIamInstanceProfileAssociations",
        "GetItem",
        "DescribeSecurityGroups",
        "GetInstanceProfile",
        "GetRolePolicy",
        "DescribeAutoScalingInstances",
        "DescribeTargetGroups",
        "DescribeTargetHealth",
        "DescribeLoadBalancers",
        "DescribeInstanceAttribute",
        "DescribeSnapshots",
    ] {
        assert!(log.count(read) > 0, "{read} was read: {:?}", log.calls());
    }

    assert_eq!(report.outcome, Outcome::DryRun);
    let instance = &report.instances[0];
    assert_eq!(instance.outcome, InstanceOutcome::DryRun);
    let id = s.instance_id.as_str();
    assert_eq!(
        planned(&report, Step::RecordIncident),
        pairs(&[("PutItem", &format!("{INCIDENT_TABLE}/{id}"))])
    );
    let created: Vec<(String, String)> = planned(&report, Step::IsolationGroup)
        .into_iter()
        .filter(|(action, _)| action == "CreateSecurityGroup")
        .collect();
    assert_eq!(
        created,
        pairs(&[
            (
                "CreateSecurityGroup",
                &format!("ec2-quarantine-isolation in {}", s.vpc_id)
            ),
            (
                "CreateSecurityGroup",
                &format!("ec2-quarantine-isolation-interim in {}", s.vpc_id)
            ),
        ])
    );
    // Per interface: the timeouts, the interim group, the isolation group.
    let moves = step(&report, Step::MoveNetworkInterfaces);
    assert_eq!(moves.status, Status::Planned);
    let mut expected = Vec::new();
    for eni in &s.interfaces {
        for _ in 0..3 {
            expected.push(("ModifyNetworkInterfaceAttribute", eni.as_str()));
        }
    }
    assert_eq!(
        planned(&report, Step::MoveNetworkInterfaces),
        pairs(&expected)
    );
    assert!(
        moves.changes[1].detail.contains(&s.app_groups[0]),
        "the move says from which groups: {}",
        moves.changes[1].detail
    );
    let profile = step(&report, Step::ReplaceInstanceProfile);
    assert_eq!(profile.changes.len(), 1);
    assert_eq!(
        profile.changes[0].action,
        "ReplaceIamInstanceProfileAssociation"
    );
    assert!(profile.changes[0].target.starts_with("iip-assoc-"));
    assert!(profile.changes[0]
        .detail
        .contains(s.original_profile_arn.as_deref().unwrap()));
    let role = s
        .original_profile_arn
        .as_deref()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap();
    assert_eq!(
        planned(&report, Step::RevokeCredentials),
        pairs(&[("PutRolePolicy", role)])
    );
    assert_eq!(
        planned(&report, Step::DetachAutoScaling),
        pairs(&[("DetachInstances", s.auto_scaling_group.as_deref().unwrap())])
    );
    let mut deregistered = planned(&report, Step::DeregisterTargetGroups);
    deregistered.sort();
    let mut groups: Vec<(String, String)> = s
        .target_groups
        .iter()
        .map(|(arn, _)| ("DeregisterTargets".to_owned(), arn.clone()))
        .chain(
            s.ip_target_group
                .clone()
                .map(|arn| ("DeregisterTargets".to_owned(), arn)),
        )
        .collect();
    groups.sort();
    assert_eq!(deregistered, groups);
    assert_eq!(
        planned(&report, Step::DeregisterClassicLoadBalancers),
        pairs(&[(
            "DeregisterInstancesFromLoadBalancer",
            s.classic_load_balancer.as_deref().unwrap()
        )])
    );
    assert_eq!(
        planned(&report, Step::ProtectInstance),
        pairs(&[("ModifyInstanceAttribute", id); 3])
    );
    for which in [Step::KeepVolumes, Step::SnapshotVolumes] {
        let listed = step(&report, which);
        assert_eq!(listed.changes.len(), 1, "{which:?}");
        for volume in &s.volumes {
            assert!(
                listed.changes[0].detail.contains(volume.as_str()),
                "{which:?} names {volume}: {}",
                listed.changes[0].detail
            );
        }
    }
    assert_eq!(
        planned(&report, Step::SnapshotVolumes),
        pairs(&[("CreateSnapshots", id)])
    );
    // The instance's tags, and the marks on every interface and volume.
    let marked = s
        .interfaces
        .iter()
        .chain(&s.volumes)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    assert_eq!(
        planned(&report, Step::TagInstance),
        pairs(&[("CreateTags", id), ("CreateTags", &marked)])
    );
    for listed in &instance.steps {
        assert_eq!(listed.status, Status::Planned, "{listed:?}");
    }

    // The plan is what a real run then does: the same calls, the same interfaces. Over the
    // emulator as it is: under AWS's lag a real run sends a call again while a group it just
    // created becomes visible, the same change once more, which a plan lists once.
    let (real, real_log) = contain_as(
        &s,
        direct(&s.instance_id, false),
        &[],
        &s.account.sdk,
        Behaviour::emulator_as_is(),
    )
    .await;
    assert_eq!(
        real.expect("the real run succeeds").outcome,
        Outcome::Contained
    );
    let mut done: Vec<String> = mutating(&real_log)
        .into_iter()
        .filter(|call| !call.starts_with("DynamoDB."))
        .map(|call| call.rsplit('.').next().unwrap().to_owned())
        .collect();
    done.sort();
    let mut plan: Vec<String> = instance
        .steps
        .iter()
        .flat_map(|s| &s.changes)
        .map(|c| c.action.clone())
        .filter(|action| action != "PutItem")
        .collect();
    plan.sort();
    assert_eq!(plan, done, "the plan names the calls a real run makes");
    for eni in &s.interfaces {
        assert_eq!(real_log.interface_changes(eni).len(), 3, "{eni}");
    }
}

#[tokio::test]
async fn dry_run_true_in_the_configuration_holds_for_tag_events_findings_and_against_the_event() {
    let s = Scenario::build(Options::default()).await;
    let before = observe(&s).await;
    let mut finding = crate::guardduty::sample("guardduty-instance-high.json");
    finding["detail"]["resource"]["instanceDetails"]["instanceId"] = json!(s.instance_id);
    let events = [
        trigger_event(&[&s.instance_id]),
        finding,
        // A deployment that promises a dry run keeps it, whatever a caller asks for.
        direct(&s.instance_id, false),
    ];
    for event in events {
        let (result, log) =
            contain_with(&s, event.clone(), &[("DRY_RUN", "true")], &s.account.sdk).await;
        let report = result.expect("a dry run succeeds");
        assert_eq!(report.outcome, Outcome::DryRun, "{event}");
        assert_eq!(mutating(&log), Vec::<String>::new(), "{event}");
        assert!(log.count("DescribeInstances") > 0);
        assert_eq!(
            planned(&report, Step::MoveNetworkInterfaces).len(),
            3,
            "{event}"
        );
    }
    assert_eq!(observe(&s).await, before, "the account is unchanged");
}

#[tokio::test]
async fn a_dry_run_of_a_contained_instance_reports_everything_in_place() {
    let s = Scenario::build(Options::everything()).await;
    let (first, _) = contain(&s, trigger_event(&[&s.instance_id]), &[]).await;
    assert_eq!(
        first.expect("containment succeeds").outcome,
        Outcome::Contained
    );
    let before = observe(&s).await;

    let (result, log) = contain_with(&s, direct(&s.instance_id, true), &[], &s.account.sdk).await;
    let report = result.expect("a dry run succeeds");
    assert_eq!(mutating(&log), Vec::<String>::new());
    assert_eq!(observe(&s).await, before);
    assert_eq!(report.outcome, Outcome::DryRun);
    for listed in &report.instances[0].steps {
        assert_eq!(
            listed.status,
            Status::Unchanged,
            "{:?}: {}",
            listed.step,
            listed.detail
        );
        assert!(listed.changes.is_empty(), "{listed:?}");
    }
    assert_eq!(
        report.instances[0].snapshots.len(),
        s.volumes.len(),
        "the snapshots already taken are reported"
    );
}
