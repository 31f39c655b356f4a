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
    let changes = match scaling::membership(clients, instance_id).await? {
        None => Vec::new(),
        Some(group) => vec![change(
            "DetachInstances",
            &group,
            format!(
                "would detach {instance_id} from {group} without lowering its desired capacity \
                 (the group launches a replacement)"
            ),
        )],
    };
    Ok(Plan::changes(changes, "not in an Auto Scaling group"))
}

pub(super) async fn plan_target_groups(
    clients: &Clients,
    facts: &InstanceFacts,
) -> Result<Plan, AwsError> {
    let (count, registered) = load_balancing::registered_groups(
        clients,
        &load_balancing::TargetGroupList::default(),
        facts,
    )
    .await?;
    let changes = registered
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
