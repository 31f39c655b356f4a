use aws_sdk_ec2::types::InstanceAttributeName;
use ec2_quarantine::handler::{handle, Deps};
use ec2_quarantine::report::{InstanceOutcome, Outcome, Report, Status, Step};
use serde_json::{json, Value};

use crate::support::aws_like::{AwsLike, Behaviour};
use crate::support::scenario::{Options, Scenario};
use crate::support::{recorded_clients_as, CallLog};
use aws_config::SdkConfig;

pub fn trigger_event(instance_ids: &[&str]) -> Value {
    let resources: Vec<String> = instance_ids
        .iter()
        .map(|id| format!("arn:aws:ec2:us-east-1:123456789012:instance/{id}"))
        .collect();
    json!({
        "version": "0",
        "id": crate::support::unique("event"),
        "detail-type": "Tag Change on Resource",
        "source": "aws.tag",
        "account": "123456789012",
        "time": "2026-11-23T10:00:00Z",
        "region": "us-east-1",
        "resources": resources,
        "detail": {
            "changed-tag-keys": ["Quarantine"],
            "service": "ec2",
            "resource-type": "instance",
            "version": 2,
            "tags": {"Quarantine": "true"}
        }
    })
}

pub async fn contain(
    scenario: &Scenario,
    event: Value,
    extra: &[(&str, &str)],
) -> (Result<Report, String>, CallLog) {
    let (result, log) = contain_with(scenario, event, extra, &scenario.account.sdk).await;
    if let Ok(report) = &result {
        let snapshots_on = !extra.contains(&("SNAPSHOT_VOLUMES", "false"));
        assert_evidence_kept(scenario, report, snapshots_on).await;
    }
    (result, log)
}

/// What every containment that reports success promises: every attached volume is kept on
/// termination and, unless snapshots are turned off, has a snapshot.
pub async fn assert_evidence_kept(scenario: &Scenario, report: &Report, snapshots_on: bool) {
    for instance in &report.instances {
        if instance.outcome != ec2_quarantine::report::InstanceOutcome::Contained {
            continue;
        }
        let id = &instance.instance_id;
        let described = scenario.account.instance(id).await;
        let snapshotted: Vec<String> = if snapshots_on {
            scenario
                .account
                .snapshots_of(id)
                .await
                .into_iter()
                .map(|(_, volume)| volume)
                .collect()
        } else {
            Vec::new()
        };
        for mapping in described.block_device_mappings() {
            let ebs = mapping.ebs().unwrap();
            assert_eq!(
                ebs.delete_on_termination(),
                Some(false),
                "{id}: {:?} kept on termination",
                mapping.device_name()
            );
            if snapshots_on {
                let volume = ebs.volume_id().unwrap();
                assert!(
                    snapshotted.iter().any(|v| v == volume),
                    "{id}: {volume} has a snapshot"
                );
            }
        }
    }
}

/// Runs the handler as Lambda would, with its clients built from `sdk` (through injected
/// faults, say), and checks what must hold after every containment: nothing was deleted or
/// terminated.
pub async fn contain_with(
    scenario: &Scenario,
    event: Value,
    extra: &[(&str, &str)],
    sdk: &SdkConfig,
) -> (Result<Report, String>, CallLog) {
    contain_as(scenario, event, extra, sdk, Behaviour::default()).await
}

/// The same, with the function's calls under `behaviour` instead of AWS's default.
pub async fn contain_as(
    scenario: &Scenario,
    event: Value,
    extra: &[(&str, &str)],
    sdk: &SdkConfig,
    behaviour: Behaviour,
) -> (Result<Report, String>, CallLog) {
    let log = CallLog::default();
    let deps = Deps {
        clients: recorded_clients_as(sdk, &log, &AwsLike::new(behaviour)),
        accounts: crate::support::accounts(sdk, &log),
        config: scenario.config(extra),
    };
    // Each call is its own Lambda invocation, with its own request id.
    let result = handle(event, &crate::support::unique("request"), &deps)
        .await
        .map_err(|e| e.to_string());
    for call in log.calls() {
        assert!(
            !call.contains(".Delete")
                && !call.contains(".Terminate")
                && !call.contains(".DetachVolume"),
            "containment never deletes or terminates anything: {call}"
        );
    }
    (result, log)
}

