//! The AWS edge: the SDK clients the function uses, the one place their retry and timeout
//! behaviour is set, and the one conversion of SDK errors into [`AwsError`], which keeps the
//! operation and the service's own error code.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, SdkConfig};
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_types::error::display::DisplayErrorContext;
use serde::Serialize;

/// One client per service, built once at start and shared by every invocation.
#[derive(Clone, Debug)]
pub struct Clients {
    pub ec2: aws_sdk_ec2::Client,
    pub autoscaling: aws_sdk_autoscaling::Client,
    pub elbv2: aws_sdk_elasticloadbalancingv2::Client,
    pub elb: aws_sdk_elasticloadbalancing::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub iam: aws_sdk_iam::Client,
}

impl Clients {
    pub fn new(config: &SdkConfig) -> Self {
        Self {
            ec2: aws_sdk_ec2::Client::new(config),
            autoscaling: aws_sdk_autoscaling::Client::new(config),
            elbv2: aws_sdk_elasticloadbalancingv2::Client::new(config),
            elb: aws_sdk_elasticloadbalancing::Client::new(config),
            dynamodb: aws_sdk_dynamodb::Client::new(config),
            iam: aws_sdk_iam::Client::new(config),
        }
    }
}

/// The only SDK calls in this crate allowed to delete, terminate or detach anything, as
/// `file: call`. Containment never loses evidence and has none; release's undo calls and the
/// opt-in removal of an unencrypted snapshot after its encrypted copy completes are the only
/// ones, each named here with why it loses nothing. `tests/integration/nothing_lost.rs` enforces
/// the list.
pub const DELETING_CALLS_ALLOWED: &[&str] = &[
    // Release of an instance that had no profile: the isolation profile comes off, as the
    // instance was before; nothing of the suspect's is removed.
    "release/identity.rs: disassociate_iam_instance_profile",
    // Release: this function's own revocation policy, once no instance is left in it. Not
    // evidence: the incident record and the reports say what it denied.
    "release/credentials.rs: delete_role_policy",
    // Release: the containment's own tags on the instance (incident, time, reason, changes),
    // by key, so that a new quarantine starts a new incident; the record keeps them.
    "release/tags.rs: delete_tags",
    // An unencrypted evidence snapshot, replaced by its encrypted copy: only with
    // DELETE_UNENCRYPTED_SNAPSHOTS=true (off by default), only for a snapshot tagged as this
    // function's evidence, and only through a `Verified` proof that its copy exists, is complete,
    // is encrypted with SNAPSHOT_KMS_KEY_ID and is tagged as the copy of exactly that snapshot.
    // Keeping both would leave the evidence readable unencrypted, which is what the setting is for.
    "evidence_copy/retire.rs: delete_snapshot",
];

/// How hard the SDK retries a throttled or failed call before a step reports it: with backoff
/// doubling from 200 ms to at most 4 s, eight attempts wait out about 14 s of throttling, inside
/// the operation's 20 s.
pub const MAX_ATTEMPTS: u32 = 8;
const MAX_BACKOFF: Duration = Duration::from_secs(4);
/// One attempt that takes longer than this is abandoned and retried: an API call that hangs must
/// not hold the cuts past the function's timeout.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// The bound on one operation, all attempts and back-off included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(20);

/// The SDK configuration every client is built from, with this function's retry and timeout
/// policy. Region, credentials and `AWS_ENDPOINT_URL` come from the environment as usual.
pub fn config_loader() -> ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest())
        .retry_config(
            // Standard, not adaptive: the adaptive mode's client-side limiter is one per service
            // for the whole process, so throttling of one API (or one member account) would slow
            // every other call of that service, the cuts included, while AWS throttles per
            // account and per API ("Request throttling for the Amazon EC2 API"). Measured: a
            // detach throttled twice then waited past its 20 s timeout.
            RetryConfig::standard()
                .with_max_attempts(MAX_ATTEMPTS)
                .with_initial_backoff(Duration::from_millis(200))
                .with_max_backoff(MAX_BACKOFF),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .operation_timeout(OPERATION_TIMEOUT)
                .build(),
        )
}

/// A failed AWS call, as the report shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{operation} failed: {}{message}", code.as_deref().map(|c| format!("{c}: ")).unwrap_or_default())]
pub struct AwsError {
    pub operation: &'static str,
    /// The service's error code (`UnauthorizedOperation`, `InvalidGroup.Duplicate`, ...), or
    /// `None` when the call never got an answer (timeout, connection failure).
    pub code: Option<String>,
    pub message: String,
}

impl AwsError {
    pub fn from_sdk<E, R>(operation: &'static str, err: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let code = err.code().map(str::to_owned);
        let message = match (&err, err.message()) {
            (SdkError::ServiceError(_), Some(message)) => message.to_owned(),
            _ => DisplayErrorContext(&err).to_string(),
        };
        Self {
            operation,
            code,
            message,
        }
    }

    /// An error found by this function rather than returned by AWS (a read-back mismatch).
    pub fn local(operation: &'static str, message: impl Into<String>) -> Self {
        Self {
            operation,
            code: None,
            message: message.into(),
        }
    }

    pub fn has_code(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }
}

/// `.map_err(aws_err("DescribeInstances"))` reads better at every call site than a closure.
pub fn aws_err<E, R>(operation: &'static str) -> impl FnOnce(SdkError<E, R>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    move |err| AwsError::from_sdk(operation, err)
}
