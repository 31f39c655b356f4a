use aws_config::SdkConfig;
use aws_sdk_ec2::types::Filter;
use ec2_quarantine::handler::{handle, Deps, HandlerError};
use ec2_quarantine::report::{InstanceOutcome, Outcome, Report, Status, Step};
use serde_json::{json, Value};

use crate::support::faults::Faults;
use crate::support::scenario::{Account, Options, Scenario};
use crate::support::{accounts, recorded_clients, unique, with_faults, CallLog, INCIDENT_TABLE};

/// A member account whose role the function can assume.
pub const MEMBER: &str = "111111111111";
/// A member account whose role the function cannot assume (not deployed there, say).
const UNREACHABLE: &str = "222222222222";
const SECURITY: &str = crate::support::OWN_ACCOUNT;

/// The member role, as member-account.yaml creates it: under the path the guard policy exempts.
/// Returns MEMBER_ROLE_NAME for it.
pub async fn member_role(account: &Account) -> String {
    let name = unique("member-responder");
    account
        .iam
        .create_role()
        .role_name(&name)
        .path("/ec2-quarantine/")
        .assume_role_policy_document(format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{SECURITY}:root"}},"Action":"sts:AssumeRole"}}]}}"#
        ))
        .send()
        .await
        .unwrap();
    format!("ec2-quarantine/{name}")
}

/// The function in the security account, its calls recorded in `log` and sent through `sdk`.
fn function(sdk: &SdkConfig, log: &CallLog, config: ec2_quarantine::config::Config) -> Deps {
    Deps {
        clients: recorded_clients(sdk, log),
        config,
        accounts: accounts(sdk, log),
    }
}

pub fn tag_event(account: &str, instance_id: &str) -> Value {
    json!({
        "version": "0",
        "id": unique("event"),
        "detail-type": "Tag Change on Resource",
        "source": "aws.tag",
        "account": account,
        "time": "2026-11-23T10:00:00Z",
        "region": "us-east-1",
        "resources": [format!("arn:aws:ec2:us-east-1:{account}:instance/{instance_id}")],
        "detail": {
            "changed-tag-keys": ["Quarantine"],
            "service": "ec2",
            "resource-type": "instance",
            "version": 2,
            "tags": {"Quarantine": "true"}
        }
    })
}

fn assume_role_calls(faults: &Faults) -> usize {
    faults
        .timeline()
        .iter()
        .filter(|c| c.operation == "AssumeRole")
        .count()
}

/// The security account's isolation profile as template.yaml names it: by ARN, in its own
/// account. The member's has the same name; the function translates the ARN.
pub fn security_profile_arn(s: &Scenario) -> String {
    format!(
        "arn:aws:iam::{SECURITY}:instance-profile/{}",
        s.isolation_profile.0
    )
}

