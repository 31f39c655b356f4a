//! What every end-to-end test needs: SDK clients pointed at the emulator that `scripts/test.sh`
//! starts, a record of the calls the function makes, and scenarios (a small account built per
//! test, with its own VPC and names so that tests can run in parallel on one emulator).

pub mod aws_like;
pub mod faults;
pub mod scenario;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use aws_config::SdkConfig;
use aws_like::{AwsLike, Behaviour};
use aws_sdk_ec2::config::Credentials;
use aws_sdk_ec2::operation::create_tags::CreateTagsInput;
use aws_sdk_ec2::operation::modify_network_interface_attribute::ModifyNetworkInterfaceAttributeInput;
use aws_sdk_elasticloadbalancingv2::operation::describe_target_health::DescribeTargetHealthInput;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use ec2_quarantine::accounts::{Accounts, OwnAccount};
use ec2_quarantine::aws::{config_loader, Clients};
use ec2_quarantine::config::Config;

pub const REGION: &str = "us-east-1";
/// The emulator's default account, where the function under test runs (the security account).
pub const OWN_ACCOUNT: &str = "123456789012";
/// The ARN Lambda would invoke the function under test by.
pub const FUNCTION_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:ec2-quarantine";
/// The incident table every test shares; records are keyed by instance id, which never repeat.
pub const INCIDENT_TABLE: &str = "ec2-quarantine-incidents";

/// The emulator's address, set by `scripts/test.sh`.
pub fn endpoint() -> String {
    std::env::var("EC2Q_TEST_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "EC2Q_TEST_ENDPOINT is not set: run the suite with scripts/test.sh (or `make test`), \
             which starts the AWS emulator and points the tests at it"
        )
    })
}

/// The SDK configuration the function itself uses (retries, timeouts), pointed at the emulator,
/// with the incident table in place and the tests' HTTP layer under it.
pub async fn sdk_config() -> SdkConfig {
    let sdk = config_loader()
        .endpoint_url(endpoint())
        .region(aws_config::Region::new(REGION))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .load()
        .await;
    static TABLE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    TABLE.get_or_init(|| create_incident_table(&sdk)).await;
    // Through the HTTP layer even with no fault, for the calls AWS makes atomic.
    with_faults(&sdk, &faults::Faults::default())
}

/// The table as template.yaml defines it: one item per instance. Made once in the tests' own
/// account; a test that runs the function in an account of its own makes it there.
pub async fn create_incident_table(sdk: &SdkConfig) {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    let created = aws_sdk_dynamodb::Client::new(sdk)
        .create_table()
        .table_name(INCIDENT_TABLE)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("instance_id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("instance_id")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await;
    if let Err(e) = created {
        let in_use = e
            .as_service_error()
            .is_some_and(|e| e.is_resource_in_use_exception());
        assert!(in_use, "cannot create the incident table: {e:?}");
    }
}

/// The same configuration (the function's own retries and timeouts), with its HTTP calls going
/// through `faults`.
pub fn with_faults(sdk: &SdkConfig, faults: &faults::Faults) -> SdkConfig {
    sdk.to_builder().http_client(faults.client()).build()
}

/// For load that the emulator, which serves one request at a time, queues far longer than AWS
/// would: generous timeouts, and no stalled-stream check (a request waiting in the emulator's
/// queue, or for its turn at a call AWS makes atomic, sends nothing for seconds). The figures
/// these runs give are about convergence under concurrency, not latency.
pub fn patient(sdk: &SdkConfig) -> SdkConfig {
    use std::time::Duration;
    sdk.to_builder()
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(60))
                .operation_attempt_timeout(Duration::from_secs(120))
                .operation_timeout(Duration::from_secs(300))
                .build(),
        )
        .stalled_stream_protection(
            aws_config::stalled_stream_protection::StalledStreamProtectionConfig::disabled(),
        )
        .build()
}

/// A name no other test uses: the emulator is shared.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{prefix}-{}-{n}-{nanos:x}", std::process::id())
}

