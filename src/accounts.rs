//! Many accounts: which account an event's instances are in, and the clients that reach it.
//!
//! One responder in a security account contains instances of its member accounts. The
//! function's own account and partition come from the invoked function's ARN, which Lambda
//! gives with every invocation, so learning them costs no call. An instance in another account
//! is contained there with the member role (`MEMBER_ROLE_NAME`, created in each member by
//! `member-account.yaml`): every EC2, IAM, Auto Scaling and load-balancing call runs with it.
//! The incident table stays in the security account, so the member's clients keep the
//! security account's DynamoDB client.
//!
//! IAM: `sts:AssumeRole` on `arn:PARTITION:iam::*:role/MEMBER_ROLE_NAME` (the function's role).
//! The release function has its own `MEMBER_ROLE_NAME`, the member release role, and reaches a
//! member's instance through it the same way, for the account its incident record names.
//!
//! The assumed credentials are cached per account and role for the life of the warm container
//! and renewed five minutes before they expire, so only the first containment in an account
//! (per container) pays the `AssumeRole` round trip in front of its cuts. A failure is not
//! cached: the next invocation, Lambda's retry, tries again. Each account has its own lock, so
//! an account whose role cannot be assumed never holds up another.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{future, ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;

use crate::aws::{aws_err, AwsError, Clients};
use crate::config::{Config, InstanceProfileRef};
use crate::event::{ContainRequest, EventError};
use crate::report::{InstanceOutcome, InstanceReport, Report, Status, Step, StepReport};

/// Assumed credentials closer than this to their expiry are renewed before use: a containment
/// (at most the function's timeout, 150 s) never starts with credentials that lapse midway.
const RENEW_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);

/// The account, partition and name of the running function, from its ARN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnAccount {
    pub account: String,
    pub partition: String,
    pub function_name: String,
}

impl OwnAccount {
    /// `arn:PARTITION:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]`.
    pub fn from_function_arn(arn: &str) -> Option<Self> {
        let parts: Vec<&str> = arn.split(':').collect();
        match parts.as_slice() {
            ["arn", partition, "lambda", _region, account, "function", name, ..]
                if partition.starts_with("aws")
                    && account.len() == 12
                    && account.bytes().all(|b| b.is_ascii_digit())
                    && !name.is_empty() =>
            {
                Some(Self {
                    account: (*account).to_owned(),
                    partition: (*partition).to_owned(),
                    function_name: (*name).to_owned(),
                })
            }
            _ => None,
        }
    }

    /// Names the responder in the member's CloudTrail: `ec2-quarantine.<function name>`, within
    /// STS's 64 characters.
    fn session_name(&self) -> String {
        let mut name = format!("ec2-quarantine.{}", self.function_name);
        name.truncate(64);
        name
    }
}

/// Where a request's instances are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The function's own account (`None` when the request named none and the function's own
    /// account is not known).
    Own(Option<String>),
    Member(Member),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub account: String,
    pub role_arn: String,
}

/// Builds one account's clients from an SDK configuration: `Clients::new` in the function; the
/// tests add their call log.
pub type ClientsBuilder = Arc<dyn Fn(&SdkConfig) -> Clients + Send + Sync>;

/// The way to other accounts: the function's own, as learnt, and a cache of member clients.
pub struct Accounts {
    own: OnceLock<OwnAccount>,
    /// The function's own SDK configuration (endpoint, retries, timeouts, HTTP client), which
    /// member clients share; only their credentials differ.
    base: SdkConfig,
    build: ClientsBuilder,
    sts: aws_sdk_sts::Client,
    /// By role ARN, which names the account.
    members: Mutex<HashMap<String, MemberClients>>,
}

#[derive(Clone)]
struct MemberClients {
    credentials: Arc<RoleCredentials>,
    clients: Clients,
}

impl Accounts {
    pub fn new(
        base: SdkConfig,
        build: impl Fn(&SdkConfig) -> Clients + Send + Sync + 'static,
    ) -> Self {
        Self {
            own: OnceLock::new(),
            sts: aws_sdk_sts::Client::new(&base),
            base,
            build: Arc::new(build),
            members: Mutex::new(HashMap::new()),
        }
    }

    /// For tests, which call the handler without a Lambda context.
    pub fn with_own_account(self, own: OwnAccount) -> Self {
        let _ = self.own.set(own);
        self
    }

    /// Takes the function's account from the first invocation's ARN; later ones carry the same.
    pub fn learn_own_account(&self, invoked_function_arn: &str) {
        if self.own.get().is_some() {
            return;
        }
        match OwnAccount::from_function_arn(invoked_function_arn) {
            Some(own) => {
                let _ = self.own.set(own);
            }
            None => tracing::error!(
                arn = invoked_function_arn,
                "cannot read the function's account from its ARN; events naming an account \
                 will be refused"
            ),
        }
    }