async fn isolation_groups_named(account: &Account, name: &str) -> Vec<String> {
    account
        .ec2
        .describe_security_groups()
        .filters(Filter::builder().name("group-name").values(name).build())
        .send()
        .await
        .unwrap()
        .security_groups()
        .iter()
        .map(|g| g.group_id().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_tag_event_forwarded_from_a_member_contains_the_instance_in_the_member_account() {
    let member = Account::other(MEMBER).await;
    let role = member_role(&member).await;
    let s = Scenario::build_in(member, Options::everything()).await;
    let security = Account::new().await;
    let faults = Faults::default();
    let sdk = with_faults(&security.sdk, &faults);
    let log = CallLog::default();
    let group_name = unique("iso");
    let profile_arn = security_profile_arn(&s);
    let deps = function(
        &sdk,
        &log,
        s.config(&[
            ("MEMBER_ROLE_NAME", &role),
            ("ISOLATION_INSTANCE_PROFILE", &profile_arn),
            ("ISOLATION_SECURITY_GROUP_NAME", &group_name),
        ]),
    );

    let report = handle(tag_event(MEMBER, &s.instance_id), "r1", &deps)
        .await
        .unwrap_or_else(|e| panic!("containment in the member succeeds: {e}"));
    assert_eq!(report.outcome, Outcome::Contained, "{}", report.to_json());
    assert_eq!(report.account.as_deref(), Some(MEMBER));

    // Read back in the member account.
    let a = &s.account;
    let groups = a.groups_named(&s.vpc_id, &group_name).await;
    assert_eq!(groups.len(), 1, "one isolation group in the member's VPC");
    for eni in &s.interfaces {
        assert_eq!(a.interface_groups(eni).await, vec![groups[0].0.clone()]);
    }
    assert_eq!(
        a.profile_of(&s.instance_id).await.as_deref(),
        Some(s.isolation_profile.1.as_str()),
        "the member's own isolation profile, by the translated ARN"
    );
    assert!(s.isolation_profile.1.contains(MEMBER));
    let original_role = s
        .original_profile_arn
        .as_deref()
        .and_then(|arn| arn.rsplit('/').next())
        .unwrap();
    let deny = crate::credentials::role_policy(
        a,
        original_role,
        "ec2-quarantine-revoke-instance-credentials",
    )
    .await
    .expect("the deny is on the member's role");
    assert_eq!(
        deny["Statement"][0]["Condition"]["ArnEquals"]["ec2:SourceInstanceARN"],
        json!([format!(
            "arn:aws:ec2:us-east-1:{MEMBER}:instance/{}",
            s.instance_id
        )]),
        "{deny}"
    );
    let in_group = a
        .autoscaling
        .describe_auto_scaling_instances()
        .instance_ids(&s.instance_id)
        .send()
        .await
        .unwrap();
    assert!(in_group.auto_scaling_instances().is_empty(), "detached");
    assert_eq!(a.snapshots_of(&s.instance_id).await.len(), s.volumes.len());
    assert_eq!(
        a.tag_of(&s.instance_id, "ec2-quarantine:status")
            .await
            .as_deref(),
        Some("contained")
    );

    // Nothing in the security account's EC2; the record is there, naming the member.
    assert_eq!(
        isolation_groups_named(&security, &group_name).await,
        Vec::<String>::new()
    );
    assert!(security.snapshots_of(&s.instance_id).await.is_empty());
    let record = security
        .dynamodb
        .get_item()
        .table_name(INCIDENT_TABLE)
        .key(
            "instance_id",
            aws_sdk_dynamodb::types::AttributeValue::S(s.instance_id.clone()),
        )
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    let item = record
        .item()
        .expect("the record is in the security account");
    assert_eq!(item["account"].as_s().unwrap(), MEMBER);
    assert_eq!(item["status"].as_s().unwrap(), "contained");

    // The role was assumed once; a second event for the account reuses its credentials.
    assert_eq!(assume_role_calls(&faults), 1);
    let again = handle(tag_event(MEMBER, &s.instance_id), "r2", &deps)
        .await
        .unwrap_or_else(|e| panic!("a re-run succeeds: {e}"));
    assert_eq!(again.outcome, Outcome::Contained);
    assert_eq!(assume_role_calls(&faults), 1, "the credentials are cached");
}

#[tokio::test]
async fn a_guardduty_finding_aggregated_in_the_administrator_contains_the_members_instance() {
    let member = Account::other(MEMBER).await;
    let role = member_role(&member).await;
    let s = Scenario::build_in(
        member,
        Options {
            profile: true,
            ..Options::default()
        },
    )
    .await;
    let security = Account::new().await;
    let log = CallLog::default();
    let group_name = unique("iso");
    let deps = function(
        &security.sdk,
        &log,
        s.config(&[
            ("MEMBER_ROLE_NAME", &role),
            ("ISOLATION_SECURITY_GROUP_NAME", &group_name),
        ]),
    );
    // The administrator (this, the security account) receives the member's finding on its
    // own bus: `account` is the administrator's, `detail.accountId` the member's.
    let mut finding = crate::guardduty::sample("guardduty-instance-high.json");
    finding["id"] = json!(unique("gd-event"));
    finding["account"] = json!(SECURITY);
    finding["detail"]["accountId"] = json!(MEMBER);
    finding["detail"]["resource"]["instanceDetails"]["instanceId"] = json!(s.instance_id);

    let report = handle(finding, "r", &deps)
        .await
        .unwrap_or_else(|e| panic!("containment in the member succeeds: {e}"));
    assert_eq!(report.outcome, Outcome::Contained, "{}", report.to_json());
    assert_eq!(report.account.as_deref(), Some(MEMBER));
    let groups = s.account.groups_named(&s.vpc_id, &group_name).await;
    assert_eq!(groups.len(), 1);
    assert_eq!(
        s.account.interface_groups(&s.interfaces[0]).await,
        vec![groups[0].0.clone()]
    );
    assert_eq!(
        s.account.profile_of(&s.instance_id).await.as_deref(),
        Some(s.isolation_profile.1.as_str())
    );
    assert_eq!(
        isolation_groups_named(&security, &group_name).await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn an_account_whose_role_cannot_be_assumed_fails_clearly_and_does_not_hold_up_another() {
    let unreachable = Account::other(UNREACHABLE).await;
    let stuck = Scenario::build_in(
        unreachable,
        Options {
            profile: true,
            ..Options::default()
        },
    )
    .await;
    let member = Account::other(MEMBER).await;
    let role = member_role(&member).await;
    let s = Scenario::build_in(member, Options::default()).await;
    let security = Account::new().await;
    // The emulator lets any role be assumed, existing or not: the refusal AWS gives for a role
    // that does not exist in that account (or does not trust the function) is injected.
    let faults = Faults::default();
    faults.deny_when("AssumeRole", UNREACHABLE, "AccessDenied");
    let sdk = with_faults(&security.sdk, &faults);
    let log = CallLog::default();
    let group_name = unique("iso");
    let deps = function(
        &sdk,
        &log,
        s.config(&[
            ("MEMBER_ROLE_NAME", &role),
            ("ISOLATION_SECURITY_GROUP_NAME", &group_name),
        ]),
    );
    let groups_before = stuck.account.interface_groups(&stuck.interfaces[0]).await;

    // Both at once, as two events arriving together: a direct invocation for the member.
    let (failed, contained) = tokio::join!(
        handle(tag_event(UNREACHABLE, &stuck.instance_id), "r1", &deps),
        handle(
            json!({"instance_ids": [s.instance_id], "account": MEMBER, "reason": "SOAR 7"}),
            "r2",
            &deps
        ),
    );

    let contained: Report = contained.unwrap_or_else(|e| panic!("the member is contained: {e}"));
    assert_eq!(contained.outcome, Outcome::Contained);
    assert_eq!(
        s.account.interface_groups(&s.interfaces[0]).await,
        vec![s.account.groups_named(&s.vpc_id, &group_name).await[0]
            .0
            .clone()]
    );

    let Err(HandlerError::ContainmentIncomplete(report)) = failed else {
        panic!("the invocation fails so that Lambda retries it: {failed:?}");
    };
    let instance = &report.instances[0];
    assert_eq!(instance.outcome, InstanceOutcome::NotContained);
    let step = instance.step(Step::AssumeMemberRole).expect("the step");
    assert_eq!(step.status, Status::Failed);
    let error = step.error.as_ref().unwrap();
    assert_eq!(error.operation, "AssumeRole");
    assert_eq!(error.code.as_deref(), Some("AccessDenied"));
    assert!(
        step.detail.contains(UNREACHABLE)
            && step
                .detail
                .contains(&format!("arn:aws:iam::{UNREACHABLE}:role/{role}")),
        "names the account and the role: {}",
        step.detail
    );

    // Nothing changed in the account it could not reach, and nothing was called there.
    assert_eq!(
        stuck.account.interface_groups(&stuck.interfaces[0]).await,
        groups_before
    );
    assert_eq!(
        stuck.account.profile_of(&stuck.instance_id).await,
        stuck.original_profile_arn
    );
    assert_eq!(
        stuck
            .account
            .tag_of(&stuck.instance_id, "ec2-quarantine:status")
            .await,
        None
    );
    assert!(faults.injected("AssumeRole") >= 1);
}

#[tokio::test]
async fn without_member_role_name_an_event_for_another_account_is_refused_with_no_call() {
    let security = Account::new().await;
    let faults = Faults::default();
    let sdk = with_faults(&security.sdk, &faults);
    let log = CallLog::default();
    let deps = function(
        &sdk,
        &log,
        crate::support::config(&[("ISOLATION_INSTANCE_PROFILE", "isolation")]),
    );
    let mut finding = crate::guardduty::sample("guardduty-instance-high.json");
    finding["detail"]["accountId"] = json!(MEMBER);
    for event in [
        tag_event(MEMBER, "i-0123456789abcdef0"),
        finding,
        json!({"instance_ids": ["i-0123456789abcdef0"], "account": MEMBER}),
    ] {
        let err = handle(event.clone(), "r", &deps)
            .await
            .expect_err("another account is refused");
        assert!(matches!(err, HandlerError::InvalidEvent(_)), "{err}");
        let message = err.to_string();
        assert!(
            message.contains("MEMBER_ROLE_NAME") && message.contains(MEMBER),
            "names the setting and the account: {message}"
        );
    }
    assert_eq!(log.calls(), Vec::<String>::new(), "no AWS call");
    assert!(faults.timeline().is_empty(), "not even AssumeRole");
}
