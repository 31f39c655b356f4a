//! This instance's ARN out of the deny that containment put on the role of its original profile
//! (`ec2-quarantine-revoke-instance-credentials`, see [`crate::contain::credentials`]). Without
//! this, the credentials the released instance gets from its restored profile would still be
//! denied: the deny matches every credential delivered to the instance, old or new.
//!
//! IAM: `iam:GetInstanceProfile`, `iam:GetRolePolicy`, `iam:PutRolePolicy` and
//! `iam:DeleteRolePolicy`, on that policy name only.
//!
//! Other instances' ARNs and statements someone else wrote stay. When no ARN remains and the
//! policy holds nothing else, it is deleted: it is this function's own policy, not evidence
//! (the report and the incident record keep what it denied). The role-wide statement
//! (`aws:TokenIssueTime`) stays: it denies only sessions issued before a containment, which
//! the released instance no longer uses once its profile is back, while an attacker may still
//! hold one; it lapses on its own as those sessions expire.
//!
//! The ARN first leaves the role's revocation list ([`crate::revocations`]): the list, not the
//! policy, is what every containment writes into the policy, so an ARN left there would come
//! back with the next instance contained under the same role. The policy is then written from
//! the list, and written again if the list's version shows a containment changed it meanwhile,
//! as containment does. A list that cannot be changed fails the step, so the release is retried.
//!
//! Idempotent: an ARN in neither the list nor the statement is `unchanged`.

use std::time::Instant;

use crate::aws::{aws_err, AwsError, Clients};
use crate::contain::credentials::{
    profile_roles, put_policy, read_policy, unless_opted_in, ProfileRoles, RevocationPolicy,
    POLICY_NAME,
};
use crate::contain::{step_report, StepResult};
use crate::incident::ProfileRecord;
use crate::report::{Step, StepReport};
use crate::revocations::RevocationLedger;

pub async fn lift_deny(
    clients: &Clients,
    ledger: &RevocationLedger,
    instance_id: &str,
    recorded: Option<&ProfileRecord>,
) -> StepReport {
    let started = Instant::now();
    let result = match recorded.map(|p| p.arn.as_deref()) {
        None => Ok(StepResult::skipped(
            "the record holds no original profile, so the role the deny is on is unknown",
        )),
        Some(None) => Ok(StepResult::unchanged(
            "the instance had no profile: no credentials were denied",
        )),
        Some(Some(profile_arn)) => lift(clients, ledger, instance_id, profile_arn).await,
    };
    step_report(Step::RestoreCredentials, started, result)
}

async fn lift(
    clients: &Clients,
    ledger: &RevocationLedger,
    instance_id: &str,
    profile_arn: &str,
) -> Result<StepResult, AwsError> {
    let ProfileRoles {
        instance_arn: arn,
        roles,
    } = profile_roles(clients, instance_id, profile_arn).await?;
    if roles.is_empty() {
        return Ok(StepResult::unchanged(format!(
            "{profile_arn} has no role: no credentials were denied"
        )));
    }
    let mut results = Vec::new();
    for (role, role_arn) in &roles {
        results.push(lift_on_role(clients, ledger, role, role_arn, &arn).await?);
    }
    Ok(StepResult::merge(results))
}

/// Writes before the step gives up on a list that concurrent containments keep changing.
const MAX_WRITES: usize = 6;

async fn lift_on_role(
    clients: &Clients,
    ledger: &RevocationLedger,
    role: &str,
    role_arn: &str,
    arn: &str,
) -> Result<StepResult, AwsError> {
    let (listed, found) = tokio::join!(ledger.remove(role_arn, arn), read_policy(clients, role));
    let mut entry = listed.map_err(|e| AwsError {
        message: format!(
            "{arn} could not be taken off the revocation list of role {role}, so the next \
             containment under that role would deny it again; nothing was changed on the role: \
             {}",
            e.message
        ),
        ..e
    })?;
    let mut found = found?;
    let mut detail = None;
    let mut settled = false;
    for _ in 0..MAX_WRITES {
        let policy = match &found {
            Some(document) => RevocationPolicy::from_document(document).map_err(|e| {
                AwsError::local(
                    "GetRolePolicy",
                    format!(
                        "{POLICY_NAME} on role {role} is not a policy document, so it is not \
                         changed: {e}"
                    ),
                )
            })?,
            None => RevocationPolicy::default(),
        };
        // IAM does not deny this instance (its deny was never written: a role that did not
        // opt in, say): nothing to lift, and the role's other listed ARNs are not this
        // release's to write (a refused write would leave the release partial for good).
        if detail.is_none() && !policy.instance_arns.contains(arn) {
            settled = true;
            break;
        }
        // Everything the list holds stays denied, with whatever the policy holds that the list
        // does not (fail closed): only this instance's ARN leaves.
        let mut lifted = policy.clone();
        lifted
            .instance_arns
            .extend(entry.instance_arns.iter().cloned());
        lifted.instance_arns.remove(arn);
        if lifted == policy {
            settled = true;
            break;
        }
        detail = Some(write(clients, role, arn, &lifted).await?);
        let current = ledger.current(role_arn).await?;
        if current.version == entry.version {
            settled = true;
            break;
        }
        entry = current;
        found = match lifted.instance_arns.is_empty()
            && lifted.older_than.is_none()
            && lifted.others.is_empty()
        {
            true => None,
            false => Some(lifted.document()),
        };
    }
    // A write made from a list that kept changing may have landed after a containment's, and
    // dropped the instance it added: fail, so that the release is run again and writes the
    // list as it then stands.
    if !settled {
        return Err(AwsError::local(
            "GetItem",
            format!(
                "the revocation list of role {role} kept changing over {MAX_WRITES} writes of \
                 {POLICY_NAME}; run the release again so that the policy holds the list as it \
                 stands"
            ),
        ));
    }
    let read_back = match read_policy(clients, role).await? {
        None => RevocationPolicy::default(),
        Some(document) => RevocationPolicy::from_document(&document)
            .map_err(|e| AwsError::local("GetRolePolicy", e))?,
    };
    if read_back.instance_arns.contains(arn) {
        return Err(AwsError::local(
            "GetRolePolicy",
            format!("read back {POLICY_NAME} on role {role} still denying {arn}"),
        ));
    }
    Ok(match detail {
        Some(detail) => StepResult::done(detail),
        None => StepResult::unchanged(format!("{arn} is not denied on role {role}")),
    })
}

/// Puts `lifted` on the role, or deletes the policy when nothing is left in it.
async fn write(
    clients: &Clients,
    role: &str,
    arn: &str,
    lifted: &RevocationPolicy,
) -> Result<String, AwsError> {
    if lifted.instance_arns.is_empty() && lifted.older_than.is_none() && lifted.others.is_empty() {
        clients
            .iam
            .delete_role_policy()
            .role_name(role)
            .policy_name(POLICY_NAME)
            .send()
            .await
            .map_err(aws_err("DeleteRolePolicy"))
            .map_err(|e| unless_opted_in(e, role))?;
        return Ok(format!(
            "removed {arn} from role {role}; no instance was left, so {POLICY_NAME} is deleted"
        ));
    }
    put_policy(clients, role, lifted).await?;
    let kept = match &lifted.older_than {
        Some(t) => format!("; the role-wide deny of sessions issued before {t} stays"),
        None => String::new(),
    };
    Ok(format!(
        "removed {arn} from {POLICY_NAME} on role {role} ({} instance(s) still denied){kept}",
        lifted.instance_arns.len()
    ))
}
