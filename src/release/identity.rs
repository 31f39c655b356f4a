//! The original instance profile back in place of the isolation profile, or no profile when the
//! instance had none.
//!
//! IAM: `ec2:DescribeIamInstanceProfileAssociations`, `ec2:ReplaceIamInstanceProfileAssociation`,
//! `ec2:AssociateIamInstanceProfile`, `ec2:DisassociateIamInstanceProfile`, and `iam:PassRole`
//! on the original roles: the reason release runs under a role of its own.
//!
//! Only the isolation profile is replaced. A profile that is neither the isolation profile nor
//! the original one was put there by someone after containment; it is left alone and the step
//! fails, saying so. Idempotent: the original profile already in place is `unchanged`.

use std::time::Instant;

use aws_sdk_ec2::types::IamInstanceProfileSpecification;

use crate::aws::{aws_err, AwsError, Clients};
use crate::config::InstanceProfileRef;
use crate::contain::identity::{current_association, Association};
use crate::contain::{step_report, StepResult};
use crate::incident::ProfileRecord;
use crate::report::{Step, StepReport};

pub async fn restore_profile(
    clients: &Clients,
    isolation: &InstanceProfileRef,
    instance_id: &str,
    recorded: Option<&ProfileRecord>,
) -> StepReport {
    let started = Instant::now();
    let result = match recorded {
        None => Ok(StepResult::skipped(
            "the record holds no original profile (containment did not get to record it); the \
             profile is left as it is",
        )),
        Some(recorded) => restore(clients, isolation, instance_id, recorded.arn.as_deref()).await,
    };
    step_report(Step::RestoreInstanceProfile, started, result)
}

async fn restore(
    clients: &Clients,
    isolation: &InstanceProfileRef,
    instance_id: &str,
    original: Option<&str>,
) -> Result<StepResult, AwsError> {
    let current = current_association(clients, instance_id).await?;
    let detail = match (&current, original) {
        (None, None) => {
            return Ok(StepResult::unchanged(
                "the instance had no profile, and has none",
            ))
        }
        (Some(a), Some(original)) if a.profile_arn == original => {
            return Ok(StepResult::unchanged(format!(
                "{original} already in place"
            )))
        }
        (Some(a), _) if !isolation.matches_arn(&a.profile_arn) => {
            return Err(AwsError::local(
                "DescribeIamInstanceProfileAssociations",
                format!(
                    "{instance_id} now has {}, which is neither the isolation profile nor the \
                     original {}: someone changed it after containment, so it is left alone",
                    a.profile_arn,
                    original.unwrap_or("(none)")
                ),
            ))
        }
        (Some(a), None) => {
            disassociate(clients, a).await?;
            format!("removed {} (the instance had no profile)", a.profile_arn)
        }
        (Some(a), Some(original)) => {
            clients
                .ec2
                .replace_iam_instance_profile_association()
                .association_id(&a.association_id)
                .iam_instance_profile(
                    IamInstanceProfileSpecification::builder()
                        .arn(original)
                        .build(),
                )
                .send()
                .await
                .map_err(aws_err("ReplaceIamInstanceProfileAssociation"))?;
            format!("replaced {} with {original}", a.profile_arn)
        }
        // The isolation profile is gone (removed by hand): the original goes back all the same.
        (None, Some(original)) => {
            clients
                .ec2
                .associate_iam_instance_profile()
                .instance_id(instance_id)
                .iam_instance_profile(
                    IamInstanceProfileSpecification::builder()
                        .arn(original)
                        .build(),
                )
                .send()
                .await
                .map_err(aws_err("AssociateIamInstanceProfile"))?;
            format!("associated {original} (the instance had no profile now)")
        }
    };
    let now = current_association(clients, instance_id).await?;
    match (now.as_ref().map(|a| a.profile_arn.as_str()), original) {
        (now, original) if now == original => Ok(StepResult::done(detail)),
        (now, original) => Err(AwsError::local(
            "DescribeIamInstanceProfileAssociations",
            format!(
                "read back {instance_id} with profile {now:?}, expected {:?}",
                original
            ),
        )),
    }
}

/// The isolation profile off an instance that had none before containment: the one case where
/// release removes an association rather than replacing it.
async fn disassociate(clients: &Clients, association: &Association) -> Result<(), AwsError> {
    clients
        .ec2
        .disassociate_iam_instance_profile()
        .association_id(&association.association_id)
        .send()
        .await
        .map(|_| ())
        .map_err(aws_err("DisassociateIamInstanceProfile"))
}
