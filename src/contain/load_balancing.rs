//! Takes the instance out of every load balancer, so that no client traffic reaches it and no
//! health check keeps it in rotation.
//!
//! IAM: `elasticloadbalancing:DescribeTargetGroups`, `elasticloadbalancing:DescribeTargetHealth`,
//! `elasticloadbalancing:DeregisterTargets`, `elasticloadbalancing:DescribeLoadBalancers`,
//! `elasticloadbalancing:DeregisterInstancesFromLoadBalancer`.
//!
//! ELBv2 has no "which groups hold this target" call, so every target group of the region is
//! listed (paginated), and the targets of those that can hold the instance are read and compared
//! ([`groups_to_read`]): `instance` groups in one of the instance's VPCs, by instance id on every
//! port; `ip` groups by the addresses of the instance's interfaces in the group's VPC (an address
//! alone could belong to another VPC); `lambda` and `alb` groups never. This is the slow part of
//! containment and never delays the cuts. In an account with thousands of groups it is bounded by
//! [`SCAN_DEADLINE`]: the groups not read by then are named in the report and the step fails,
//! since the instance may still take traffic through them.
//!
//! Idempotent: only current registrations are deregistered; targets already draining count as
//! gone.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

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

/// How long the target-group step may list and read groups, from its start: well inside the
/// function's 150 s timeout, with room left for the deregistrations, their read-back and the
/// tags. At ELB's documented 10 `Describe*` calls a second, about 300 groups of the instance's
/// VPCs can be read in it; the groups of other VPCs are not read at all.
pub const SCAN_DEADLINE: Duration = Duration::from_secs(30);

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

/// The target ids that mean this instance in a group of `vpc_id` with `target_type`: none for a
/// group outside the instance's VPCs (no instance or address of it can be registered there), and
/// none for `lambda` and `alb` groups, whose targets are functions and load balancers.
fn own_target_ids(
    facts: &InstanceFacts,
    target_type: Option<&TargetTypeEnum>,
    vpc_id: Option<&str>,
) -> BTreeSet<String> {
    let Some(vpc_id) = vpc_id else {
        return BTreeSet::new();
    };
    let in_vpc = |i: &&super::instance::Interface| i.vpc_id == vpc_id;
    match target_type {
        Some(TargetTypeEnum::Instance) | None
            if facts.vpc_id.as_deref() == Some(vpc_id)
                || facts.interfaces.iter().any(|i| in_vpc(&i)) =>
        {
            BTreeSet::from([facts.instance_id.clone()])
        }
        Some(TargetTypeEnum::Ip) => facts
            .interfaces
            .iter()
            .filter(in_vpc)
            .flat_map(|i| i.private_ips.iter().chain(&i.ipv6_addresses).cloned())
            .collect(),
        _ => BTreeSet::new(),
    }
}

/// A target group that may hold the instance, and the target ids that mean the instance there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub arn: String,
    pub own: BTreeSet<String>,
}

/// Pure: the groups whose targets must be read to find the instance; every other group of the
/// listing cannot hold it.
pub(crate) fn groups_to_read(facts: &InstanceFacts, groups: &[TargetGroup]) -> Vec<Candidate> {
    groups
        .iter()
        .filter_map(|g| {
            let own = own_target_ids(facts, g.target_type(), g.vpc_id());
            let arn = g.target_group_arn()?.to_owned();
            (!own.is_empty()).then_some(Candidate { arn, own })
        })
        .collect()
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
    let deadline = tokio::time::Instant::now() + SCAN_DEADLINE;
    let mut original = Vec::new();
    let result =
        deregister_all_targets(clients, list, facts, recorder, deadline, &mut original).await;
    TargetGroupCut {
        report: step_report(Step::DeregisterTargetGroups, started, result),
        original,
    }
}

/// A target group holding the instance: its ARN, the ids that mean the instance there, and the
/// instance's current registrations.
pub(crate) type Registered = (String, BTreeSet<String>, Vec<TargetDescription>);

/// What the scan of the region's target groups found by its deadline.
pub(crate) struct Scan {
    /// Target groups in the region.
    pub listed: usize,
    /// Those the instance is registered in (draining registrations excluded).
    pub registered: Vec<Registered>,
    /// Groups that may hold the instance and were not read by the deadline.
    pub unread: Vec<String>,
}

impl Scan {
    /// The error a scan that ran out of time ends its step with: the instance may still be
    /// registered in the groups it did not read.
    pub(crate) fn unread_error(&self, deadline: Duration) -> Option<AwsError> {
        (!self.unread.is_empty()).then(|| {
            AwsError::local(
                "DescribeTargetHealth",
                format!(
                    "at risk: {} target group(s) of the instance's VPCs not scanned within {} s, \
                     so it may still receive traffic through them: {}",
                    self.unread.len(),
                    deadline.as_secs(),
                    self.unread.join(", ")
                ),
            )
        })
    }
}

