//! Instance kinds and states AWS treats differently: an instance-store root, a stopped instance.
//! Each is contained as far as AWS allows, and the report says what was left and why.

use aws_sdk_ec2::types::InstanceAttributeName;
use ec2_quarantine::report::{InstanceOutcome, Outcome, Status, Step};

use crate::containment::{contain, contain_with, trigger_event};
use crate::faults::{failed_report, step};
use crate::support::faults::Faults;
use crate::support::scenario::{Options, Scenario};
use crate::support::with_faults;

#[tokio::test]
async fn an_instance_store_root_gets_termination_protection_only_and_is_contained() {
    let s = Scenario::build(Options::default()).await;
    let faults = Faults::default();
    // The emulator launches every instance from an EBS-backed image: the description is
    // rewritten to AWS's for an instance-store root, and stop protection is refused as AWS
    // refuses it for such an instance.
    faults
        .rewrite(
            "DescribeInstances",
            "<rootDeviceType>ebs</rootDeviceType>",
            "<rootDeviceType>instance-store</rootDeviceType>",
        )
        .deny_when(
            "ModifyInstanceAttribute",
            "DisableApiStop",
            "UnsupportedOperation",
        );
    let (result, _) = contain_with(
        &s,
        trigger_event(&[&s.instance_id]),
        &[],
        &with_faults(&s.account.sdk, &faults),
    )
    .await;
    let report = result.expect("the invocation succeeds");
    assert_eq!(report.outcome, Outcome::Contained);
    let step = report.instances[0].step(Step::ProtectInstance).unwrap();
    assert_eq!(step.status, Status::Done, "{}", step.detail);
    assert!(
        step.detail.contains("termination protection on")
            && step
                .detail
                .contains("not possible with an instance-store root"),
        "{}",
        step.detail
    );
    assert_eq!(
        faults.injected("ModifyInstanceAttribute"),
        0,
        "stop protection is never asked for"
    );
    let attribute = |name| s.account.attribute(&s.instance_id, name);
    assert_eq!(
        attribute(InstanceAttributeName::DisableApiTermination).await,
        "true"
    );
    assert_eq!(
        attribute(InstanceAttributeName::DisableApiStop).await,
        "false"
    );
    crate::faults::assert_cut_off(&s).await;
}

#[tokio::test]
async fn a_stopped_instance_is_contained_as_far_as_aws_allows() {
    let s = Scenario::build(Options {
        profile: true,
        ..Options::default()
    })
    .await;
    s.account
        .ec2
        .stop_instances()
        .instance_ids(&s.instance_id)
        .send()
        .await
        .unwrap();
    let (result, _) = contain(&s, trigger_event(&[&s.instance_id]), &[]).await;
    let report = result.expect("the invocation succeeds");
    // Every step applies to a stopped instance: it comes back isolated if someone starts it.
    assert_eq!(report.outcome, Outcome::Contained);
    for step in &report.instances[0].steps {
        assert_ne!(step.status, Status::Failed, "{step:?}");
    }
    crate::faults::assert_cut_off(&s).await;
}

/// The scenario's instance in its Auto Scaling group, as Auto Scaling reports it in `state` (the
/// emulator keeps every attached instance InService).
fn in_lifecycle_state(faults: &Faults, state: &'static str) {
    let to: &'static str =
        Box::leak(format!("<LifecycleState>{state}</LifecycleState>").into_boxed_str());
    faults.rewrite(
        "DescribeAutoScalingInstances",
        "<LifecycleState>InService</LifecycleState>",
        to,
    );
}