    pub fn own_account(&self) -> Option<&OwnAccount> {
        self.own.get()
    }

    /// Where `account`'s instances are contained, decided with no call. Another account
    /// without `MEMBER_ROLE_NAME` is refused.
    pub fn target(
        &self,
        account: Option<&str>,
        member_role: Option<&str>,
    ) -> Result<Target, EventError> {
        let own = self.own.get();
        let Some(account) = account else {
            return Ok(Target::Own(own.map(|o| o.account.clone())));
        };
        let Some(own) = own else {
            return Err(EventError::OwnAccountUnknown(account.to_owned()));
        };
        if account == own.account {
            return Ok(Target::Own(Some(account.to_owned())));
        }
        let Some(role) = member_role else {
            return Err(EventError::OtherAccount {
                account: account.to_owned(),
                own: own.account.clone(),
            });
        };
        Ok(Target::Member(Member {
            account: account.to_owned(),
            role_arn: format!("arn:{}:iam::{account}:role/{role}", own.partition),
        }))
    }

    /// The member's clients, with credentials of its role in hand: the first call in an account
    /// assumes the role, later ones reuse the credentials until they near expiry.
    pub async fn clients_for(&self, member: &Member, own: &Clients) -> Result<Clients, AwsError> {
        let entry = {
            let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
            members
                .entry(member.role_arn.clone())
                .or_insert_with(|| self.member_clients(member, own))
                .clone()
        };
        entry.credentials.current().await.map_err(|e| AwsError {
            message: format!(
                "cannot assume {} to reach instances in account {}: {}",
                member.role_arn, member.account, e.message
            ),
            ..e
        })?;
        Ok(entry.clients)
    }

    fn member_clients(&self, member: &Member, own: &Clients) -> MemberClients {
        let session_name = self
            .own
            .get()
            .map(OwnAccount::session_name)
            .unwrap_or_else(|| "ec2-quarantine".to_owned());
        let credentials = Arc::new(RoleCredentials {
            sts: self.sts.clone(),
            role_arn: member.role_arn.clone(),
            session_name,
            current: tokio::sync::Mutex::new(None),
        });
        let sdk = self
            .base
            .to_builder()
            .credentials_provider(SharedCredentialsProvider::new(Provider(
                credentials.clone(),
            )))
            .build();
        let clients = Clients {
            // The incident record stays in the security account.
            dynamodb: own.dynamodb.clone(),
            ..(self.build)(&sdk)
        };
        MemberClients {
            credentials,
            clients,
        }
    }
}

/// The function's configuration as it applies in `account`: an isolation profile given as an
/// ARN names the security account's; the member's own has the same path and name
/// (`member-account.yaml`), so the ARN is translated. A name resolves in the member as is.
pub fn config_in(config: &Config, account: &str) -> Config {
    let isolation_profile = match &config.isolation_profile {
        InstanceProfileRef::Arn(arn) => {
            let mut parts: Vec<&str> = arn.splitn(6, ':').collect();
            if parts.len() == 6 {
                parts[4] = account;
            }
            InstanceProfileRef::Arn(parts.join(":"))
        }
        name => name.clone(),
    };
    Config {
        isolation_profile,
        ..config.clone()
    }
}

/// What a request whose member role could not be assumed reports: every instance not
/// contained, with the reason, so that the invocation fails and is retried.
pub fn not_reached(request: &ContainRequest, error: &AwsError, ms: u64) -> Report {
    let instances = request
        .instance_ids
        .iter()
        .map(|id| InstanceReport {
            instance_id: id.clone(),
            vpc_id: None,
            outcome: InstanceOutcome::NotContained,
            incident: None,
            steps: vec![StepReport {
                step: Step::AssumeMemberRole,
                status: Status::Failed,
                detail: error.to_string(),
                ms,
                error: Some(error.clone()),
                changes: Vec::new(),
            }],
            snapshots: Vec::new(),
            original: None,
            metadata: serde_json::Value::Null,
        })
        .collect();
    Report::from_instances(request.reason.clone(), instances)
}

/// One member role's credentials, assumed once and shared by every client of that account.
#[derive(Debug)]
struct RoleCredentials {
    sts: aws_sdk_sts::Client,
    role_arn: String,
    session_name: String,
    /// The lock also makes concurrent containments in one account wait for one `AssumeRole`.
    current: tokio::sync::Mutex<Option<Credentials>>,
}