#[tokio::test]
async fn a_tagged_instance_is_cut_off_kept_and_recorded_in_every_respect() {
    let s = Scenario::build(Options::everything()).await;
    let event = trigger_event(&[&s.instance_id]);
    let (result, log) = contain(&s, event.clone(), &[]).await;
    let report = result.expect("containment succeeds");
    let a = &s.account;

    // Network: exactly one isolation group in the VPC, with no rule, and both interfaces on it alone.
    let (group_id, ingress, egress) = s.isolation_group().await;
    assert_eq!(
        (ingress, egress),
        (0, 0),
        "the isolation group has no rules"
    );
    for eni in &s.interfaces {
        assert_eq!(
            a.interface_groups(eni).await,
            vec![group_id.clone()],
            "{eni} is on the isolation group only"
        );
    }
    // Per interface: the shorter tracking timeouts, the interim group, the isolation group
    // (network.rs checks the order).
    assert_eq!(
        log.group_change_count(),
        4,
        "two group changes per interface"
    );
    assert_eq!(
        log.count("ModifyNetworkInterfaceAttribute"),
        6,
        "three calls per interface"
    );
    // Termination, stop, shutdown behaviour and volumes: one attribute per call, never `Groups`.
    assert_eq!(log.count("ModifyInstanceAttribute"), 4);

    // Identity: the isolation profile replaced the original.
    assert_eq!(
        a.profile_of(&s.instance_id).await.as_deref(),
        Some(s.isolation_profile.1.as_str())
    );

    // Auto Scaling: out of the group, whose desired capacity is unchanged.
    let asg = s.auto_scaling_group.as_deref().unwrap();
    let members = a
        .autoscaling
        .describe_auto_scaling_instances()
        .instance_ids(&s.instance_id)
        .send()
        .await
        .unwrap();
    assert!(
        members.auto_scaling_instances().is_empty(),
        "detached from {asg}"
    );
    let group = a
        .autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(asg)
        .send()
        .await
        .unwrap();
    assert_eq!(
        group.auto_scaling_groups()[0].desired_capacity(),
        Some(1),
        "desired capacity kept"
    );

    // Load balancers: no registration left in either target group, the ip group or the classic one.
    let mut groups: Vec<&str> = s
        .target_groups
        .iter()
        .map(|(arn, _)| arn.as_str())
        .collect();
    groups.push(s.ip_target_group.as_deref().unwrap());
    for arn in groups {
        let health = a
            .elbv2
            .describe_target_health()
            .target_group_arn(arn)
            .send()
            .await
            .unwrap();
        assert!(
            health.target_health_descriptions().is_empty(),
            "nothing left registered in {arn}"
        );
    }
    let clb = s.classic_load_balancer.as_deref().unwrap();
    let lbs = a
        .elb
        .describe_load_balancers()
        .load_balancer_names(clb)
        .send()
        .await
        .unwrap();
    assert!(
        lbs.load_balancer_descriptions()[0].instances().is_empty(),
        "deregistered from {clb}"
    );

    // Protection.
    assert_eq!(
        a.attribute(&s.instance_id, InstanceAttributeName::DisableApiTermination)
            .await,
        "true"
    );
    assert_eq!(
        a.attribute(&s.instance_id, InstanceAttributeName::DisableApiStop)
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
    let instance = a.instance(&s.instance_id).await;
    for mapping in instance.block_device_mappings() {
        assert_eq!(
            mapping.ebs().unwrap().delete_on_termination(),
            Some(false),
            "{:?} kept on termination",
            mapping.device_name()
        );
    }

    // Evidence: one snapshot per volume from one CreateSnapshots call, tagged with the instance.
    let mut snapshotted: Vec<String> = a
        .snapshots_of(&s.instance_id)
        .await
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    snapshotted.sort();
    let mut volumes = s.volumes.clone();
    volumes.sort();
    assert_eq!(snapshotted, volumes);
    assert_eq!(log.count("CreateSnapshots"), 1);

    // Tags and the report.
    assert_eq!(
        a.tag_of(&s.instance_id, "ec2-quarantine:status")
            .await
            .as_deref(),
        Some("contained")
    );
    assert!(a
        .tag_of(&s.instance_id, "ec2-quarantine:contained-at")
        .await
        .is_some());
    assert_eq!(report.outcome, Outcome::Contained);
    let instance_report = &report.instances[0];
    assert_eq!(instance_report.outcome, InstanceOutcome::Contained);
    assert_eq!(
        instance_report.metadata["instance_id"],
        s.instance_id.as_str()
    );
    assert_eq!(
        instance_report.metadata["network_interfaces"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    for step in &instance_report.steps {
        assert_eq!(
            step.status,
            Status::Done,
            "{:?}: {}",
            step.step,
            step.detail
        );
    }

    // The record of what was there before.
    let original = instance_report.original.as_ref().unwrap();
    assert_eq!(original.instance_profile_arn, s.original_profile_arn);
    assert_eq!(original.auto_scaling_group.as_deref(), Some(asg));
    assert_eq!(original.network_interfaces.len(), 2);
    assert_eq!(
        original.network_interfaces[0].groups,
        vec![s.app_groups[0].clone()]
    );
    assert_eq!(original.network_interfaces[1].groups, s.app_groups);
    let mut registered: Vec<(String, Option<i32>)> = original
        .target_groups
        .iter()
        .map(|r| (r.target_group_arn.clone(), r.port))
        .collect();
    registered.sort();
    let mut expected: Vec<(String, Option<i32>)> = s
        .target_groups
        .iter()
        .map(|(arn, port)| (arn.clone(), Some(*port)))
        .collect();
    expected.push((s.ip_target_group.clone().unwrap(), Some(443)));
    expected.sort();
    assert_eq!(registered, expected);
    assert_eq!(original.classic_load_balancers, vec![clb.to_owned()]);
}

#[tokio::test]
async fn containing_the_same_instance_twice_changes_nothing_the_second_time() {
    let s = Scenario::build(Options::everything()).await;
    let (first, _) = contain(&s, trigger_event(&[&s.instance_id]), &[]).await;
    let first = first.expect("first containment succeeds");
    let snapshots_before = s.account.snapshots_of(&s.instance_id).await;

    // A new event for the same instance, as when someone tags it again.
    let (second, log) = contain(&s, trigger_event(&[&s.instance_id]), &[]).await;
    let report = second.expect("second containment succeeds");

    for step in &report.instances[0].steps {
        assert_eq!(
            step.status,
            Status::Unchanged,
            "{:?}: {}",
            step.step,
            step.detail
        );
    }
    s.isolation_group().await;
    assert_eq!(
        s.account.snapshots_of(&s.instance_id).await,
        snapshots_before,
        "no second set of snapshots"
    );
    // Only the incident record's own bookkeeping is written; nothing in the account changes.
    let mutating: Vec<String> = log
        .calls()
        .into_iter()
        .filter(|c| {
            let operation = c.split('.').nth(1).unwrap_or_default();
            let read = ["Describe", "Get", "List"]
                .iter()
                .any(|r| operation.starts_with(r));
            !read && !c.starts_with("DynamoDB.")
        })
        .collect();
    assert!(
        mutating.is_empty(),
        "the second run changes nothing: {mutating:?}"
    );
    assert_eq!(report.instances[0].incident, first.instances[0].incident);

    // The original state is the first run's, not the isolated state the second run saw.
    let original = report.instances[0].original.clone().unwrap();
    let first_original = first.instances[0].original.clone().unwrap();
    assert_eq!(
        original.network_interfaces,
        first_original.network_interfaces
    );
    assert_eq!(original.instance_profile_arn, s.original_profile_arn);
    assert_eq!(original.auto_scaling_group, s.auto_scaling_group);
    assert_eq!(original.target_groups, first_original.target_groups);
    assert_eq!(
        original.classic_load_balancers,
        first_original.classic_load_balancers
    );
}

#[tokio::test]
async fn a_failed_step_fails_the_invocation_after_every_other_step_ran() {
    // An isolation profile that does not exist: the credential cut fails, the rest is done.
    let s = Scenario::build(Options {
        second_interface: true,
        ..Options::default()
    })
    .await;
    let (result, _) = contain(
        &s,
        trigger_event(&[&s.instance_id]),
        &[("ISOLATION_INSTANCE_PROFILE", "no-such-profile")],
    )
    .await;
    let message = result.expect_err("the invocation fails");
    let report: Value =
        serde_json::from_str(&message).expect("the error carries the report as JSON");
    assert_eq!(report["outcome"], "partial");
    let instance = &report["instances"][0];
    assert_eq!(instance["outcome"], "not_contained");
    let step = |name: &str| {
        instance["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["step"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(step("replace-instance-profile")["status"], "failed");
    assert_eq!(
        step("replace-instance-profile")["error"]["code"],
        "NoSuchEntity"
    );
    assert_eq!(step("move-network-interfaces")["status"], "done");
    assert_eq!(step("snapshot-volumes")["status"], "done");

    let (group_id, _, _) = s.isolation_group().await;
    for eni in &s.interfaces {
        assert_eq!(
            s.account.interface_groups(eni).await,
            vec![group_id.clone()]
        );
    }
    assert_eq!(
        s.account
            .tag_of(&s.instance_id, "ec2-quarantine:status")
            .await
            .as_deref(),
        Some("not-contained")
    );
}

#[tokio::test]
async fn snapshots_can_be_turned_off() {
    let s = Scenario::build(Options::default()).await;
    let (result, log) = contain(
        &s,
        trigger_event(&[&s.instance_id]),
        &[("SNAPSHOT_VOLUMES", "false")],
    )
    .await;
    let report = result.unwrap();
    assert_eq!(
        report.instances[0]
            .step(Step::SnapshotVolumes)
            .unwrap()
            .status,
        Status::Skipped
    );
    assert_eq!(log.count("CreateSnapshots"), 0);
    assert!(s.account.snapshots_of(&s.instance_id).await.is_empty());
}

#[tokio::test]
async fn a_spot_instance_is_cut_off_and_its_volumes_kept_though_it_cannot_take_protection() {
    use aws_sdk_ec2::types::{
        BlockDeviceMapping, EbsBlockDevice, InstanceMarketOptionsRequest,
        InstanceNetworkInterfaceSpecification, MarketType,
    };
    let s = Scenario::build(Options::default()).await;
    let spot = s
        .account
        .ec2
        .run_instances()
        .image_id("ami-0123456789abcdef0")
        .min_count(1)
        .max_count(1)
        .instance_market_options(
            InstanceMarketOptionsRequest::builder()
                .market_type(MarketType::Spot)
                .build(),
        )
        .network_interfaces(
            InstanceNetworkInterfaceSpecification::builder()
                .device_index(0)
                .subnet_id(&s.subnet_id)
                .groups(&s.app_groups[0])
                .build(),
        )
        .block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name("/dev/sda1")
                .ebs(
                    EbsBlockDevice::builder()
                        .volume_size(8)
                        .delete_on_termination(true)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap()
        .instances()[0]
        .instance_id()
        .unwrap()
        .to_owned();
    let (result, log) = contain(&s, trigger_event(&[&spot]), &[]).await;
    let report = result.expect("a spot instance is contained");
    let step = report.instances[0].step(Step::ProtectInstance).unwrap();
    assert_eq!(step.status, Status::Skipped);
    assert!(step.detail.contains("Spot"), "{}", step.detail);
    assert_eq!(
        report.instances[0].step(Step::KeepVolumes).unwrap().status,
        Status::Done
    );
    assert_eq!(
        log.count("DescribeInstanceAttribute"),
        0,
        "protection not even read"
    );
    let (group, _, _) = s.isolation_group().await;
    let eni = s.account.instance(&spot).await.network_interfaces()[0]
        .network_interface_id()
        .unwrap()
        .to_owned();
    assert_eq!(s.account.interface_groups(&eni).await, vec![group]);
}

#[tokio::test]
async fn one_event_reads_each_target_group_once_however_many_of_its_instances_it_names() {
    use crate::support::scenario::{register, target_group};
    let (s, ids) = Scenario::fleet(3).await;
    let group = target_group(&s.account, &s.vpc_id, 80, "instance").await;
    register(&s.account, &group, &ids[0], 80).await;
    let names: Vec<&str> = ids.iter().map(String::as_str).collect();
    let (result, log) = contain(&s, trigger_event(&names), &[]).await;
    let report = result.expect("all three contained");
    assert_eq!(report.outcome, Outcome::Contained);
    assert!(
        !registered_in(&s, &group, &ids[0]).await,
        "{} is out of {group}",
        ids[0]
    );
    assert_eq!(
        log.target_health_reads(&group),
        2,
        "one read shared by the three instances, then the read-back of the one registered"
    );
}

#[tokio::test]
async fn every_page_of_the_target_group_listing_is_read() {
    use crate::support::faults::Faults;
    use crate::support::scenario::{register, target_group};
    use crate::support::with_faults;
    let (s, ids) = Scenario::fleet(1).await;
    let first_page_only = target_group(&s.account, &s.vpc_id, 80, "instance").await;
    let second_page = target_group(&s.account, &s.vpc_id, 8080, "instance").await;
    register(&s.account, &second_page, &ids[0], 8080).await;
    // The emulator lists every group on one page: the first page is injected, holding one group
    // and a marker, and the second, the emulator's whole answer, is the only one that holds the
    // group the instance is in.
    let faults = Faults::default();
    faults.answer_once(
        "DescribeTargetGroups",
        format!(
            r#"<DescribeTargetGroupsResponse xmlns="http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/">
  <DescribeTargetGroupsResult>
    <TargetGroups>
      <member>
        <TargetGroupArn>{first_page_only}</TargetGroupArn>
        <TargetGroupName>first-page</TargetGroupName>
        <Protocol>HTTP</Protocol>
        <Port>80</Port>
        <VpcId>{}</VpcId>
        <TargetType>instance</TargetType>
      </member>
    </TargetGroups>
    <NextMarker>page-2</NextMarker>
  </DescribeTargetGroupsResult>
  <ResponseMetadata><RequestId>injected</RequestId></ResponseMetadata>
</DescribeTargetGroupsResponse>"#,
            s.vpc_id
        ),
    );
    let sdk = with_faults(&s.account.sdk, &faults);
    let (result, log) = contain_with(&s, trigger_event(&[&ids[0]]), &[], &sdk).await;
    let report = result.expect("contained");
    assert_eq!(log.count("DescribeTargetGroups"), 2, "both pages read");
    let step = report.instances[0]
        .step(Step::DeregisterTargetGroups)
        .unwrap();
    assert_eq!(step.status, Status::Done, "{}", step.detail);
    assert!(step.detail.contains(&second_page), "{}", step.detail);
    assert!(
        !registered_in(&s, &second_page, &ids[0]).await,
        "out of the group only the second page lists"
    );
}

/// Whether `target` is registered in `group` (draining registrations are on their way out).
async fn registered_in(s: &Scenario, group: &str, target: &str) -> bool {
    s.account
        .elbv2
        .describe_target_health()
        .target_group_arn(group)
        .send()
        .await
        .unwrap()
        .target_health_descriptions()
        .iter()
        .any(|d| {
            d.target().and_then(|t| t.id()) == Some(target)
                && d.target_health().and_then(|h| h.state())
                    != Some(&aws_sdk_elasticloadbalancingv2::types::TargetHealthStateEnum::Draining)
        })
}

/// Issue 12, point 7: the timeouts AWS reports before containment shortens them are the ones the
/// record keeps, read in round trip 1 (`DescribeNetworkInterfaces`, which the emulator answers
/// without them, so the answer is made AWS's).
#[tokio::test]
async fn the_original_connection_tracking_timeouts_aws_reports_are_recorded() {
    use crate::support::faults::Faults;
    use crate::support::{with_faults, INCIDENT_TABLE};
    let s = Scenario::build(Options {
        second_interface: true,
        ..Options::default()
    })
    .await;
    let (set, unset) = (&s.interfaces[0], &s.interfaces[1]);
    let faults = Faults::default();
    faults.connection_tracking(set, (3600, 120, 45));

    let (result, log) = contain_with(
        &s,
        trigger_event(&[&s.instance_id]),
        &[],
        &with_faults(&s.account.sdk, &faults),
    )
    .await;
    result.expect("contained");
    let item = s
        .account
        .dynamodb
        .get_item()
        .table_name(INCIDENT_TABLE)
        .key(
            "instance_id",
            aws_sdk_dynamodb::types::AttributeValue::S(s.instance_id.clone()),
        )
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    let interfaces: Value =
        serde_json::from_str(item.item().unwrap()["original_interfaces"].as_s().unwrap()).unwrap();
    let recorded = |eni: &str| {
        interfaces
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["network_interface_id"] == eni)
            .unwrap_or_else(|| panic!("{eni} recorded"))
            .get("connection_tracking")
            .cloned()
    };
    assert_eq!(
        recorded(set),
        Some(
            json!({"tcp_established_timeout": 3600, "udp_stream_timeout": 120, "udp_timeout": 45})
        )
    );
    assert_eq!(recorded(unset), None, "AWS reported none for it");
    // And containment still shortened both.
    for eni in [set, unset] {
        assert!(log.interface_changes(eni).contains(
            &crate::support::InterfaceChange::ConnectionTracking {
                eni: eni.clone(),
                timeouts: (60, 60, 30)
            }
        ));
    }
}
