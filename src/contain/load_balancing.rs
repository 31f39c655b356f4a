//! Takes the instance out of every load balancer, so that no client traffic reaches it and no
//! health check keeps it in rotation.
//!
//! IAM: `elasticloadbalancing:DescribeTargetGroups`, `elasticloadbalancing:DescribeTargetHealth`,
//! `elasticloadbalancing:DeregisterTargets`, `elasticloadbalancing:DescribeLoadBalancers`,
//! `elasticloadbalancing:DeregisterInstancesFromLoadBalancer`.
//!
//! ELBv2 has no "which groups hold this target" call, so every target group of the region is
//! read (paginated) and its targets compared: `instance` groups by instance id on every port,
//! `ip` groups by the addresses of the instance's interfaces in the group's VPC (an address alone
//! could belong to another VPC). This is the slow part of containment and never delays the cuts.
//!
//! Idempotent: only current registrations are deregistered; targets already draining count as
//! gone.

use std::collections::BTreeSet;
use std::time::Instant;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_elasticloadbalancingv2::types::{
    TargetDescription, TargetGroup, TargetHealthDescription, TargetHealthStateEnum, TargetTypeEnum,
};
use futures::future::join_all;
use futures::stream::{self, StreamExt, TryStreamExt};
use tokio::sync::OnceCell;

use super::instance::InstanceFacts;
use super::{step_report, unrecorded, Recorder, StepResult};
use crate::aws::{aws_err, AwsError, Clients};
use crate::incident::{ORIGINAL_CLASSIC_LOAD_BALANCERS, ORIGINAL_TARGET_GROUPS};
use crate::report::{Step, StepReport, TargetRegistration};

/// Target groups read at the same time; enough to hide latency without tripping throttling.
const TARGET_HEALTH_CONCURRENCY: usize = 8;

/// Every target group of the region, listed once per invocation however many instances it
/// contains, and from the start of the invocation, so that the listing (many pages in a large
/// account) runs while the instances are being read and claimed.
#[derive(Default)]
pub struct TargetGroupList {
    all: OnceCell<Result<Vec<TargetGroup>, AwsError>>,
    /// Each group's targets as this invocation first read them: an event naming many instances
    /// reads each group once, not once per instance. Read-backs after a change read afresh.
    targets: Mutex<HashMap<String, Arc<TargetsOnce>>>,
}

type TargetsOnce = OnceCell<Result<Vec<TargetHealthDescription>, AwsError>>;

impl TargetGroupList {
    /// Safe to call from every task: the first call lists, the others wait for its answer.
    pub async fn get(&self, clients: &Clients) -> Result<Vec<TargetGroup>, AwsError> {
        self.all
            .get_or_init(|| async {
                clients
                    .elbv2
                    .describe_target_groups()
                    .into_paginator()
                    .items()
                    .send()
                    .collect::<Result<Vec<_>, _>>()
                    .await
                    .map_err(aws_err("DescribeTargetGroups"))
            })
            .await
            .clone()
    }

    async fn targets(
        &self,
        clients: &Clients,
        group_arn: &str,
    ) -> Result<Vec<TargetHealthDescription>, AwsError> {
        let cell = {
            let mut targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
            targets.entry(group_arn.to_owned()).or_default().clone()
        };
        cell.get_or_init(|| target_health(clients, group_arn))
            .await
            .clone()
    }
}

pub struct TargetGroupCut {
    pub report: StepReport,
    pub original: Vec<TargetRegistration>,
}

pub struct ClassicCut {
    pub report: StepReport,
    pub original: Vec<String>,
}

/// The target ids that mean this instance in a group of `vpc_id` with `target_type`.
fn own_target_ids(
    facts: &InstanceFacts,
    target_type: Option<&TargetTypeEnum>,
    vpc_id: Option<&str>,
) -> BTreeSet<String> {
    match target_type {
        Some(TargetTypeEnum::Instance) | None => BTreeSet::from([facts.instance_id.clone()]),
        Some(TargetTypeEnum::Ip) => facts
            .interfaces
            .iter()
            .filter(|i| Some(i.vpc_id.as_str()) == vpc_id)
            .flat_map(|i| i.private_ips.iter().chain(&i.ipv6_addresses).cloned())
            .collect(),
        Some(_) => BTreeSet::new(),
    }
}