impl RoleCredentials {
    async fn current(&self) -> Result<Credentials, AwsError> {
        let mut current = self.current.lock().await;
        let renew_after = SystemTime::now() + RENEW_BEFORE_EXPIRY;
        if let Some(credentials) = current
            .as_ref()
            .filter(|c| c.expiry().is_some_and(|expiry| expiry > renew_after))
        {
            return Ok(credentials.clone());
        }
        let output = self
            .sts
            .assume_role()
            .role_arn(&self.role_arn)
            .role_session_name(&self.session_name)
            .send()
            .await
            .map_err(aws_err("AssumeRole"))?;
        let assumed = output
            .credentials()
            .ok_or_else(|| AwsError::local("AssumeRole", "STS answered without credentials"))?;
        let credentials = Credentials::new(
            assumed.access_key_id(),
            assumed.secret_access_key(),
            Some(assumed.session_token().to_owned()),
            SystemTime::try_from(*assumed.expiration()).ok(),
            "ec2-quarantine-member-role",
        );
        *current = Some(credentials.clone());
        Ok(credentials)
    }
}

#[derive(Debug)]
struct Provider(Arc<RoleCredentials>);

impl ProvideCredentials for Provider {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            self.0
                .current()
                .await
                .map_err(CredentialsError::provider_error)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_own_account_partition_and_name_come_from_the_function_arn() {
        assert_eq!(
            OwnAccount::from_function_arn(
                "arn:aws-cn:lambda:cn-north-1:123456789012:function:ec2-quarantine:live"
            ),
            Some(OwnAccount {
                account: "123456789012".into(),
                partition: "aws-cn".into(),
                function_name: "ec2-quarantine".into(),
            })
        );
        for bad in [
            "",
            "arn:aws:lambda:us-east-1:1234:function:f",
            "arn:aws:iam::123456789012:role/f",
            "arn:aws:lambda:us-east-1:123456789012:function:",
        ] {
            assert_eq!(OwnAccount::from_function_arn(bad), None, "{bad}");
        }
    }

    fn accounts(own: Option<&str>) -> Accounts {
        let sdk = SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let accounts = Accounts::new(sdk, Clients::new);
        if let Some(arn) = own {
            accounts.learn_own_account(arn);
        }
        accounts
    }

    const FUNCTION: &str = "arn:aws-us-gov:lambda:us-gov-west-1:123456789012:function:responder";

    #[test]
    fn the_target_is_the_own_account_unless_the_request_names_another() {
        let a = accounts(Some(FUNCTION));
        assert_eq!(
            a.target(None, None),
            Ok(Target::Own(Some("123456789012".into())))
        );
        assert_eq!(
            a.target(Some("123456789012"), None),
            Ok(Target::Own(Some("123456789012".into())))
        );
        assert_eq!(
            a.target(Some("111111111111"), Some("ec2-quarantine/member")),
            Ok(Target::Member(Member {
                account: "111111111111".into(),
                role_arn: "arn:aws-us-gov:iam::111111111111:role/ec2-quarantine/member".into(),
            }))
        );
    }

    #[test]
    fn another_account_is_refused_without_a_member_role_or_a_known_own_account() {
        assert_eq!(
            accounts(Some(FUNCTION)).target(Some("111111111111"), None),
            Err(EventError::OtherAccount {
                account: "111111111111".into(),
                own: "123456789012".into(),
            })
        );
        let unknown = accounts(None);
        assert_eq!(
            unknown.target(Some("111111111111"), Some("member")),
            Err(EventError::OwnAccountUnknown("111111111111".into()))
        );
        assert_eq!(unknown.target(None, Some("member")), Ok(Target::Own(None)));
        // The first ARN wins: a function's ARN does not change while its container lives.
        let learnt = accounts(Some(FUNCTION));
        learnt.learn_own_account("arn:aws:lambda:us-east-1:999999999999:function:other");
        assert_eq!(learnt.own_account().unwrap().account, "123456789012");
    }

    #[test]
    fn the_session_name_names_the_function_within_sixty_four_characters() {
        let own = OwnAccount {
            account: "123456789012".into(),
            partition: "aws".into(),
            function_name: "f".repeat(64),
        };
        let name = own.session_name();
        assert!(name.starts_with("ec2-quarantine.fff"));
        assert_eq!(name.len(), 64);
    }

    #[test]
    fn an_isolation_profile_arn_is_translated_into_the_member_account_and_a_name_is_kept() {
        let base = crate::config::Config::from_lookup(|name| match name {
            "ISOLATION_INSTANCE_PROFILE" => Some(
                "arn:aws:iam::123456789012:instance-profile/ec2-quarantine-isolation/iso".into(),
            ),
            "INCIDENT_TABLE" => Some("incidents".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            config_in(&base, "111111111111").isolation_profile,
            InstanceProfileRef::Arn(
                "arn:aws:iam::111111111111:instance-profile/ec2-quarantine-isolation/iso".into()
            )
        );
        let named = Config {
            isolation_profile: InstanceProfileRef::Name("iso".into()),
            ..base
        };
        assert_eq!(
            config_in(&named, "111111111111").isolation_profile,
            InstanceProfileRef::Name("iso".into())
        );
    }
}
