//! Takes the instance out of its Auto Scaling group without lowering the desired capacity: the
//! group launches a healthy replacement, and the suspect stays for forensics instead of being
//! terminated by a scale-in or a failed health check (termination protection does not stop
//! Auto Scaling).
//!
//! IAM: `autoscaling:DescribeAutoScalingInstances`, `autoscaling:DetachInstances`.
//!
//! Idempotent: membership is read first and detach is called only for a member, so a re-run or
//! an instance outside any group makes no change.

use std::time::Instant;

use super::{step_report, unrecorded, Recorder, StepResult};
use crate::aws::{aws_err, AwsError, Clients};
use crate::incident::{GroupRecord, ORIGINAL_AUTO_SCALING_GROUP};
use crate::report::{Step, StepReport};

pub struct ScalingCut {
    pub report: StepReport,
    pub original_group: Option<String>,
}

/// The group the instance is in, if any. Instances already detaching count as out of it.
pub(crate) async fn membership(
    clients: &Clients,
    instance_id: &str,
) -> Result<Option<String>, AwsError> {
    let output = clients
        .autoscaling
        .describe_auto_scaling_instances()
        .instance_ids(instance_id)
        .send()
        .await
        .map_err(aws_err("DescribeAutoScalingInstances"))?;
    Ok(output
        .auto_scaling_instances()
        .iter()
        .filter(|i| i.instance_id() == Some(instance_id))
        .filter(|i| {
            !matches!(
                i.lifecycle_state(),
                Some(
                    "Detaching"
                        | "Detached"
                        | "Terminating"
                        | "Terminating:Wait"
                        | "Terminating:Proceed"
                        | "Terminated"
                )
            )
        })
        .find_map(|i| i.auto_scaling_group_name().map(str::to_owned)))
}

pub async fn detach(
    clients: &Clients,
    instance_id: &str,
    recorder: Option<Recorder<'_>>,
) -> ScalingCut {
    let started = Instant::now();
    let group = match membership(clients, instance_id).await {
        Ok(group) => group,
        Err(e) => {
            return ScalingCut {
                report: step_report(Step::DetachAutoScaling, started, Err(e.at_risk())),
                original_group: None,
            }
        }
    };
    let Some(group) = group else {
        return ScalingCut {
            report: step_report(
                Step::DetachAutoScaling,
                started,
                Ok(StepResult::unchanged("not in an Auto Scaling group")),
            ),
            original_group: None,
        };
    };
    // The record and the change go out together: a failed record never held the change back
    // (containment first), and waiting for it would only add a round trip.
    let record = GroupRecord {
        name: Some(group.clone()),
    };
    let (remembered, detached) = tokio::join!(
        async {
            match recorder {
                Some(r) => r.remember(ORIGINAL_AUTO_SCALING_GROUP, &record).await,
                None => Ok(()),
            }
        },
        detach_from(clients, instance_id, &group),
    );
    let result = unrecorded(detached, remembered);
    ScalingCut {
        report: step_report(Step::DetachAutoScaling, started, result),
        original_group: Some(group),
    }
}

async fn detach_from(
    clients: &Clients,
    instance_id: &str,
    group: &str,
) -> Result<StepResult, AwsError> {
    clients
        .autoscaling
        .detach_instances()
        .auto_scaling_group_name(group)
        .instance_ids(instance_id)
        .should_decrement_desired_capacity(false)
        .send()
        .await
        .map_err(aws_err("DetachInstances"))
        .map_err(AwsError::at_risk)?;
    match membership(clients, instance_id).await? {
        None => Ok(StepResult::done(format!(
            "detached from {group}; desired capacity kept, so the group replaces it"
        ))),
        Some(still) => Err(AwsError::local(
            "DescribeAutoScalingInstances",
            format!("read back {instance_id} still in {still}").to_owned(),
        )
        .at_risk()),
    }
}

impl AwsError {
    /// While the instance stays in its group, Auto Scaling may terminate it and its evidence
    /// with it, whatever its termination protection says: the report must say so.
    fn at_risk(mut self) -> Self {
        self.message = format!(
            "{} (evidence at risk: Auto Scaling can still terminate the instance)",
            self.message
        );
        self
    }
}
