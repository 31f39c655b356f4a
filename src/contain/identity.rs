//! The credential cut: the instance's profile association is replaced by the deny-all
//! isolation profile, so the credentials the instance fetches from now on can do nothing.
//!
//! IAM: `ec2:DescribeIamInstanceProfileAssociations`, `ec2:ReplaceIamInstanceProfileAssociation`,
//! `ec2:AssociateIamInstanceProfile`, `iam:PassRole` on the isolation role.
//!
//! Accepts any state but terminated. Idempotent: an association that already names the
//! isolation profile is left alone, and an instance without one gets it associated.
//!
//! The association is read with `DescribeIamInstanceProfileAssociations`, not from
//! `DescribeInstances`: only the former has the association id, and it starts alongside the
//! instance description so that the cut costs no extra round trip.

use std::time::Instant;

use aws_sdk_ec2::types::{
    Filter, IamInstanceProfileAssociationState, IamInstanceProfileSpecification,
};

use super::{step_report, StepResult};
use crate::aws::{aws_err, AwsError, Clients};
use crate::config::InstanceProfileRef;
use crate::consistency::{not_yet_visible, until_settled};
use crate::report::{Step, StepReport};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Association {
    pub association_id: String,
    pub profile_arn: String,
}

/// The instance's live association (associated or associating), if any.
pub async fn current_association(
    clients: &Clients,
    instance_id: &str,
) -> Result<Option<Association>, AwsError> {
    let output = clients
        .ec2
        .describe_iam_instance_profile_associations()
        .filters(
            Filter::builder()
                .name("instance-id")
                .values(instance_id)
                .build(),
        )
        .send()
        .await
        .map_err(aws_err("DescribeIamInstanceProfileAssociations"))?;
    Ok(output
        .iam_instance_profile_associations()
        .iter()
        .filter(|a| {
            a.instance_id() == Some(instance_id)
                && matches!(
                    a.state(),
                    Some(
                        IamInstanceProfileAssociationState::Associated
                            | IamInstanceProfileAssociationState::Associating
                    )
                )
        })
        .find_map(|a| {
            Some(Association {
                association_id: a.association_id()?.to_owned(),
                profile_arn: a.iam_instance_profile()?.arn()?.to_owned(),
            })
        }))
}

pub struct IdentityCut {
    pub report: StepReport,
    /// The profile the instance had (`Some(None)`: none), unless it was already isolated.
    pub original: Option<Option<String>>,
}

pub async fn replace_profile(
    clients: &Clients,
    isolation: &InstanceProfileRef,
    instance_id: &str,
    current: Result<Option<Association>, AwsError>,
) -> IdentityCut {
    let started = Instant::now();
    let current = match current {
        Ok(current) => current,
        Err(e) => {
            return IdentityCut {
                report: step_report(Step::ReplaceInstanceProfile, started, Err(e)),
                original: None,
            }
        }
    };
    let original = match &current {
        Some(a) if isolation.matches_arn(&a.profile_arn) => None,
        other => Some(other.as_ref().map(|a| a.profile_arn.clone())),
    };
    let result = swap(clients, isolation, instance_id, current).await;
    IdentityCut {
        report: step_report(Step::ReplaceInstanceProfile, started, result),
        original,
    }
}

async fn swap(
    clients: &Clients,
    isolation: &InstanceProfileRef,
    instance_id: &str,
    current: Option<Association>,
) -> Result<StepResult, AwsError> {
    let spec = match isolation {
        InstanceProfileRef::Arn(arn) => IamInstanceProfileSpecification::builder().arn(arn).build(),
        InstanceProfileRef::Name(name) => IamInstanceProfileSpecification::builder()
            .name(name)
            .build(),
    };
    let changed = match current {
        Some(a) if isolation.matches_arn(&a.profile_arn) => {
            return Ok(StepResult::unchanged(format!(
                "{} already has {}",
                instance_id, a.profile_arn
            )))
        }
        Some(a) => clients
            .ec2
            .replace_iam_instance_profile_association()
            .association_id(&a.association_id)
            .iam_instance_profile(spec)
            .send()
            .await
            .map(|_| format!("replaced {} with {}", a.profile_arn, isolation))
            .map_err(aws_err("ReplaceIamInstanceProfileAssociation")),
        None => clients
            .ec2
            .associate_iam_instance_profile()
            .instance_id(instance_id)
            .iam_instance_profile(spec)
            .send()
            .await
            .map(|_| format!("associated {isolation} (the instance had no profile)"))
            .map_err(aws_err("AssociateIamInstanceProfile")),
    };
    let detail = match changed {
        Ok(detail) => detail,
        // A concurrent invocation may have swapped the profile between our read and our write
        // (`IncorrectState`, or a stale association id): if the isolation profile is in place,
        // the cut holds and that is all that matters.
        Err(e) => {
            let isolated = |a: &Option<Association>| {
                a.as_ref()
                    .is_some_and(|a| isolation.matches_arn(&a.profile_arn))
            };
            // Only a concurrent change explains these; its write may read back stale a while.
            let concurrent = e.has_code("IncorrectState") || not_yet_visible(&e);
            let read = match concurrent {
                true => until_settled(|| current_association(clients, instance_id), isolated).await,
                false => current_association(clients, instance_id).await,
            };
            return match read {
                Ok(Some(a)) if isolation.matches_arn(&a.profile_arn) => {
                    Ok(StepResult::unchanged(format!(
                        "{} already has {} (set concurrently)",
                        instance_id, a.profile_arn
                    )))
                }
                _ => Err(e),
            };
        }
    };
    // A just-written association may read back stale for seconds.
    let read = until_settled(
        || current_association(clients, instance_id),
        |a| {
            a.as_ref()
                .is_some_and(|a| isolation.matches_arn(&a.profile_arn))
        },
    )
    .await?;
    match read {
        Some(a) if isolation.matches_arn(&a.profile_arn) => Ok(StepResult::done(detail)),
        other => Err(AwsError::local(
            "DescribeIamInstanceProfileAssociations",
            format!(
                "read back {instance_id} with profile {:?}, expected {isolation}",
                other.map(|a| a.profile_arn)
            ),
        )),
    }
}