async fn target_health(
    clients: &Clients,
    group_arn: &str,
) -> Result<Vec<TargetHealthDescription>, AwsError> {
    let output = clients
        .elbv2
        .describe_target_health()
        .target_group_arn(group_arn)
        .send()
        .await
        .map_err(aws_err("DescribeTargetHealth"))?;
    Ok(output.target_health_descriptions().to_vec())
}

/// This instance's registrations among `targets` (draining ones excluded).
fn own_registrations(
    targets: &[TargetHealthDescription],
    own: &BTreeSet<String>,
) -> Vec<TargetDescription> {
    targets
        .iter()
        .filter(|d| {
            d.target_health().and_then(|h| h.state()) != Some(&TargetHealthStateEnum::Draining)
        })
        .filter_map(|d| d.target().cloned())
        .filter(|t| t.id().is_some_and(|id| own.contains(id)))
        .collect()
}

/// Every registration of this instance in one target group, read now.
async fn registrations(
    clients: &Clients,
    group_arn: &str,
    own: &BTreeSet<String>,
) -> Result<Vec<TargetDescription>, AwsError> {
    Ok(own_registrations(
        &target_health(clients, group_arn).await?,
        own,
    ))
}

pub async fn deregister_target_groups(
    clients: &Clients,
    list: &TargetGroupList,
    facts: &InstanceFacts,
    recorder: Option<Recorder<'_>>,
) -> TargetGroupCut {
    let started = Instant::now();
    let mut original = Vec::new();
    let result = deregister_all_targets(clients, list, facts, recorder, &mut original).await;
    TargetGroupCut {
        report: step_report(Step::DeregisterTargetGroups, started, result),
        original,
    }
}

/// A target group holding the instance: its ARN, the ids that mean the instance there, and the
/// instance's current registrations.
pub(crate) type Registered = (String, BTreeSet<String>, Vec<TargetDescription>);

/// Every target group of the region, and those the instance is registered in (draining
/// registrations excluded). Reads only.
pub(crate) async fn registered_groups(
    clients: &Clients,
    list: &TargetGroupList,
    facts: &InstanceFacts,
) -> Result<(usize, Vec<Registered>), AwsError> {
    let groups = list.get(clients).await?;
    let candidates: Vec<(String, BTreeSet<String>)> = groups
        .iter()
        .filter_map(|g| {
            let own = own_target_ids(facts, g.target_type(), g.vpc_id());
            Some((g.target_group_arn()?.to_owned(), own)).filter(|(_, own)| !own.is_empty())
        })
        .collect();
    let registered: Vec<Registered> = stream::iter(candidates)
        .map(|(arn, own): (String, BTreeSet<String>)| async move {
            let targets = own_registrations(&list.targets(clients, &arn).await?, &own);
            Ok::<_, AwsError>((arn, own, targets))
        })
        .buffer_unordered(TARGET_HEALTH_CONCURRENCY)
        .try_filter(|(_, _, targets)| std::future::ready(!targets.is_empty()))
        .try_collect()
        .await?;
    Ok((groups.len(), registered))
}

