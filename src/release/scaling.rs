//! The instance back into its Auto Scaling group, if the group still exists.
//!
//! IAM: `autoscaling:DescribeAutoScalingGroups`, `autoscaling:DescribeAutoScalingInstances`,
//! `autoscaling:AttachInstances`.
//!
//! `AttachInstances` raises the group's desired capacity by one (containment detached the
//! instance without lowering it, and the group launched a replacement), so the group ends one
//! larger than before the incident; scale it in when the replacement is no longer wanted. A
//! group at its maximum size cannot take the instance: the step fails, saying so, and nothing
//! is changed. Idempotent: an instance already in the group is `unchanged`.

use std::time::Instant;

use crate::aws::{aws_err, AwsError, Clients};
use crate::contain::scaling::membership;
use crate::contain::{step_report, StepResult};
use crate::incident::GroupRecord;
use crate::report::{Step, StepReport};

pub async fn attach(
    clients: &Clients,
    instance_id: &str,
    recorded: Option<&GroupRecord>,
) -> StepReport {
    let started = Instant::now();
    let result = match recorded.and_then(|g| g.name.as_deref()) {
        None => Ok(StepResult::unchanged(
            "the record holds no Auto Scaling group",
        )),
        Some(group) => attach_to(clients, instance_id, group).await,
    };
    step_report(Step::AttachAutoScaling, started, result)
}

async fn attach_to(
    clients: &Clients,
    instance_id: &str,
    group: &str,
) -> Result<StepResult, AwsError> {
    match membership(clients, instance_id).await? {
        Some(now) if now == group => {
            return Ok(StepResult::unchanged(format!("already in {group}")))
        }
        Some(other) => {
            return Err(AwsError::local(
                "DescribeAutoScalingInstances",
                format!(
                    "{instance_id} is now in {other}, not its original {group}: someone attached \
                     it after containment, so it is left there"
                ),
            ))
        }
        None => {}
    }
    let groups = clients
        .autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(group)
        .send()
        .await
        .map_err(aws_err("DescribeAutoScalingGroups"))?;
    let Some(found) = groups
        .auto_scaling_groups()
        .iter()
        .find(|g| g.auto_scaling_group_name() == Some(group))
    else {
        return Ok(StepResult::skipped(format!(
            "Auto Scaling group {group} no longer exists: not attached"
        )));
    };
    let desired = found.desired_capacity().unwrap_or_default();
    let max = found.max_size().unwrap_or_default();
    if desired >= max {
        return Err(AwsError::local(
            "AttachInstances",
            format!(
                "{group} is at its maximum size ({desired} of {max}), and attaching raises its \
                 desired capacity by one: raise its maximum size, or scale in the replacement \
                 it launched, and release again; not attached"
            ),
        ));
    }
    clients
        .autoscaling
        .attach_instances()
        .auto_scaling_group_name(group)
        .instance_ids(instance_id)
        .send()
        .await
        .map_err(aws_err("AttachInstances"))?;
    match membership(clients, instance_id).await? {
        Some(now) if now == group => Ok(StepResult::done(format!(
            "attached to {group}; its desired capacity went from {desired} to {}",
            desired + 1
        ))),
        other => Err(AwsError::local(
            "DescribeAutoScalingInstances",
            format!("read back {instance_id} in {other:?}, expected {group}"),
        )),
    }
}
