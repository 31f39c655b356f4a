//! The instance back into the target groups it was in, on the ports it was registered on (`ip`
//! groups by the address recorded), and into its classic load balancers.
//!
//! IAM: `elasticloadbalancing:RegisterTargets`, `elasticloadbalancing:DescribeTargetHealth`,
//! `elasticloadbalancing:RegisterInstancesWithLoadBalancer`,
//! `elasticloadbalancing:DescribeLoadBalancers`.
//!
//! A target group or load balancer deleted since containment is skipped and named. Idempotent:
//! a registration already there is `unchanged`.

use std::time::Instant;

use aws_sdk_elasticloadbalancing::types::Instance;
use aws_sdk_elasticloadbalancingv2::types::TargetDescription;
use futures::future::join_all;

use crate::aws::{aws_err, AwsError, Clients};
use crate::contain::{step_report, StepResult};
use crate::report::{Step, StepReport, TargetRegistration};

/// Merges the parts of a step: the first failure fails it, with the others' outcome in its
/// message.
fn combine(results: Vec<Result<StepResult, AwsError>>) -> Result<StepResult, AwsError> {
    let mut parts = Vec::new();
    let mut failure = None;
    for result in results {
        match result {
            Ok(part) => parts.push(part),
            Err(e) if failure.is_none() => failure = Some(e),
            Err(e) => parts.push(StepResult::skipped(e.to_string())),
        }
    }
    match failure {
        Some(e) if parts.is_empty() => Err(e),
        Some(e) => Err(AwsError {
            message: format!("{}; {}", e.message, StepResult::merge(parts).detail),
            ..e
        }),
        None => Ok(StepResult::merge(parts)),
    }
}

pub async fn register_target_groups(
    clients: &Clients,
    recorded: Option<&[TargetRegistration]>,
) -> StepReport {
    let started = Instant::now();
    let result = match recorded.filter(|r| !r.is_empty()) {
        None => Ok(StepResult::unchanged("the record holds no target group")),
        Some(recorded) => combine(join_all(recorded.iter().map(|r| register(clients, r))).await),
    };
    step_report(Step::RegisterTargetGroups, started, result)
}

fn target(r: &TargetRegistration) -> TargetDescription {
    TargetDescription::builder()
        .id(&r.target_id)
        .set_port(r.port)
        .build()
}

fn named(r: &TargetRegistration) -> String {
    match r.port {
        Some(port) => format!("{}:{port} in {}", r.target_id, r.target_group_arn),
        None => format!("{} in {}", r.target_id, r.target_group_arn),
    }
}

/// Whether the target is registered (in any state but draining) on its port.
async fn is_registered(clients: &Clients, r: &TargetRegistration) -> Result<bool, AwsError> {
    let output = clients
        .elbv2
        .describe_target_health()
        .target_group_arn(&r.target_group_arn)
        .send()
        .await
        .map_err(aws_err("DescribeTargetHealth"))?;
    Ok(output.target_health_descriptions().iter().any(|d| {
        d.target().is_some_and(|t| {
            t.id() == Some(r.target_id.as_str()) && (r.port.is_none() || t.port() == r.port)
        }) && d
            .target_health()
            .and_then(|h| h.state())
            .map(|s| s.as_str())
            != Some("draining")
    }))
}

async fn register(clients: &Clients, r: &TargetRegistration) -> Result<StepResult, AwsError> {
    match is_registered(clients, r).await {
        Ok(true) => {
            return Ok(StepResult::unchanged(format!(
                "{} already registered",
                named(r)
            )))
        }
        Ok(false) => {}
        Err(e) if e.has_code("TargetGroupNotFound") => {
            return Ok(StepResult::skipped(format!(
                "target group {} no longer exists: not registered",
                r.target_group_arn
            )))
        }
        Err(e) => return Err(e),
    }
    clients
        .elbv2
        .register_targets()
        .target_group_arn(&r.target_group_arn)
        .targets(target(r))
        .send()
        .await
        .map_err(aws_err("RegisterTargets"))?;
    if !is_registered(clients, r).await? {
        return Err(AwsError::local(
            "DescribeTargetHealth",
            format!("read back: {} is not registered", named(r)),
        ));
    }
    Ok(StepResult::done(format!("registered {}", named(r))))
}

pub async fn register_classic(
    clients: &Clients,
    instance_id: &str,
    recorded: Option<&[String]>,
) -> StepReport {
    let started = Instant::now();
    let result = match recorded.filter(|r| !r.is_empty()) {
        None => Ok(StepResult::unchanged(
            "the record holds no classic load balancer",
        )),
        Some(recorded) => combine(
            join_all(
                recorded
                    .iter()
                    .map(|name| register_with(clients, instance_id, name)),
            )
            .await,
        ),
    };
    step_report(Step::RegisterClassicLoadBalancers, started, result)
}

async fn members(clients: &Clients, name: &str) -> Result<Vec<String>, AwsError> {
    let output = clients
        .elb
        .describe_load_balancers()
        .load_balancer_names(name)
        .send()
        .await
        .map_err(aws_err("DescribeLoadBalancers"))?;
    Ok(output
        .load_balancer_descriptions()
        .iter()
        .flat_map(|d| d.instances())
        .filter_map(|i| i.instance_id().map(str::to_owned))
        .collect())
}

async fn register_with(
    clients: &Clients,
    instance_id: &str,
    name: &str,
) -> Result<StepResult, AwsError> {
    match members(clients, name).await {
        Ok(members) if members.iter().any(|m| m == instance_id) => {
            return Ok(StepResult::unchanged(format!(
                "already registered with {name}"
            )))
        }
        Ok(_) => {}
        Err(e) if e.has_code("LoadBalancerNotFound") || e.has_code("AccessPointNotFound") => {
            return Ok(StepResult::skipped(format!(
                "classic load balancer {name} no longer exists: not registered"
            )))
        }
        Err(e) => return Err(e),
    }
    clients
        .elb
        .register_instances_with_load_balancer()
        .load_balancer_name(name)
        .instances(Instance::builder().instance_id(instance_id).build())
        .send()
        .await
        .map_err(aws_err("RegisterInstancesWithLoadBalancer"))?;
    if !members(clients, name)
        .await?
        .iter()
        .any(|m| m == instance_id)
    {
        return Err(AwsError::local(
            "DescribeLoadBalancers",
            format!("read back: {instance_id} is not registered with {name}"),
        ));
    }
    Ok(StepResult::done(format!("registered with {name}")))
}