async fn deregister_all_targets(
    clients: &Clients,
    list: &TargetGroupList,
    facts: &InstanceFacts,
    recorder: Option<Recorder<'_>>,
    original: &mut Vec<TargetRegistration>,
) -> Result<StepResult, AwsError> {
    let (group_count, registered) = registered_groups(clients, list, facts).await?;
    if registered.is_empty() {
        return Ok(StepResult::unchanged(format!(
            "registered in none of {group_count} target group(s)"
        )));
    }
    for (arn, _, targets) in &registered {
        original.extend(targets.iter().map(|t| TargetRegistration {
            target_group_arn: arn.clone(),
            target_id: t.id().unwrap_or_default().to_owned(),
            port: t.port(),
        }));
    }
    // The record and the change go out together, as in the scaling step.
    let (remembered, deregistered) = tokio::join!(
        async {
            match recorder {
                Some(r) => r.remember(ORIGINAL_TARGET_GROUPS, &*original).await,
                None => Ok(()),
            }
        },
        stream::iter(&registered)
            .map(|(arn, _, targets)| async move {
                clients
                    .elbv2
                    .deregister_targets()
                    .target_group_arn(arn)
                    .set_targets(Some(targets.clone()))
                    .send()
                    .await
                    .map_err(aws_err("DeregisterTargets"))
            })
            .buffer_unordered(TARGET_HEALTH_CONCURRENCY)
            .try_collect::<Vec<_>>(),
    );
    deregistered?;
    let read_back = join_all(
        registered
            .iter()
            .map(|(arn, own, _)| async move { (arn, registrations(clients, arn, own).await) }),
    )
    .await;
    for (arn, left) in read_back {
        let left = left?;
        if !left.is_empty() {
            return Err(AwsError::local(
                "DescribeTargetHealth",
                format!(
                    "read back {} target(s) still registered in {arn}",
                    left.len()
                ),
            ));
        }
    }
    let names: Vec<String> = original
        .iter()
        .map(|r| match r.port {
            Some(port) => format!("{} ({}:{port})", r.target_group_arn, r.target_id),
            None => format!("{} ({})", r.target_group_arn, r.target_id),
        })
        .collect();
    unrecorded(
        Ok(StepResult::done(format!(
            "deregistered from {}",
            names.join(", ")
        ))),
        remembered,
    )
}

pub async fn deregister_classic(
    clients: &Clients,
    instance_id: &str,
    recorder: Option<Recorder<'_>>,
) -> ClassicCut {
    let started = Instant::now();
    let mut original = Vec::new();
    let result = deregister_classic_inner(clients, instance_id, recorder, &mut original).await;
    ClassicCut {
        report: step_report(Step::DeregisterClassicLoadBalancers, started, result),
        original,
    }
}

pub(crate) async fn classic_balancers_with(
    clients: &Clients,
    instance_id: &str,
    names: Option<Vec<String>>,
) -> Result<Vec<String>, AwsError> {
    let balancers: Vec<_> = clients
        .elb
        .describe_load_balancers()
        .set_load_balancer_names(names)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(aws_err("DescribeLoadBalancers"))?;
    Ok(balancers
        .iter()
        .filter(|lb| {
            lb.instances()
                .iter()
                .any(|i| i.instance_id() == Some(instance_id))
        })
        .filter_map(|lb| lb.load_balancer_name().map(str::to_owned))
        .collect())
}

async fn deregister_classic_inner(
    clients: &Clients,
    instance_id: &str,
    recorder: Option<Recorder<'_>>,
    original: &mut Vec<String>,
) -> Result<StepResult, AwsError> {
    let names = classic_balancers_with(clients, instance_id, None).await?;
    if names.is_empty() {
        return Ok(StepResult::unchanged(
            "registered with no classic load balancer",
        ));
    }
    original.extend(names.iter().cloned());
    // The record and the change go out together, as in the scaling step.
    let (remembered, deregistered) = tokio::join!(
        async {
            match recorder {
                Some(r) => r.remember(ORIGINAL_CLASSIC_LOAD_BALANCERS, &names).await,
                None => Ok(()),
            }
        },
        stream::iter(&names)
            .map(|name| async move {
                clients
                    .elb
                    .deregister_instances_from_load_balancer()
                    .load_balancer_name(name)
                    .instances(
                        aws_sdk_elasticloadbalancing::types::Instance::builder()
                            .instance_id(instance_id)
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(aws_err("DeregisterInstancesFromLoadBalancer"))
            })
            .buffer_unordered(TARGET_HEALTH_CONCURRENCY)
            .try_collect::<Vec<_>>(),
    );
    deregistered?;
    let left = classic_balancers_with(clients, instance_id, Some(names.clone())).await?;
    if !left.is_empty() {
        return Err(AwsError::local(
            "DescribeLoadBalancers",
            format!(
                "read back {instance_id} still registered with {}",
                left.join(", ")
            ),
        ));
    }
    unrecorded(
        Ok(StepResult::done(format!(
            "deregistered from {}",
            names.join(", ")
        ))),
        remembered,
    )
}
