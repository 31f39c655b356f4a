use std::time::Instant;

use ec2_quarantine::report::{InstanceOutcome, Outcome, Status, Step};
use futures::future::join_all;
use futures::stream::{self, StreamExt};

use crate::containment::{contain_with, trigger_event};
use crate::support::scenario::{target_group, Options, Scenario};

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

/// Target groups in VPCs other than the instance's: an account with thousands of them.
const FOREIGN_TARGET_GROUPS: usize = 2_000;
/// Groups created at once: the emulator serves one request at a time, so more only queue.
const CREATE_BATCH: usize = 16;

/// Issue 12, point 5: with thousands of target groups in the region, only those of the
/// instance's VPC are read, and the instance still leaves every one it is registered in.
#[tokio::test]
async fn among_two_thousand_target_groups_only_those_of_the_instances_vpc_are_read() {
    let s = Scenario::build(Options {
        load_balancers: true,
        ..Options::default()
    })
    .await;
    let other_vpc = s.account.vpc("10.50.0.0/16").await;
    let created = Instant::now();
    let foreign: Vec<String> = stream::iter(0..FOREIGN_TARGET_GROUPS)
        .map(|i| target_group(&s.account, &other_vpc, 1024 + i as i32 % 1000, "instance"))
        .buffer_unordered(CREATE_BATCH)
        .collect()
        .await;
    // A group of the instance's VPC that does not hold it is read too, and left alone.
    let idle_own = target_group(&s.account, &s.vpc_id, 9000, "instance").await;
    eprintln!(
        "created {FOREIGN_TARGET_GROUPS} target groups in {:.1} s",
        created.elapsed().as_secs_f64()
    );

    let contained = Instant::now();
    let (result, log) = contain_with(
        &s,
        trigger_event(&[&s.instance_id]),
        &[PATIENT_CLAIM],
        &patient(&s),
    )
    .await;
    eprintln!(
        "contained among {} target groups in {:.1} s",
        FOREIGN_TARGET_GROUPS + 4,
        contained.elapsed().as_secs_f64()
    );
    let report = result.expect("contained");
    let step = report.instances[0]
        .step(Step::DeregisterTargetGroups)
        .expect("the target-group step");
    assert_eq!(step.status, Status::Done, "{}", step.detail);

    let unread: Vec<&String> = foreign
        .iter()
        .filter(|arn| log.target_health_reads(arn) > 0)
        .collect();
    assert!(unread.is_empty(), "groups of another VPC read: {unread:?}");
    let own = s
        .target_groups
        .iter()
        .map(|(arn, _)| arn)
        .chain(&s.ip_target_group)
        .chain([&idle_own]);
    for arn in own {
        assert!(
            log.target_health_reads(arn) > 0,
            "{arn} of the instance's VPC read"
        );
    }
    // Read back through the SDK: the instance (and its address) left every group it was in.
    let private_ip = s
        .account
        .instance(&s.instance_id)
        .await
        .private_ip_address()
        .unwrap()
        .to_owned();
    let registered = s
        .target_groups
        .iter()
        .map(|(arn, _)| (arn, s.instance_id.as_str()))
        .chain(
            s.ip_target_group
                .iter()
                .map(|arn| (arn, private_ip.as_str())),
        );
    for (arn, target) in registered {
        let targets = s
            .account
            .elbv2
            .describe_target_health()
            .target_group_arn(arn)
            .send()
            .await
            .unwrap();
        let still: Vec<_> = targets
            .target_health_descriptions()
            .iter()
            .filter(|d| d.target().and_then(|t| t.id()) == Some(target))
            .filter(|d| {
                d.target_health().and_then(|h| h.state())
                    != Some(&aws_sdk_elasticloadbalancingv2::types::TargetHealthStateEnum::Draining)
            })
            .collect();
        assert!(
            still.is_empty(),
            "{target} still registered in {arn}: {still:?}"
        );
    }
}
