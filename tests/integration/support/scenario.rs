//! Scenarios: a small, realistic account built in the emulator for one test, and read back
//! through the SDK afterwards (never through the function's own report).

use aws_config::SdkConfig;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, IamInstanceProfileSpecification,
    InstanceAttributeName, InstanceNetworkInterfaceSpecification, InstanceType, IpPermission,
    IpRange, RequestLaunchTemplateData, VolumeType,
};

use super::{sdk_config, unique};

/// Observer clients: they see the account as AWS would show it, outside the function.
pub struct Account {
    pub sdk: SdkConfig,
    pub ec2: aws_sdk_ec2::Client,
    pub iam: aws_sdk_iam::Client,
    pub autoscaling: aws_sdk_autoscaling::Client,
    pub elbv2: aws_sdk_elasticloadbalancingv2::Client,
    pub elb: aws_sdk_elasticloadbalancing::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
}

impl Account {
    /// The emulator's default account, where the function under test runs.
    pub async fn new() -> Self {
        Self::with(sdk_config().await)
    }

    /// Another account of the emulator, seen by an administrator there. The emulator tells
    /// accounts apart by credentials, and the credentials `AssumeRole` gives belong to the
    /// role's account (the emulator does not require the role to exist).
    pub async fn other(account_id: &str) -> Self {
        use aws_sdk_ec2::config::{Credentials, SharedCredentialsProvider};
        let sdk = sdk_config().await;
        let assumed = aws_sdk_sts::Client::new(&sdk)
            .assume_role()
            .role_arn(format!(
                "arn:aws:iam::{account_id}:role/tests-administrator"
            ))
            .role_session_name("tests")
            .send()
            .await
            .unwrap();
        let c = assumed.credentials().unwrap();
        let credentials = Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_owned()),
            None,
            "tests",
        );
        Self::with(
            sdk.to_builder()
                .credentials_provider(SharedCredentialsProvider::new(credentials))
                .build(),
        )
    }

    fn with(sdk: SdkConfig) -> Self {
        Self {
            ec2: aws_sdk_ec2::Client::new(&sdk),
            iam: aws_sdk_iam::Client::new(&sdk),
            autoscaling: aws_sdk_autoscaling::Client::new(&sdk),
            elbv2: aws_sdk_elasticloadbalancingv2::Client::new(&sdk),
            elb: aws_sdk_elasticloadbalancing::Client::new(&sdk),
            dynamodb: aws_sdk_dynamodb::Client::new(&sdk),
            sdk,
        }
    }

    pub async fn vpc(&self, cidr: &str) -> String {
        self.ec2
            .create_vpc()
            .cidr_block(cidr)
            .send()
            .await
            .unwrap()
            .vpc()
            .and_then(|v| v.vpc_id())
            .unwrap()
            .to_owned()
    }

    pub async fn subnet(&self, vpc_id: &str, cidr: &str) -> String {
        self.ec2
            .create_subnet()
            .vpc_id(vpc_id)
            .cidr_block(cidr)
            .availability_zone("us-east-1a")
            .send()
            .await
            .unwrap()
            .subnet()
            .and_then(|s| s.subnet_id())
            .unwrap()
            .to_owned()
    }

    /// An application group with an inbound and the default outbound rule, like a real one.
    pub async fn app_group(&self, vpc_id: &str) -> String {
        let group_id = self
            .ec2
            .create_security_group()
            .group_name(unique("app"))
            .description("application")
            .vpc_id(vpc_id)
            .send()
            .await
            .unwrap()
            .group_id()
            .unwrap()
            .to_owned();
        self.ec2
            .authorize_security_group_ingress()
            .group_id(&group_id)
            .ip_permissions(
                IpPermission::builder()
                    .ip_protocol("tcp")
                    .from_port(443)
                    .to_port(443)
                    .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
                    .build(),
            )
            .send()
            .await
            .unwrap();
        group_id
    }

    /// A role trusted by EC2 and its instance profile; returns the profile's (name, ARN).
    pub async fn instance_profile(&self, prefix: &str) -> (String, String) {
        let name = unique(prefix);
        self.iam
            .create_role()
            .role_name(&name)
            .assume_role_policy_document(
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#,
            )
            .send()
            .await
            .unwrap();
        let arn = self
            .iam
            .create_instance_profile()
            .instance_profile_name(&name)
            .send()
            .await
            .unwrap()
            .instance_profile()
            .map(|p| p.arn().to_owned())
            .unwrap();
        self.iam
            .add_role_to_instance_profile()
            .instance_profile_name(&name)
            .role_name(&name)
            .send()
            .await
            .unwrap();
        (name, arn)
    }

    /// The groups of one interface, as EC2 now shows them.
    pub async fn interface_groups(&self, eni_id: &str) -> Vec<String> {
        let out = self
            .ec2
            .describe_network_interfaces()
            .network_interface_ids(eni_id)
            .send()
            .await
            .unwrap();
        out.network_interfaces()[0]
            .groups()
            .iter()
            .map(|g| g.group_id().unwrap().to_owned())
            .collect()
    }

    /// Every group named `name` in `vpc_id`, with its rule counts (ingress, egress).
    pub async fn groups_named(&self, vpc_id: &str, name: &str) -> Vec<(String, usize, usize)> {
        let out = self
            .ec2
            .describe_security_groups()
            .filters(Filter::builder().name("vpc-id").values(vpc_id).build())
            .filters(Filter::builder().name("group-name").values(name).build())
            .send()
            .await
            .unwrap();
        out.security_groups()
            .iter()
            .map(|g| {
                (
                    g.group_id().unwrap().to_owned(),
                    g.ip_permissions().len(),
                    g.ip_permissions_egress().len(),
                )
            })
            .collect()
    }

    /// The profile ARN of the instance's live association (not `DescribeInstances`, which the
    /// emulator does not update on replace).
    pub async fn profile_of(&self, instance_id: &str) -> Option<String> {
        let out = self
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
            .unwrap();
        out.iam_instance_profile_associations()
            .iter()
            .find(|a| a.state().map(|s| s.as_str()) == Some("associated"))
            .and_then(|a| a.iam_instance_profile()?.arn().map(str::to_owned))
    }

    pub async fn instance(&self, instance_id: &str) -> aws_sdk_ec2::types::Instance {
        let out = self
            .ec2
            .describe_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .unwrap();
        out.reservations()[0].instances()[0].clone()
    }

    pub async fn tag_of(&self, instance_id: &str, key: &str) -> Option<String> {
        self.instance(instance_id)
            .await
            .tags()
            .iter()
            .find(|t| t.key() == Some(key))
            .and_then(|t| t.value().map(str::to_owned))
    }

    /// The `ec2-quarantine:` tags of any resource (an interface, a volume), by key.
    pub async fn marks_of(&self, resource_id: &str) -> std::collections::BTreeMap<String, String> {
        self.ec2
            .describe_tags()
            .filters(
                Filter::builder()
                    .name("resource-id")
                    .values(resource_id)
                    .build(),
            )
            .send()
            .await
            .unwrap()
            .tags()
            .iter()
            .filter(|t| t.key().is_some_and(|k| k.starts_with("ec2-quarantine:")))
            .map(|t| {
                (
                    t.key().unwrap().to_owned(),
                    t.value().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }

    pub async fn attribute(&self, instance_id: &str, name: InstanceAttributeName) -> String {
        let out = self
            .ec2
            .describe_instance_attribute()
            .instance_id(instance_id)
            .attribute(name)
            .send()
            .await
            .unwrap();
        if let Some(v) = out.disable_api_termination() {
            return v.value().unwrap_or(false).to_string();
        }
        if let Some(v) = out.disable_api_stop() {
            return v.value().unwrap_or(false).to_string();
        }
        if let Some(v) = out.instance_initiated_shutdown_behavior() {
            return v.value().unwrap_or_default().to_owned();
        }
        String::new()
    }

    /// (snapshot id, volume id) of every snapshot tagged with this instance.
    pub async fn snapshots_of(&self, instance_id: &str) -> Vec<(String, String)> {
        let out = self
            .ec2
            .describe_snapshots()
            .filters(
                Filter::builder()
                    .name("tag:ec2-quarantine:instance-id")
                    .values(instance_id)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        out.snapshots()
            .iter()
            .map(|s| {
                (
                    s.snapshot_id().unwrap().to_owned(),
                    s.volume_id().unwrap().to_owned(),
                )
            })
            .collect()
    }
}

/// What a scenario holds besides the instance.
#[derive(Default)]
pub struct Options {
    pub second_interface: bool,
    pub interface_in_other_vpc: bool,
    pub profile: bool,
    pub auto_scaling_group: bool,
    pub load_balancers: bool,
}

impl Options {
    pub fn everything() -> Self {
        Self {
            second_interface: true,
            interface_in_other_vpc: false,
            profile: true,
            auto_scaling_group: true,
            load_balancers: true,
        }
    }
}

pub struct Scenario {
    pub account: Account,
    pub vpc_id: String,
    pub subnet_id: String,
    pub other_vpc_id: Option<String>,
    pub instance_id: String,
    pub interfaces: Vec<String>,
    pub app_groups: Vec<String>,
    pub volumes: Vec<String>,
    pub original_profile_arn: Option<String>,
    /// (name, ARN) of the deny-all profile the function is configured with.
    pub isolation_profile: (String, String),
    pub auto_scaling_group: Option<String>,
    /// (target group ARN, port) registrations of the instance or its address.
    pub target_groups: Vec<(String, i32)>,
    pub ip_target_group: Option<String>,
    pub classic_load_balancer: Option<String>,
    pub isolation_group_name: String,
}

fn short_name(prefix: &str) -> String {
    // Load balancer and target group names allow 32 characters.
    let mut name: String = unique(prefix).replace(['_', '.'], "-");
    if name.len() > 32 {
        name = format!("{prefix}-{}", &name[name.len() - (31 - prefix.len())..]);
    }
    name
}

impl Scenario {
    pub async fn build(options: Options) -> Self {
        Self::build_in(Account::new().await, options).await
    }

    /// The same, in `account` (another account of the emulator, say).
    pub async fn build_in(account: Account, options: Options) -> Self {
        let vpc_id = account.vpc("10.20.0.0/16").await;
        let subnet_id = account.subnet(&vpc_id, "10.20.1.0/24").await;
        let app_group = account.app_group(&vpc_id).await;
        let isolation_profile = account.instance_profile("isolation").await;
        let original_profile = if options.profile {
            Some(account.instance_profile("app").await)
        } else {
            None
        };

        let mut run = account
            .ec2
            .run_instances()
            .image_id("ami-0123456789abcdef0")
            .instance_type(InstanceType::T3Micro)
            .min_count(1)
            .max_count(1)
            .network_interfaces(
                InstanceNetworkInterfaceSpecification::builder()
                    .device_index(0)
                    .subnet_id(&subnet_id)
                    .groups(&app_group)
                    .build(),
            )
            // The emulator defaults DeleteOnTermination to false (AWS: true for the root), so
            // both are set to true, or keeping the volumes would prove nothing.
            .block_device_mappings(volume("/dev/sda1", 8))
            .block_device_mappings(volume("/dev/sdf", 20));
        if let Some((name, _)) = &original_profile {
            run = run.iam_instance_profile(
                IamInstanceProfileSpecification::builder()
                    .name(name)
                    .build(),
            );
        }
        let instance = run.send().await.unwrap().instances()[0].clone();
        let instance_id = instance.instance_id().unwrap().to_owned();
        let mut interfaces: Vec<String> = instance
            .network_interfaces()
            .iter()
            .map(|n| n.network_interface_id().unwrap().to_owned())
            .collect();
        let mut app_groups = vec![app_group.clone()];

        // The emulator's default is already "stop": start from "terminate" so the change shows.
        account
            .ec2
            .modify_instance_attribute()
            .instance_id(&instance_id)
            .attribute(InstanceAttributeName::InstanceInitiatedShutdownBehavior)
            .value("terminate")
            .send()
            .await
            .unwrap();

        if options.second_interface {
            let subnet_b = account.subnet(&vpc_id, "10.20.2.0/24").await;
            let second_group = account.app_group(&vpc_id).await;
            let eni = attach_interface(
                &account,
                &instance_id,
                &subnet_b,
                &[&app_group, &second_group],
                1,
            )
            .await;
            interfaces.push(eni);
            app_groups.push(second_group);
        }
        let mut other_vpc_id = None;
        if options.interface_in_other_vpc {
            let other_vpc = account.vpc("10.30.0.0/16").await;
            let other_subnet = account.subnet(&other_vpc, "10.30.1.0/24").await;
            let other_group = account.app_group(&other_vpc).await;
            let device = interfaces.len() as i32;
            let eni = attach_interface(
                &account,
                &instance_id,
                &other_subnet,
                &[&other_group],
                device,
            )
            .await;
            interfaces.push(eni);
            other_vpc_id = Some(other_vpc);
        }

        let volumes = account
            .instance(&instance_id)
            .await
            .block_device_mappings()
            .iter()
            .map(|m| m.ebs().unwrap().volume_id().unwrap().to_owned())
            .collect();

        let auto_scaling_group = if options.auto_scaling_group {
            Some(auto_scaling_group(&account, &subnet_id, &instance_id).await)
        } else {
            None
        };

        let (mut target_groups, mut ip_target_group, mut classic_load_balancer) =
            (Vec::new(), None, None);
        if options.load_balancers {
            for port in [80, 8080] {
                let arn = target_group(&account, &vpc_id, port, "instance").await;
                register(&account, &arn, &instance_id, port).await;
                target_groups.push((arn, port));
            }
            let private_ip = account
                .instance(&instance_id)
                .await
                .private_ip_address()
                .unwrap()
                .to_owned();
            let arn = target_group(&account, &vpc_id, 443, "ip").await;
            register(&account, &arn, &private_ip, 443).await;
            ip_target_group = Some(arn);
            classic_load_balancer = Some(classic(&account, &subnet_id, &instance_id).await);
        }

        Self {
            account,
            vpc_id,
            subnet_id,
            other_vpc_id,
            instance_id,
            interfaces,
            app_groups,
            volumes,
            original_profile_arn: original_profile.map(|(_, arn)| arn),
            isolation_profile,
            auto_scaling_group,
            target_groups,
            ip_target_group,
            classic_load_balancer,
            isolation_group_name: "ec2-quarantine-isolation".to_owned(),
        }
    }

    /// `count` plain instances in one VPC (one interface, one volume each), for load tests.
    pub async fn fleet(count: i32) -> (Self, Vec<String>) {
        let account = Account::new().await;
        let vpc_id = account.vpc("10.40.0.0/16").await;
        let subnet_id = account.subnet(&vpc_id, "10.40.0.0/20").await;
        let app_group = account.app_group(&vpc_id).await;
        let isolation_profile = account.instance_profile("isolation").await;
        let launched = account
            .ec2
            .run_instances()
            .image_id("ami-0123456789abcdef0")
            .instance_type(InstanceType::T3Micro)
            .min_count(count)
            .max_count(count)
            // Groups on the interface, not the instance: the emulator adds instance-level
            // groups to every interface's groups forever, so a moved interface would never
            // read back as moved (AWS replaces them).
            .network_interfaces(
                InstanceNetworkInterfaceSpecification::builder()
                    .device_index(0)
                    .subnet_id(&subnet_id)
                    .groups(&app_group)
                    .build(),
            )
            .block_device_mappings(volume("/dev/sda1", 8))
            .send()
            .await
            .unwrap();
        let ids: Vec<String> = launched
            .instances()
            .iter()
            .map(|i| i.instance_id().unwrap().to_owned())
            .collect();
        assert_eq!(ids.len(), count as usize);
        let scenario = Self {
            account,
            vpc_id,
            subnet_id,
            other_vpc_id: None,
            instance_id: ids[0].clone(),
            interfaces: Vec::new(),
            app_groups: vec![app_group],
            volumes: Vec::new(),
            original_profile_arn: None,
            isolation_profile,
            auto_scaling_group: None,
            target_groups: Vec::new(),
            ip_target_group: None,
            classic_load_balancer: None,
            isolation_group_name: "ec2-quarantine-isolation".to_owned(),
        };
        (scenario, ids)
    }

    /// The function's configuration for this scenario, `extra` over it.
    pub fn config(&self, extra: &[(&str, &str)]) -> ec2_quarantine::config::Config {
        // The first of a name wins, so `extra` goes first.
        let mut vars = extra.to_vec();
        vars.push((
            "ISOLATION_INSTANCE_PROFILE",
            self.isolation_profile.0.as_str(),
        ));
        super::config(&vars)
    }

    /// The isolation group of this scenario's VPC; panics unless there is exactly one.
    pub async fn isolation_group(&self) -> (String, usize, usize) {
        let groups = self
            .account
            .groups_named(&self.vpc_id, &self.isolation_group_name)
            .await;
        assert_eq!(
            groups.len(),
            1,
            "exactly one isolation group in {}: {groups:?}",
            self.vpc_id
        );
        groups.into_iter().next().unwrap()
    }
}

fn volume(device: &str, size: i32) -> BlockDeviceMapping {
    BlockDeviceMapping::builder()
        .device_name(device)
        .ebs(
            EbsBlockDevice::builder()
                .volume_size(size)
                .volume_type(VolumeType::Gp3)
                .delete_on_termination(true)
                .build(),
        )
        .build()
}

async fn attach_interface(
    account: &Account,
    instance_id: &str,
    subnet_id: &str,
    groups: &[&str],
    device: i32,
) -> String {
    let eni = account
        .ec2
        .create_network_interface()
        .subnet_id(subnet_id)
        .set_groups(Some(groups.iter().map(|g| g.to_string()).collect()))
        .send()
        .await
        .unwrap()
        .network_interface()
        .unwrap()
        .network_interface_id()
        .unwrap()
        .to_owned();
    account
        .ec2
        .attach_network_interface()
        .network_interface_id(&eni)
        .instance_id(instance_id)
        .device_index(device)
        .send()
        .await
        .unwrap();
    eni
}

async fn auto_scaling_group(account: &Account, subnet_id: &str, instance_id: &str) -> String {
    let name = unique("asg");
    let template = account
        .ec2
        .create_launch_template()
        .launch_template_name(&name)
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id("ami-0123456789abcdef0")
                .instance_type(InstanceType::T3Micro)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .launch_template()
        .unwrap()
        .launch_template_id()
        .unwrap()
        .to_owned();
    account
        .autoscaling
        .create_auto_scaling_group()
        .auto_scaling_group_name(&name)
        .launch_template(
            aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                .launch_template_id(template)
                .version("$Latest")
                .build(),
        )
        .min_size(0)
        .max_size(3)
        .desired_capacity(0)
        .vpc_zone_identifier(subnet_id)
        .send()
        .await
        .unwrap();
    account
        .autoscaling
        .attach_instances()
        .auto_scaling_group_name(&name)
        .instance_ids(instance_id)
        .send()
        .await
        .unwrap();
    name
}

pub async fn target_group(account: &Account, vpc_id: &str, port: i32, target_type: &str) -> String {
    use aws_sdk_elasticloadbalancingv2::types::{ProtocolEnum, TargetTypeEnum};
    account
        .elbv2
        .create_target_group()
        .name(short_name("tg"))
        .protocol(ProtocolEnum::Http)
        .port(port)
        .vpc_id(vpc_id)
        .target_type(TargetTypeEnum::from(target_type))
        .send()
        .await
        .unwrap()
        .target_groups()[0]
        .target_group_arn()
        .unwrap()
        .to_owned()
}

pub async fn register(account: &Account, target_group_arn: &str, target: &str, port: i32) {
    account
        .elbv2
        .register_targets()
        .target_group_arn(target_group_arn)
        .targets(
            aws_sdk_elasticloadbalancingv2::types::TargetDescription::builder()
                .id(target)
                .port(port)
                .build(),
        )
        .send()
        .await
        .unwrap();
}

async fn classic(account: &Account, subnet_id: &str, instance_id: &str) -> String {
    use aws_sdk_elasticloadbalancing::types::{Instance, Listener};
    let name = short_name("clb");
    account
        .elb
        .create_load_balancer()
        .load_balancer_name(&name)
        .listeners(
            Listener::builder()
                .protocol("HTTP")
                .load_balancer_port(80)
                .instance_port(80)
                .build()
                .unwrap(),
        )
        .subnets(subnet_id)
        .send()
        .await
        .unwrap();
    account
        .elb
        .register_instances_with_load_balancer()
        .load_balancer_name(&name)
        .instances(Instance::builder().instance_id(instance_id).build())
        .send()
        .await
        .unwrap();
    name
}
