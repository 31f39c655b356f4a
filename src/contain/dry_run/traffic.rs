//! Out of the Auto Scaling group and every load balancer, planned from the same reads as the
//! real steps ([`crate::contain::scaling`], [`crate::contain::load_balancing`]).
//!
//! IAM: `autoscaling:DescribeAutoScalingInstances`, `elasticloadbalancing:DescribeTargetGroups`,
//! `elasticloadbalancing:DescribeTargetHealth`, `elasticloadbalancing:DescribeLoadBalancers`.

use super::{change, Plan};
use crate::aws::{AwsError, Clients};
use crate::contain::instance::InstanceFacts;
use crate::contain::{load_balancing, scaling};

pub(super) async fn plan_detach(clients: &Clients, instance_id: &str) -> Result<Plan, AwsError> {
    let member = scaling::lifecycle(clients, instance_id).await?;
    let (changes, unchanged) = match scaling::plan(member.as_ref()) {
        scaling::Plan::NotAMember => (Vec::new(), "not in an Auto Scaling group".to_owned()),
        scaling::Plan::Detached { group, state } => {
            (Vec::new(), format!("already leaving {group} ({state})"))
        }
        scaling::Plan::Detach { group } => (
            vec![change(
                "DetachInstances",
                &group,
                format!(
                    "would detach {instance_id} from {group} without lowering its desired \
                     capacity (the group launches a replacement)"
                ),
            )],
            String::new(),
        ),
        scaling::Plan::Heartbeat { group } => (
            vec![change(
                "RecordLifecycleActionHeartbeat",
                &group,
                format!(
                    "would record a heartbeat on every termination hook of {group} holding \
                     {instance_id} (Terminating:Wait): it cannot be detached (evidence at risk)"
                ),
            )],
            String::new(),
        ),
        scaling::Plan::AtRisk { group, state } => (
            Vec::new(),
            format!(
                "{instance_id} is {state} in {group} and cannot be detached now (evidence at \
                 risk: Auto Scaling can still terminate the instance)"
            ),
        ),
    };
    Ok(Plan::changes(changes, unchanged))
}

pub(super) async fn plan_target_groups(
    clients: &Clients,
    facts: &InstanceFacts,
) -> Result<Plan, AwsError> {
    let scan = load_balancing::registered_groups(
        clients,
        &load_balancing::TargetGroupList::default(),
        facts,
        tokio::time::Instant::now() + load_balancing::SCAN_DEADLINE,
    )
    .await?;
    // A plan that could not read every group cannot say the instance is in none of them.
    if let Some(e) = scan.unread_error(load_balancing::SCAN_DEADLINE) {
        return Err(e);
    }
    let count = scan.listed;
    let changes = scan
        .registered
        .iter()
        .map(|(arn, _, targets)| {
            let targets: Vec<String> = targets
                .iter()
                .map(|t| match t.port() {
                    Some(port) => format!("{}:{port}", t.id().unwrap_or_default()),
                    None => t.id().unwrap_or_default().to_owned(),
                })
                .collect();
            change(
                "DeregisterTargets",
                arn,
                format!("would deregister {} from {arn}", targets.join(", ")),
            )
        })
        .collect();
    Ok(Plan::changes(
        changes,
        format!("registered in none of {count} target group(s)"),
    ))
}

pub(super) async fn plan_classic(clients: &Clients, instance_id: &str) -> Result<Plan, AwsError> {
    let names = load_balancing::classic_balancers_with(clients, instance_id, None).await?;
    let changes = names
        .iter()
        .map(|name| {
            change(
                "DeregisterInstancesFromLoadBalancer",
                name,
                format!("would deregister {instance_id} from classic load balancer {name}"),
            )
        })
        .collect();
    Ok(Plan::changes(
        changes,
        "registered with no classic load balancer",
    ))
}