/// Every operation the function's clients sent, as `Service.Operation`, in order, and what each
/// `ModifyNetworkInterfaceAttribute` asked for.
#[derive(Clone, Debug, Default)]
pub struct CallLog {
    calls: Arc<Mutex<Vec<String>>>,
    interface_changes: Arc<Mutex<Vec<InterfaceChange>>>,
    /// The target group of each `DescribeTargetHealth`, in the order sent: the emulator is shared
    /// with tests running at once, whose groups every listing also finds.
    target_health_reads: Arc<Mutex<Vec<String>>>,
    /// The resources of each `CreateTags`, in the order sent.
    tag_writes: Arc<Mutex<Vec<Vec<String>>>>,
}

/// One `ModifyNetworkInterfaceAttribute` as sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InterfaceChange {
    Groups {
        eni: String,
        groups: Vec<String>,
    },
    ConnectionTracking {
        eni: String,
        timeouts: (i32, i32, i32),
    },
    Other {
        eni: String,
    },
}

impl InterfaceChange {
    pub fn eni(&self) -> &str {
        match self {
            Self::Groups { eni, .. }
            | Self::ConnectionTracking { eni, .. }
            | Self::Other { eni } => eni,
        }
    }
}

impl CallLog {
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// Every change sent for `eni`, in the order sent.
    pub fn interface_changes(&self, eni: &str) -> Vec<InterfaceChange> {
        self.interface_changes
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.eni() == eni)
            .cloned()
            .collect()
    }

    /// The group lists `eni` was set to, in order.
    pub fn group_changes(&self, eni: &str) -> Vec<Vec<String>> {
        self.interface_changes(eni)
            .into_iter()
            .filter_map(|c| match c {
                InterfaceChange::Groups { groups, .. } => Some(groups),
                _ => None,
            })
            .collect()
    }

    /// How many group changes were sent, to any interface.
    pub fn group_change_count(&self) -> usize {
        self.interface_changes
            .lock()
            .unwrap()
            .iter()
            .filter(|c| matches!(c, InterfaceChange::Groups { .. }))
            .count()
    }

    /// How many times the targets of `target_group_arn` were read.
    pub fn target_health_reads(&self, target_group_arn: &str) -> usize {
        self.target_health_reads
            .lock()
            .unwrap()
            .iter()
            .filter(|arn| *arn == target_group_arn)
            .count()
    }

    /// How many `CreateTags` named `resource`.
    pub fn tag_writes_on(&self, resource: &str) -> usize {
        self.tag_writes
            .lock()
            .unwrap()
            .iter()
            .filter(|resources| resources.iter().any(|r| r == resource))
            .count()
    }

    pub fn count(&self, operation: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.ends_with(&format!(".{operation}")))
            .count()
    }
}

impl Intercept for CallLog {
    fn name(&self) -> &'static str {
        "CallLog"
    }

    // Not `read_before_execution`: client interceptors run that before the operation's metadata
    // is in the bag.
    fn read_before_serialization(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let name = cfg
            .load::<Metadata>()
            .map(|m| format!("{}.{}", m.service(), m.name()))
            .unwrap_or_else(|| "unknown".to_owned());
        self.calls.lock().unwrap().push(name);
        if let Some(input) = context.input().downcast_ref::<DescribeTargetHealthInput>() {
            self.target_health_reads
                .lock()
                .unwrap()
                .push(input.target_group_arn().unwrap_or_default().to_owned());
        }
        if let Some(input) = context.input().downcast_ref::<CreateTagsInput>() {
            self.tag_writes
                .lock()
                .unwrap()
                .push(input.resources().to_vec());
        }
        if let Some(input) = context
            .input()
            .downcast_ref::<ModifyNetworkInterfaceAttributeInput>()
        {
            let eni = input.network_interface_id().unwrap_or_default().to_owned();
            let change = if let Some(groups) = input.groups.as_ref() {
                InterfaceChange::Groups {
                    eni,
                    groups: groups.clone(),
                }
            } else if let Some(c) = input.connection_tracking_specification() {
                InterfaceChange::ConnectionTracking {
                    eni,
                    timeouts: (
                        c.tcp_established_timeout().unwrap_or_default(),
                        c.udp_stream_timeout().unwrap_or_default(),
                        c.udp_timeout().unwrap_or_default(),
                    ),
                }
            } else {
                InterfaceChange::Other { eni }
            };
            self.interface_changes.lock().unwrap().push(change);
        }
        Ok(())
    }
}