/// The detail of the failed `detach-auto-scaling` step in a failed invocation's report.
fn at_risk_detail(result: Result<ec2_quarantine::report::Report, String>) -> String {
    let report = failed_report(result);
    let step = step(&report, "detach-auto-scaling");
    assert_eq!(step["status"], "failed", "{step}");
    step["detail"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_instance_a_termination_hook_holds_gets_a_heartbeat_and_is_reported_at_risk() {
    let s = Scenario::build(Options {
        auto_scaling_group: true,
        ..Options::default()
    })
    .await;
    let group = s.auto_scaling_group.clone().unwrap();
    let hook = crate::support::unique("keep");
    s.account
        .autoscaling
        .put_lifecycle_hook()
        .auto_scaling_group_name(&group)
        .lifecycle_hook_name(&hook)
        .lifecycle_transition("autoscaling:EC2_INSTANCE_TERMINATING")
        .heartbeat_timeout(300)
        .send()
        .await
        .unwrap();
    let faults = Faults::default();
    in_lifecycle_state(&faults, "Terminating:Wait");
    // The emulator has no RecordLifecycleActionHeartbeat: AWS's answer, once, and only if asked.
    faults.answer_once(
        "RecordLifecycleActionHeartbeat",
        "<RecordLifecycleActionHeartbeatResponse xmlns=\"http://autoscaling.amazonaws.com/doc/2011-01-01/\">\
         <RecordLifecycleActionHeartbeatResult/><ResponseMetadata><RequestId>r</RequestId>\
         </ResponseMetadata></RecordLifecycleActionHeartbeatResponse>"
            .to_owned(),
    );
    let (result, log) = contain_with(
        &s,
        trigger_event(&[&s.instance_id]),
        &[],
        &with_faults(&s.account.sdk, &faults),
    )
    .await;
    let detail = at_risk_detail(result);
    assert!(
        detail.contains("Terminating:Wait")
            && detail.contains(&format!("heartbeat on {hook}"))
            && detail.contains("evidence at risk"),
        "{detail}"
    );
    assert_eq!(faults.injected("RecordLifecycleActionHeartbeat"), 1);
    assert_eq!(
        log.count("DetachInstances"),
        0,
        "never detached from Terminating:Wait"
    );
    // The cuts hold all the same.
    crate::faults::assert_cut_off(&s).await;
}

#[tokio::test]
async fn an_instance_in_a_state_auto_scaling_cannot_detach_is_reported_at_risk_with_its_state() {
    for state in ["Pending:Wait", "Warmed:Running"] {
        let s = Scenario::build(Options {
            auto_scaling_group: true,
            ..Options::default()
        })
        .await;
        let faults = Faults::default();
        in_lifecycle_state(&faults, state);
        let (result, log) = contain_with(
            &s,
            trigger_event(&[&s.instance_id]),
            &[],
            &with_faults(&s.account.sdk, &faults),
        )
        .await;
        let detail = at_risk_detail(result);
        assert!(
            detail.contains(&format!("is {state} in"))
                && detail.contains("evidence at risk")
                && !detail.contains("not in an Auto Scaling group"),
            "{state}: {detail}"
        );
        assert_eq!(log.count("DetachInstances"), 0);
    }
}

#[tokio::test]
async fn an_interface_ec2_will_not_modify_is_reported_with_the_aws_error_and_the_instance_is_not_contained(
) {
    let s = Scenario::build(Options {
        second_interface: true,
        ..Options::default()
    })
    .await;
    // A requester-managed, trunk or branch interface refuses a change of its groups. AWS does not
    // document the code for each kind; whatever it answers must reach the report.
    let second: &'static str =
        Box::leak(format!("NetworkInterfaceId={}", s.interfaces[1]).into_boxed_str());
    let faults = Faults::default();
    faults.deny_when(
        "ModifyNetworkInterfaceAttribute",
        second,
        "OperationNotPermitted",
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
    let moved = step(&report, "move-network-interfaces");
    assert_eq!(moved["status"], "failed");
    assert_eq!(moved["error"]["code"], "OperationNotPermitted", "{moved}");
    // The interface that can move is isolated all the same; the other keeps its groups.
    let (isolation, _, _) = s.isolation_group().await;
    assert_eq!(
        s.account.interface_groups(&s.interfaces[0]).await,
        vec![isolation.clone()]
    );
    assert_ne!(
        s.account.interface_groups(&s.interfaces[1]).await,
        vec![isolation]
    );
}

#[tokio::test]
async fn a_pending_or_stopping_instance_gets_every_step_aws_accepts_in_that_state() {
    for state in ["pending", "stopping"] {
        let s = Scenario::build(Options {
            profile: true,
            ..Options::default()
        })
        .await;
        // The emulator's instances are running at once and stop at once: the description is
        // rewritten to AWS's for an instance on its way up or down.
        let faults = Faults::default();
        let to: &'static str = Box::leak(format!("<name>{state}</name>").into_boxed_str());
        faults.rewrite("DescribeInstances", "<name>running</name>", to);
        let (result, _) = contain_with(
            &s,
            trigger_event(&[&s.instance_id]),
            &[],
            &with_faults(&s.account.sdk, &faults),
        )
        .await;
        let report = result.expect("the invocation succeeds");
        let instance = &report.instances[0];
        assert_eq!(
            instance.metadata["state"], state,
            "the state as AWS reported it"
        );
        assert_eq!(instance.outcome, InstanceOutcome::Contained, "{state}");
        crate::faults::assert_cut_off(&s).await;
    }
}
