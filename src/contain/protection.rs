//! Keeps the instance and its disks from disappearing: termination and stop protection on, an
//! OS-initiated shutdown stops rather than terminates, and every EBS volume outlives the
//! instance.
//!
//! IAM: `ec2:DescribeInstanceAttribute`, `ec2:ModifyInstanceAttribute`, `ec2:DescribeInstances`.
//!
//! Spot instances cannot take termination or stop protection, so `protect-instance` is skipped
//! for them with that reason. Idempotent: each attribute is read first and only those not yet
//! set are changed, one `ModifyInstanceAttribute` per attribute, as the API requires. The
//! shutdown behaviour is set with the `Attribute`+`Value` form, which AWS and the emulator both
//! honour.

use std::time::Instant;

use aws_sdk_ec2::types::{
    AttributeBooleanValue, EbsInstanceBlockDeviceSpecification, InstanceAttributeName,
    InstanceBlockDeviceMappingSpecification,
};

use super::instance::{describe, InstanceFacts};
use super::{step_report, StepResult};
use crate::aws::{aws_err, AwsError, Clients};
use crate::consistency::until_settled;
use crate::report::{Step, StepReport};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Protection {
    pub termination: bool,
    pub stop: bool,
    pub shutdown_stops: bool,
}

pub(crate) async fn read_protection(
    clients: &Clients,
    instance_id: &str,
) -> Result<Protection, AwsError> {
    let attribute = |name: InstanceAttributeName| {
        clients
            .ec2
            .describe_instance_attribute()
            .instance_id(instance_id)
            .attribute(name)
            .send()
    };
    let (termination, stop, shutdown) = tokio::join!(
        attribute(InstanceAttributeName::DisableApiTermination),
        attribute(InstanceAttributeName::DisableApiStop),
        attribute(InstanceAttributeName::InstanceInitiatedShutdownBehavior),
    );
    let termination = termination.map_err(aws_err("DescribeInstanceAttribute"))?;
    let stop = stop.map_err(aws_err("DescribeInstanceAttribute"))?;
    let shutdown = shutdown.map_err(aws_err("DescribeInstanceAttribute"))?;
    Ok(Protection {
        termination: termination
            .disable_api_termination()
            .and_then(|v| v.value())
            .unwrap_or(false),
        stop: stop
            .disable_api_stop()
            .and_then(|v| v.value())
            .unwrap_or(false),
        shutdown_stops: shutdown
            .instance_initiated_shutdown_behavior()
            .and_then(|v| v.value())
            == Some("stop"),
    })
}

pub async fn protect_instance(clients: &Clients, facts: &InstanceFacts) -> StepReport {
    let started = Instant::now();
    let result = if facts.spot {
        Ok(StepResult::skipped(
            "Spot instances cannot take termination or stop protection",
        ))
    } else {
        protect(clients, &facts.instance_id).await
    };
    step_report(Step::ProtectInstance, started, result)
}

async fn protect(clients: &Clients, instance_id: &str) -> Result<StepResult, AwsError> {
    let before = read_protection(clients, instance_id).await?;
    let on = AttributeBooleanValue::builder().value(true).build();
    let modify = || {
        clients
            .ec2
            .modify_instance_attribute()
            .instance_id(instance_id)
    };
    let mut changed = Vec::new();
    let termination = async {
        if before.termination {
            return Ok(());
        }
        modify()
            .disable_api_termination(on.clone())
            .send()
            .await
            .map(|_| ())
    };
    let stop = async {
        if before.stop {
            return Ok(());
        }
        modify()
            .disable_api_stop(on.clone())
            .send()
            .await
            .map(|_| ())
    };
    let shutdown = async {
        if before.shutdown_stops {
            return Ok(());
        }
        modify()
            .attribute(InstanceAttributeName::InstanceInitiatedShutdownBehavior)
            .value("stop")
            .send()
            .await
            .map(|_| ())
    };
    let (t, s, b) = tokio::join!(termination, stop, shutdown);
    t.map_err(aws_err("ModifyInstanceAttribute"))?;
    s.map_err(aws_err("ModifyInstanceAttribute"))?;
    b.map_err(aws_err("ModifyInstanceAttribute"))?;
    if !before.termination {
        changed.push("termination protection on");
    }
    if !before.stop {
        changed.push("stop protection on");
    }
    if !before.shutdown_stops {
        changed.push("OS shutdown stops");
    }
    if changed.is_empty() {
        return Ok(StepResult::unchanged(
            "termination and stop protection already on; OS shutdown already stops",
        ));
    }
    let wanted = Protection {
        termination: true,
        stop: true,
        shutdown_stops: true,
    };
    // Attributes just written may read back stale for seconds.
    let after = until_settled(|| read_protection(clients, instance_id), |p| *p == wanted).await?;
    if after != wanted {
        return Err(AwsError::local(
            "DescribeInstanceAttribute",
            format!("read back {after:?}, expected all on"),
        ));
    }
    Ok(StepResult::done(changed.join("; ")))
}

pub async fn keep_volumes(clients: &Clients, facts: &InstanceFacts) -> StepReport {
    let started = Instant::now();
    step_report(Step::KeepVolumes, started, keep(clients, facts).await)
}

async fn keep(clients: &Clients, facts: &InstanceFacts) -> Result<StepResult, AwsError> {
    if facts.volumes.is_empty() {
        return Ok(StepResult::skipped(
            "no EBS volume attached (instance-store volumes cannot be kept)",
        ));
    }
    let deleting: Vec<_> = facts
        .volumes
        .iter()
        .filter(|v| v.delete_on_termination)
        .collect();
    if deleting.is_empty() {
        return Ok(StepResult::unchanged(format!(
            "{} volume(s) already kept on termination",
            facts.volumes.len()
        )));
    }
    let mappings = deleting
        .iter()
        .map(|v| {
            InstanceBlockDeviceMappingSpecification::builder()
                .device_name(&v.device_name)
                .ebs(
                    EbsInstanceBlockDeviceSpecification::builder()
                        .volume_id(&v.volume_id)
                        .delete_on_termination(false)
                        .build(),
                )
                .build()
        })
        .collect();
    clients
        .ec2
        .modify_instance_attribute()
        .instance_id(&facts.instance_id)
        .set_block_device_mappings(Some(mappings))
        .send()
        .await
        .map_err(aws_err("ModifyInstanceAttribute"))?;
    // DescribeInstanceAttribute(blockDeviceMapping) is not answered by the emulator; the
    // instance description carries the same flag in both.
    let still_deleting =
        |facts: &InstanceFacts| facts.volumes.iter().any(|v| v.delete_on_termination);
    let after = until_settled(
        || async {
            describe(clients, &facts.instance_id)
                .await
                .map_err(|e| AwsError::local("DescribeInstances", e.to_string()))
        },
        |after| !still_deleting(after),
    )
    .await?;
    let still: Vec<&str> = after
        .volumes
        .iter()
        .filter(|v| v.delete_on_termination)
        .map(|v| v.volume_id.as_str())
        .collect();
    if !still.is_empty() {
        return Err(AwsError::local(
            "DescribeInstances",
            format!(
                "read back {} still deleted on termination",
                still.join(", ")
            ),
        ));
    }
    let ids: Vec<&str> = deleting.iter().map(|v| v.volume_id.as_str()).collect();
    Ok(StepResult::done(format!(
        "{} kept on termination",
        ids.join(", ")
    )))
}