/// The groups of each interface in an incident record's `original_interfaces`, in order.
pub fn recorded_interface_groups(
    item: &std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
) -> Vec<Vec<String>> {
    let interfaces: serde_json::Value =
        serde_json::from_str(item["original_interfaces"].as_s().expect("a JSON string"))
            .expect("JSON");
    interfaces
        .as_array()
        .expect("a list of interfaces")
        .iter()
        .map(|i| serde_json::from_value(i["groups"].clone()).expect("groups"))
        .collect()
}

/// The clients the function under test uses, each recording its calls in `log`, over the
/// AWS-behaviour layer as AWS behaves by default.
pub fn recorded_clients(sdk: &SdkConfig, log: &CallLog) -> Clients {
    recorded_clients_as(sdk, log, &AwsLike::new(Behaviour::default()))
}

/// Clients that arrange the account before the function runs, with the function's own code: what
/// they create has long been visible when the test starts, as in an account where it was made
/// before the incident.
pub fn arranging_clients(sdk: &SdkConfig) -> Clients {
    recorded_clients_as(
        sdk,
        &CallLog::default(),
        &AwsLike::new(Behaviour::emulator_as_is()),
    )
}

/// The same, over the AWS-behaviour layer `aws`.
pub fn recorded_clients_as(sdk: &SdkConfig, log: &CallLog, aws: &AwsLike) -> Clients {
    let http = sdk
        .http_client()
        .expect("the tests' SDK configuration has an HTTP client");
    let sdk = &sdk.to_builder().http_client(aws.wrap(http)).build();
    Clients {
        ec2: aws_sdk_ec2::Client::from_conf(
            aws_sdk_ec2::config::Builder::from(sdk)
                .interceptor(log.clone())
                .build(),
        ),
        autoscaling: aws_sdk_autoscaling::Client::from_conf(
            aws_sdk_autoscaling::config::Builder::from(sdk)
                .interceptor(log.clone())
                .build(),
        ),
        elbv2: aws_sdk_elasticloadbalancingv2::Client::from_conf(
            aws_sdk_elasticloadbalancingv2::config::Builder::from(sdk)
                .interceptor(log.clone())
                .build(),
        ),
        elb: aws_sdk_elasticloadbalancing::Client::from_conf(
            aws_sdk_elasticloadbalancing::config::Builder::from(sdk)
                .interceptor(log.clone())
                .build(),
        ),
        dynamodb: aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(sdk)
                .interceptor(log.clone())
                .build(),
        ),
        iam: aws_sdk_iam::Client::from_conf(
            aws_sdk_iam::config::Builder::from(sdk)
                .interceptor(log.clone())
                .build(),
        ),
    }
}

/// The way to other accounts, as the function has it once it runs in `OWN_ACCOUNT`: member
/// clients built from `sdk` (through its faults), each recording its calls in `log`.
pub fn accounts(sdk: &SdkConfig, log: &CallLog) -> Accounts {
    let log = log.clone();
    Accounts::new(sdk.clone(), move |sdk| recorded_clients(sdk, &log))
        .with_own_account(OwnAccount::from_function_arn(FUNCTION_ARN).expect("a function ARN"))
}

/// The function's configuration for a test: `vars` over the defaults and the test table.
pub fn config(vars: &[(&str, &str)]) -> Config {
    Config::from_lookup(|name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
            .or_else(|| (name == "INCIDENT_TABLE").then(|| INCIDENT_TABLE.to_owned()))
    })
    .expect("test configuration is valid")
}
