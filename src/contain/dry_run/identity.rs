//! The credential cut, planned: the isolation profile in place of the instance's, and the deny
//! on the original role for the credentials it already holds, decided as the real steps decide
//! ([`crate::contain::identity`], [`crate::contain::credentials`]).
//!
//! IAM: `iam:GetInstanceProfile`, `iam:ListRolePolicies`, `iam:GetRolePolicy` (the association
//! is read by the runbook, beside the instance).

use futures::future::join_all;

use super::{change, Plan};
use crate::aws::{AwsError, Clients};
use crate::config::{Config, CredentialRevocation, REVOKE_INSTANCE_CREDENTIALS};
use crate::contain::credentials::{
    self, OriginalProfile, RevocationPolicy, POLICY_NAME, ROLE_POLICY_CHARS,
};
use crate::contain::identity::Association;
use crate::report::PlannedChange;

pub(super) fn plan_profile(
    config: &Config,
    instance_id: &str,
    association: Result<Option<Association>, AwsError>,
) -> Result<Plan, AwsError> {
    let isolation = &config.isolation_profile;
    Ok(match association? {
        Some(a) if isolation.matches_arn(&a.profile_arn) => {
            Plan::unchanged(format!("{instance_id} already has {}", a.profile_arn))
        }
        Some(a) => Plan::changes(
            vec![change(
                "ReplaceIamInstanceProfileAssociation",
                &a.association_id,
                format!(
                    "would replace {} with {isolation} on {instance_id} (association {})",
                    a.profile_arn, a.association_id
                ),
            )],
            "",
        ),
        None => Plan::changes(
            vec![change(
                "AssociateIamInstanceProfile",
                instance_id,
                format!("would associate {isolation} with {instance_id} (it has no profile)"),
            )],
            "",
        ),
    })
}

pub(super) async fn plan_revocation(
    clients: &Clients,
    mode: CredentialRevocation,
    instance_id: &str,
    original: OriginalProfile,
) -> Result<Plan, AwsError> {
    let profile_arn = match (mode, original) {
        (CredentialRevocation::Off, _) => {
            return Ok(Plan::skipped(format!(
                "turned off by {REVOKE_INSTANCE_CREDENTIALS}=false"
            )))
        }
        (_, OriginalProfile::None) => {
            return Ok(Plan::unchanged(
                "no credentials were issued: the instance had no profile",
            ))
        }
        (_, OriginalProfile::Replaced) => {
            return Ok(Plan::skipped(
                "the original profile was replaced by an earlier run, which revoked its \
                 credentials",
            ))
        }
        (_, OriginalProfile::Arn(arn)) => arn,
    };
    let credentials::ProfileRoles {
        instance_arn,
        roles,
    } = credentials::profile_roles(clients, instance_id, &profile_arn).await?;
    if roles.is_empty() {
        return Ok(Plan::unchanged(format!(
            "no credentials were issued: {profile_arn} has no role"
        )));
    }
    let now = credentials::issue_time_bound(std::time::SystemTime::now());
    let plans = join_all(
        roles
            .iter()
            .map(|(role, _)| plan_role(clients, role, &instance_arn, mode, &now)),
    )
    .await;
    let mut changes = Vec::new();
    let mut notes = Vec::new();
    for plan in plans {
        match plan? {
            RolePlan::Write(c) => changes.push(c),
            RolePlan::AlreadyDenied(note) => notes.push(note),
        }
    }
    Ok(Plan::changes(changes, notes.join("; ")))
}

enum RolePlan {
    Write(PlannedChange),
    AlreadyDenied(String),
}

/// The same decision as the real step's: our policy on the role, with this instance added.
async fn plan_role(
    clients: &Clients,
    role: &str,
    instance_arn: &str,
    mode: CredentialRevocation,
    now: &str,
) -> Result<RolePlan, AwsError> {
    let found = credentials::read_policy(clients, role).await?;
    let existing = match &found {
        Some(document) => RevocationPolicy::from_document(document).map_err(|e| {
            AwsError::local(
                "GetRolePolicy",
                format!("{POLICY_NAME} on role {role} is not a policy document: {e}"),
            )
        })?,
        None => RevocationPolicy::default(),
    };
    let wanted = existing.wanted(instance_arn, mode, now);
    if found.as_ref() == Some(&wanted.document()) {
        return Ok(RolePlan::AlreadyDenied(format!(
            "credentials of {instance_arn} already denied on role {role}"
        )));
    }
    let others = credentials::other_policies_chars(clients, role).await?;
    let older = |policy: &RevocationPolicy| {
        policy
            .older_than
            .as_deref()
            .map(|t| format!("; every session of the role issued before {t} denied"))
            .unwrap_or_default()
    };
    let older_only = RevocationPolicy {
        older_than: Some(now.to_owned()),
        ..existing.clone()
    };
    let detail = if others + wanted.chars() <= ROLE_POLICY_CHARS {
        format!(
            "would deny the credentials of {instance_arn} on role {role}: {POLICY_NAME} with {} \
             instance(s){}",
            wanted.instance_arns.len(),
            older(&wanted)
        )
    } else if mode == CredentialRevocation::RoleWide
        && others + older_only.chars() <= ROLE_POLICY_CHARS
    {
        format!(
            "would deny every session of role {role} issued before {now}; {instance_arn} would \
             not be listed: its inline policies would exceed {ROLE_POLICY_CHARS} characters"
        )
    } else {
        // No write: the real step fails here, before any call.
        return Ok(RolePlan::AlreadyDenied(format!(
            "a real run would FAIL to deny the credentials of {instance_arn} on role {role}: its \
             inline policies would exceed {ROLE_POLICY_CHARS} characters"
        )));
    };
    Ok(RolePlan::Write(change("PutRolePolicy", role, detail)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::InstanceProfileRef;
    use crate::report::Status;

    fn config() -> Config {
        Config::from_lookup(|name| match name {
            "ISOLATION_INSTANCE_PROFILE" => Some("iso".to_owned()),
            "INCIDENT_TABLE" => Some("incidents".to_owned()),
            _ => None,
        })
        .unwrap()
    }

    #[test]
    fn the_profile_is_replaced_associated_or_left_as_it_is() {
        let config = config();
        let association = |arn: &str| {
            Ok(Some(Association {
                association_id: "iip-assoc-1".into(),
                profile_arn: arn.into(),
            }))
        };
        let app = "arn:aws:iam::123456789012:instance-profile/app";
        let replace = plan_profile(&config, "i-12345678", association(app)).unwrap();
        assert_eq!(
            replace.changes[0].action,
            "ReplaceIamInstanceProfileAssociation"
        );
        assert_eq!(replace.changes[0].target, "iip-assoc-1");
        assert!(replace.changes[0].detail.contains(app));
        let associate = plan_profile(&config, "i-12345678", Ok(None)).unwrap();
        assert_eq!(
            (
                associate.changes[0].action.as_str(),
                associate.changes[0].target.as_str()
            ),
            ("AssociateIamInstanceProfile", "i-12345678")
        );
        assert_eq!(
            config.isolation_profile,
            InstanceProfileRef::Name("iso".into())
        );
        let isolated = plan_profile(
            &config,
            "i-12345678",
            association("arn:aws:iam::123456789012:instance-profile/iso"),
        )
        .unwrap();
        assert_eq!(
            (isolated.status, isolated.changes.len()),
            (Status::Unchanged, 0)
        );
    }
}