/// Lists the region's target groups and reads those that may hold the instance, until
/// `deadline`. Reads only.
pub(crate) async fn registered_groups(
    clients: &Clients,
    list: &TargetGroupList,
    facts: &InstanceFacts,
    deadline: tokio::time::Instant,
) -> Result<Scan, AwsError> {
    let groups = tokio::time::timeout_at(deadline, list.get(clients))
        .await
        .map_err(|_| {
            AwsError::local(
                "DescribeTargetGroups",
                "at risk: the region's target groups were not listed by the scan's deadline, \
                 so none was read"
                    .to_owned(),
            )
        })??;
    let reads: Vec<(Candidate, Option<Vec<TargetDescription>>)> =
        stream::iter(groups_to_read(facts, &groups))
            .map(|candidate| async move {
                // A read not started by the deadline is not started at all.
                if tokio::time::Instant::now() >= deadline {
                    return Ok((candidate, None));
                }
                match tokio::time::timeout_at(deadline, list.targets(clients, &candidate.arn)).await
                {
                    Ok(targets) => {
                        let mine = own_registrations(&targets?, &candidate.own);
                        Ok((candidate, Some(mine)))
                    }
                    Err(_) => Ok::<_, AwsError>((candidate, None)),
                }
            })
            .buffer_unordered(TARGET_HEALTH_CONCURRENCY)
            .try_collect()
            .await?;
    let mut scan = Scan {
        listed: groups.len(),
        registered: Vec::new(),
        unread: Vec::new(),
    };
    for (candidate, read) in reads {
        match read {
            Some(targets) if !targets.is_empty() => {
                scan.registered
                    .push((candidate.arn, candidate.own, targets))
            }
            Some(_) => {}
            None => scan.unread.push(candidate.arn),
        }
    }
    scan.unread.sort();
    Ok(scan)
}

async fn deregister_all_targets(
    clients: &Clients,
    list: &TargetGroupList,
    facts: &InstanceFacts,
    recorder: Option<Recorder<'_>>,
    deadline: tokio::time::Instant,
    original: &mut Vec<TargetRegistration>,
) -> Result<StepResult, AwsError> {
    let scan = registered_groups(clients, list, facts, deadline).await?;
    let unread = scan.unread_error(SCAN_DEADLINE);
    let registered = scan.registered;
    if registered.is_empty() {
        return match unread {
            Some(e) => Err(e),
            None => Ok(StepResult::unchanged(format!(
                "registered in none of {} target group(s)",
                scan.listed
            ))),
        };
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
    let done = format!("deregistered from {}", names.join(", "));
    // What was found is deregistered; the groups not read still fail the step.
    let result = match unread {
        Some(e) => Err(AwsError {
            message: format!("{done}; {}", e.message),
            ..e
        }),
        None => Ok(StepResult::done(done)),
    };
    unrecorded(result, remembered)
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

#[cfg(test)]
mod tests {
    use aws_sdk_elasticloadbalancingv2::types::TargetGroup;
    use serde_json::Value;

    use super::*;
    use crate::contain::instance::Interface;

    fn facts() -> InstanceFacts {
        let interface = |id: &str, vpc: &str, ip: &str| Interface {
            id: id.to_owned(),
            vpc_id: vpc.to_owned(),
            groups: vec!["sg-1".to_owned()],
            private_ips: vec![ip.to_owned()],
            ipv6_addresses: Vec::new(),
            connection_tracking: None,
        };
        InstanceFacts {
            instance_id: "i-1".to_owned(),
            state: "running".to_owned(),
            vpc_id: Some("vpc-a".to_owned()),
            interfaces: vec![
                interface("eni-1", "vpc-a", "10.0.0.5"),
                interface("eni-2", "vpc-b", "10.1.0.5"),
            ],
            profile_arn: None,
            volumes: Vec::new(),
            root_device_name: None,
            root_device_is_ebs: true,
            spot: false,
            tags: Default::default(),
            metadata: Value::Null,
        }
    }

    fn group(arn: &str, target_type: Option<&str>, vpc: Option<&str>) -> TargetGroup {
        TargetGroup::builder()
            .target_group_arn(arn)
            .set_target_type(target_type.map(TargetTypeEnum::from))
            .set_vpc_id(vpc.map(str::to_owned))
            .build()
    }

    #[test]
    fn only_groups_of_the_instances_vpcs_that_can_hold_it_are_read() {
        let groups = [
            group("tg-instance-a", Some("instance"), Some("vpc-a")),
            // The second interface's VPC is one of the instance's too.
            group("tg-instance-b", Some("instance"), Some("vpc-b")),
            group("tg-instance-other", Some("instance"), Some("vpc-other")),
            group("tg-untyped-a", None, Some("vpc-a")),
            group("tg-ip-b", Some("ip"), Some("vpc-b")),
            group("tg-ip-other", Some("ip"), Some("vpc-other")),
            group("tg-lambda", Some("lambda"), None),
            group("tg-alb-a", Some("alb"), Some("vpc-a")),
            group("tg-no-vpc", Some("instance"), None),
        ];
        let read = groups_to_read(&facts(), &groups);
        let ids = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(
            read,
            vec![
                Candidate {
                    arn: "tg-instance-a".to_owned(),
                    own: ids(&["i-1"])
                },
                Candidate {
                    arn: "tg-instance-b".to_owned(),
                    own: ids(&["i-1"])
                },
                Candidate {
                    arn: "tg-untyped-a".to_owned(),
                    own: ids(&["i-1"])
                },
                // By the addresses of the interface in that VPC only.
                Candidate {
                    arn: "tg-ip-b".to_owned(),
                    own: ids(&["10.1.0.5"])
                },
            ]
        );
    }

    #[test]
    fn a_scan_with_unread_groups_names_them_as_at_risk() {
        let scan = Scan {
            listed: 2000,
            registered: Vec::new(),
            unread: vec!["tg-1".to_owned(), "tg-2".to_owned()],
        };
        let e = scan.unread_error(SCAN_DEADLINE).expect("an error");
        assert_eq!(e.operation, "DescribeTargetHealth");
        assert!(e.message.starts_with("at risk: 2 target group(s)"), "{e}");
        assert!(e.message.ends_with("tg-1, tg-2"), "{e}");
        let complete = Scan {
            unread: Vec::new(),
            ..scan
        };
        assert!(complete.unread_error(SCAN_DEADLINE).is_none());
    }
}
