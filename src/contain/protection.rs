//! Keeps the instance and its disks from disappearing: termination and stop protection on, an
//! OS-initiated shutdown stops rather than terminates, and every EBS volume outlives the
//! instance.
//!
//! IAM: `ec2:DescribeInstanceAttribute`, `ec2:ModifyInstanceAttribute`, `ec2:DescribeInstances`.
//!
//! Spot instances cannot take termination or stop protection, so `protect-instance` is skipped
//! for them with that reason. An instance-store root cannot take stop protection (AWS refuses it)
//! nor stop on shutdown: it gets termination protection only, and the report says why.
//! Idempotent: each attribute is read first and only those not yet
//! set are changed, one `ModifyInstanceAttribute` per attribute, as the API requires. The
//! shutdown behaviour is set with the `Attribute`+`Value` form, which AWS and the emulator both
//! honour.

use std::time::Instant;

use aws_sdk_ec2::types::{
    AttributeBooleanValue, EbsInstanceBlockDeviceSpecification, InstanceAttributeName,
    InstanceBlockDeviceMappingSpecification,
};
use futures::future::join_all;

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
        protect(clients, &facts.instance_id, wanted(facts)).await
    };
    step_report(Step::ProtectInstance, started, result)
}

/// What protection the instance can take. AWS refuses stop protection for an instance-store
/// root, and such an instance cannot stop, so its OS shutdown cannot be made to stop either.
pub(crate) fn wanted(facts: &InstanceFacts) -> Protection {
    Protection {
        termination: true,
        stop: facts.root_device_is_ebs,
        shutdown_stops: facts.root_device_is_ebs,
    }
}

/// One attribute `ModifyInstanceAttribute` sets, one per call as the API requires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Attribute {
    Termination,
    Stop,
    ShutdownStops,
}

impl Attribute {
    fn done(self) -> &'static str {
        match self {
            Attribute::Termination => "termination protection on",
            Attribute::Stop => "stop protection on",
            Attribute::ShutdownStops => "OS shutdown stops",
        }
    }

    /// What a dry run says of it.
    pub(crate) fn would(self, id: &str) -> String {
        match self {
            Attribute::Termination => {
                format!("would turn termination protection on for {id} (DisableApiTermination)")
            }
            Attribute::Stop => format!("would turn stop protection on for {id} (DisableApiStop)"),
            Attribute::ShutdownStops => format!(
                "would make an OS shutdown stop {id} rather than terminate it \
                 (InstanceInitiatedShutdownBehavior=stop)"
            ),
        }
    }
}

/// Pure: the attributes to set, from what was read and what the instance can take.
pub(crate) fn plan(before: Protection, wanted: Protection) -> Vec<Attribute> {
    [
        (
            Attribute::Termination,
            wanted.termination && !before.termination,
        ),
        (Attribute::Stop, wanted.stop && !before.stop),
        (
            Attribute::ShutdownStops,
            wanted.shutdown_stops && !before.shutdown_stops,
        ),
    ]
    .into_iter()
    .filter_map(|(attribute, needed)| needed.then_some(attribute))
    .collect()
}

/// What the report adds when the instance cannot take all of it.
fn not_possible(wanted: Protection) -> Option<&'static str> {
    (!wanted.stop).then_some(
        "stop protection and a stopping OS shutdown are not possible with an instance-store root",
    )
}

/// `detail`, and why some protection was not set, if it was not.
pub(crate) fn with_limits(detail: &str, wanted: Protection) -> String {
    match not_possible(wanted) {
        Some(limit) => format!("{detail}; {limit}"),
        None => detail.to_owned(),
    }
}

pub(crate) const ALREADY_ON: &str = "every protection the instance can take is already on";

async fn set(clients: &Clients, instance_id: &str, attribute: Attribute) -> Result<(), AwsError> {
    let on = AttributeBooleanValue::builder().value(true).build();
    let modify = clients
        .ec2
        .modify_instance_attribute()
        .instance_id(instance_id);
    let modify = match attribute {
        Attribute::Termination => modify.disable_api_termination(on),
        Attribute::Stop => modify.disable_api_stop(on),
        Attribute::ShutdownStops => modify
            .attribute(InstanceAttributeName::InstanceInitiatedShutdownBehavior)
            .value("stop"),
    };
    modify
        .send()
        .await
        .map(|_| ())
        .map_err(aws_err("ModifyInstanceAttribute"))
}

/// Holds when every attribute the instance can take is on.
fn holds(read: Protection, wanted: Protection) -> bool {
    plan(read, wanted).is_empty()
}

async fn protect(
    clients: &Clients,
    instance_id: &str,
    wanted: Protection,
) -> Result<StepResult, AwsError> {
    let before = read_protection(clients, instance_id).await?;
    let changes = plan(before, wanted);
    if changes.is_empty() {
        return Ok(StepResult::unchanged(with_limits(ALREADY_ON, wanted)));
    }
    for result in join_all(changes.iter().map(|a| set(clients, instance_id, *a))).await {
        result?;
    }
    // Attributes just written may read back stale for seconds.
    let after = until_settled(
        || read_protection(clients, instance_id),
        |read| holds(*read, wanted),
    )
    .await?;
    if !holds(after, wanted) {
        return Err(AwsError::local(
            "DescribeInstanceAttribute",
            format!("read back {after:?}, expected {wanted:?}"),
        ));
    }
    let done: Vec<&str> = changes.iter().map(|a| a.done()).collect();
    Ok(StepResult::done(with_limits(&done.join("; "), wanted)))
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

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: Protection = Protection {
        termination: false,
        stop: false,
        shutdown_stops: false,
    };
    const ALL: Protection = Protection {
        termination: true,
        stop: true,
        shutdown_stops: true,
    };

    #[test]
    fn an_ebs_backed_instance_gets_every_protection_it_lacks() {
        assert_eq!(
            plan(NONE, ALL),
            [
                Attribute::Termination,
                Attribute::Stop,
                Attribute::ShutdownStops
            ]
        );
        let some = Protection {
            termination: true,
            ..NONE
        };
        assert_eq!(plan(some, ALL), [Attribute::Stop, Attribute::ShutdownStops]);
        assert_eq!(plan(ALL, ALL), []);
    }

    #[test]
    fn an_instance_store_root_gets_termination_protection_only_and_the_report_says_why() {
        let instance_store = Protection {
            termination: true,
            stop: false,
            shutdown_stops: false,
        };
        assert_eq!(plan(NONE, instance_store), [Attribute::Termination]);
        assert!(holds(
            Protection {
                termination: true,
                ..NONE
            },
            instance_store
        ));
        assert!(not_possible(instance_store)
            .unwrap()
            .contains("instance-store root"));
        assert_eq!(not_possible(ALL), None);
    }
}
