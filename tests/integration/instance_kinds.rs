//! Instance kinds and states AWS treats differently: an instance-store root, a stopped instance.
//! Each is contained as far as AWS allows, and the report says what was left and why.

use aws_sdk_ec2::types::InstanceAttributeName;
use ec2_quarantine::report::{Outcome, Status, Step};

use crate::containment::{contain, contain_with, trigger_event};
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
    for step in &report.instances[0].steps {
        println!("{:?} {:?} {}", step.step, step.status, step.detail);
    }
    assert_eq!(report.outcome, Outcome::Contained);
    crate::faults::assert_cut_off(&s).await;
}
