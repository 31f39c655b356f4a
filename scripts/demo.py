"""The local run of ec2-quarantine: a small account in the AWS emulator, the real Lambda binary
driven through a local Lambda Runtime API, and the account before and after, printed.

Entry point: scripts/demo.sh (or `make demo`), which builds the binary, starts the emulator and
runs:  python scripts/demo.py --endpoint URL --binary PATH

run() is the whole demo; tests/demo/test_demo.py imports this module, calls run(), then reads
the account back itself.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import boto3
from botocore.config import Config as BotoConfig

REPO = Path(__file__).resolve().parents[1]
EVENTS = REPO / "events"
TRIGGER_EVENT = EVENTS / "tag-quarantine-instance.json"
IGNORED_EVENT = EVENTS / "tag-other-key.json"

REGION = "us-east-1"
# The emulator's account; the sample events carry the same one.
ACCOUNT_ID = "123456789012"
FUNCTION_NAME = "ec2-quarantine-demo"
FUNCTION_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{FUNCTION_NAME}"
# The function's default (ISOLATION_SECURITY_GROUP_NAME is not set for the demo).
ISOLATION_GROUP_NAME = "ec2-quarantine-isolation"
# The function's timeout in template.yaml; the Runtime API hands it to the binary as a deadline.
FUNCTION_TIMEOUT_S = 60
AMI = "ami-0123456789abcdef0"

Printer = Callable[[str], None]


# ---------------------------------------------------------------------------------------------
# The emulator's clients
# ---------------------------------------------------------------------------------------------
class Aws:
    """boto3 clients pointed at the emulator. Dummy credentials, not none: moto routes an
    unsigned request to S3, and a real profile on this machine must never be used."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        session = boto3.session.Session(
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name=REGION,
        )
        config = BotoConfig(retries={"max_attempts": 2}, connect_timeout=5, read_timeout=30)

        def client(service: str):
            return session.client(service, endpoint_url=endpoint, config=config)

        self.ec2 = client("ec2")
        self.iam = client("iam")
        self.autoscaling = client("autoscaling")
        self.elbv2 = client("elbv2")
        self.elb = client("elb")
        self.dynamodb = client("dynamodb")


# ---------------------------------------------------------------------------------------------
# The account
# ---------------------------------------------------------------------------------------------
EC2_TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "ec2.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
)
DENY_ALL = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Sid": "DenyAll", "Effect": "Deny", "Action": "*", "Resource": "*"}],
    }
)


@dataclass
class Account:
    vpc_id: str
    subnet_ids: list[str]
    app_group_id: str
    instance_id: str
    interface_ids: list[str]
    volume_ids: list[str]
    app_profile_arn: str
    isolation_profile_name: str
    isolation_profile_arn: str
    auto_scaling_group: str
    target_group_arn: str
    classic_load_balancer: str
    incident_table: str


def build_account(aws: Aws, suffix: str = "") -> Account:
    """A web server as a team would run it: two interfaces, two volumes, a role, behind an Auto
    Scaling group and two kinds of load balancer; and the deny-all isolation profile that the
    stack would create. `suffix` keeps names apart when one emulator serves several runs."""
    ec2 = aws.ec2
    vpc_id = ec2.create_vpc(
        CidrBlock="10.0.0.0/16",
        TagSpecifications=[_name_tag("vpc", f"demo-vpc{suffix}")],
    )["Vpc"]["VpcId"]
    # One zone for both: an interface can only be attached to an instance in its own zone.
    subnet_ids = [
        ec2.create_subnet(
            VpcId=vpc_id,
            CidrBlock=cidr,
            AvailabilityZone=f"{REGION}a",
            TagSpecifications=[_name_tag("subnet", f"{name}{suffix}")],
        )["Subnet"]["SubnetId"]
        for cidr, name in [("10.0.1.0/24", "demo-app"), ("10.0.2.0/24", "demo-backend")]
    ]
    app_group_id = ec2.create_security_group(
        GroupName=f"web-app{suffix}", Description="web application", VpcId=vpc_id
    )["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=app_group_id,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 443,
                "ToPort": 443,
                "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
            }
        ],
    )

    # The incident table, as template.yaml creates it: one record per instance.
    incident_table = f"ec2-quarantine-incidents{suffix}"
    aws.dynamodb.create_table(
        TableName=incident_table,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "instance_id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "instance_id", "KeyType": "HASH"}],
    )

    app_profile_arn = _instance_profile(aws, f"web-app{suffix}", path="/")
    isolation_profile_name = f"ec2-quarantine-isolation{suffix}"
    # As template.yaml creates them: under a path the guard policy protects, denying everything.
    isolation_profile_arn = _instance_profile(
        aws, isolation_profile_name, path="/ec2-quarantine-isolation/", deny_all=True
    )

    instance = ec2.run_instances(
        ImageId=AMI,
        InstanceType="t3.micro",
        MinCount=1,
        MaxCount=1,
        NetworkInterfaces=[{"DeviceIndex": 0, "SubnetId": subnet_ids[0], "Groups": [app_group_id]}],
        # DeleteOnTermination=true on both (AWS's default for the root volume), so that keeping
        # the volumes shows in the result.
        BlockDeviceMappings=[
            _volume("/dev/sda1", 8),
            _volume("/dev/sdf", 20),
        ],
        IamInstanceProfile={"Name": f"web-app{suffix}"},
        TagSpecifications=[
            {
                "ResourceType": "instance",
                "Tags": [{"Key": "Name", "Value": "web-1"}, {"Key": "Owner", "Value": "team-web"}],
            }
        ],
    )["Instances"][0]
    instance_id = instance["InstanceId"]
    # The emulator already defaults to "stop"; "terminate" (common for Auto Scaling fleets)
    # makes the protection step's change visible.
    ec2.modify_instance_attribute(
        InstanceId=instance_id, Attribute="instanceInitiatedShutdownBehavior", Value="terminate"
    )
    second = ec2.create_network_interface(
        SubnetId=subnet_ids[1],
        Groups=[app_group_id],
        Description="backend interface of web-1",
    )["NetworkInterface"]["NetworkInterfaceId"]
    ec2.attach_network_interface(NetworkInterfaceId=second, InstanceId=instance_id, DeviceIndex=1)
    interface_ids = [instance["NetworkInterfaces"][0]["NetworkInterfaceId"], second]
    volume_ids = [
        m["Ebs"]["VolumeId"] for m in _describe_instance(aws, instance_id)["BlockDeviceMappings"]
    ]

    auto_scaling_group = f"web-asg{suffix}"
    template_id = ec2.create_launch_template(
        LaunchTemplateName=auto_scaling_group,
        LaunchTemplateData={"ImageId": AMI, "InstanceType": "t3.micro"},
    )["LaunchTemplate"]["LaunchTemplateId"]
    aws.autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=auto_scaling_group,
        LaunchTemplate={"LaunchTemplateId": template_id, "Version": "$Latest"},
        MinSize=0,
        MaxSize=2,
        # Empty until the instance is attached, so the group does not launch others.
        DesiredCapacity=0,
        VPCZoneIdentifier=subnet_ids[0],
    )
    aws.autoscaling.attach_instances(
        AutoScalingGroupName=auto_scaling_group, InstanceIds=[instance_id]
    )

    target_group_arn = aws.elbv2.create_target_group(
        Name=f"web-tg{suffix}",
        Protocol="HTTP",
        Port=80,
        VpcId=vpc_id,
        TargetType="instance",
    )["TargetGroups"][0]["TargetGroupArn"]
    aws.elbv2.register_targets(
        TargetGroupArn=target_group_arn, Targets=[{"Id": instance_id, "Port": 80}]
    )

    classic_load_balancer = f"web-clb{suffix}"
    aws.elb.create_load_balancer(
        LoadBalancerName=classic_load_balancer,
        Listeners=[
            {
                "Protocol": "HTTP",
                "LoadBalancerPort": 80,
                "InstanceProtocol": "HTTP",
                "InstancePort": 80,
            }
        ],
        Subnets=[subnet_ids[0]],
    )
    aws.elb.register_instances_with_load_balancer(
        LoadBalancerName=classic_load_balancer, Instances=[{"InstanceId": instance_id}]
    )

    return Account(
        vpc_id=vpc_id,
        subnet_ids=subnet_ids,
        app_group_id=app_group_id,
        instance_id=instance_id,
        interface_ids=interface_ids,
        volume_ids=volume_ids,
        app_profile_arn=app_profile_arn,
        isolation_profile_name=isolation_profile_name,
        isolation_profile_arn=isolation_profile_arn,
        auto_scaling_group=auto_scaling_group,
        target_group_arn=target_group_arn,
        classic_load_balancer=classic_load_balancer,
        incident_table=incident_table,
    )


def _name_tag(resource_type: str, name: str) -> dict:
    return {"ResourceType": resource_type, "Tags": [{"Key": "Name", "Value": name}]}


def _volume(device: str, size_gib: int) -> dict:
    return {
        "DeviceName": device,
        "Ebs": {"VolumeSize": size_gib, "VolumeType": "gp3", "DeleteOnTermination": True},
    }


def _instance_profile(aws: Aws, name: str, path: str, deny_all: bool = False) -> str:
    aws.iam.create_role(RoleName=name, Path=path, AssumeRolePolicyDocument=EC2_TRUST)
    if deny_all:
        aws.iam.put_role_policy(RoleName=name, PolicyName="deny-all", PolicyDocument=DENY_ALL)
    arn = aws.iam.create_instance_profile(InstanceProfileName=name, Path=path)[
        "InstanceProfile"
    ]["Arn"]
    aws.iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    return arn


def _describe_instance(aws: Aws, instance_id: str) -> dict:
    return aws.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


# ---------------------------------------------------------------------------------------------
# What the instance looks like, read from the account (never from the function's report)
# ---------------------------------------------------------------------------------------------
@dataclass
class Group:
    group_id: str
    name: str
    inbound_rules: int
    outbound_rules: int


@dataclass
class Interface:
    interface_id: str
    device_index: int
    groups: list[Group]


@dataclass
class Volume:
    device: str
    volume_id: str
    delete_on_termination: bool


@dataclass
class State:
    interfaces: list[Interface]
    instance_profile_arn: str | None
    auto_scaling_group: str | None
    # target group name -> ports the instance is registered on (empty: not registered)
    target_groups: dict[str, list[int]]
    # classic load balancer name -> whether the instance is registered
    classic_load_balancers: dict[str, bool]
    termination_protection: bool
    stop_protection: bool
    shutdown_behaviour: str
    volumes: list[Volume]
    # (snapshot id, volume id) of the snapshots tagged with this instance
    snapshots: list[tuple[str, str]]
    tags: dict[str, str] = field(default_factory=dict)


def describe(aws: Aws, account: Account) -> State:
    instance_id = account.instance_id
    instance = _describe_instance(aws, instance_id)

    interfaces_raw = aws.ec2.describe_network_interfaces(
        Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}]
    )["NetworkInterfaces"]
    group_ids = sorted({g["GroupId"] for n in interfaces_raw for g in n["Groups"]})
    groups = {
        g["GroupId"]: Group(
            g["GroupId"], g["GroupName"], len(g["IpPermissions"]), len(g["IpPermissionsEgress"])
        )
        for g in (
            aws.ec2.describe_security_groups(GroupIds=group_ids)["SecurityGroups"]
            if group_ids
            else []
        )
    }
    interfaces = sorted(
        (
            Interface(
                n["NetworkInterfaceId"],
                n["Attachment"]["DeviceIndex"],
                [groups[g["GroupId"]] for g in n["Groups"]],
            )
            for n in interfaces_raw
        ),
        key=lambda i: i.device_index,
    )

    # The live association: the emulator's DescribeInstances keeps showing the old profile
    # after ReplaceIamInstanceProfileAssociation.
    associations = aws.ec2.describe_iam_instance_profile_associations(
        Filters=[{"Name": "instance-id", "Values": [instance_id]}]
    )["IamInstanceProfileAssociations"]
    profile = next(
        (a["IamInstanceProfile"]["Arn"] for a in associations if a.get("State") == "associated"),
        None,
    )

    asg_instances = aws.autoscaling.describe_auto_scaling_instances(InstanceIds=[instance_id])[
        "AutoScalingInstances"
    ]
    auto_scaling_group = asg_instances[0]["AutoScalingGroupName"] if asg_instances else None

    target_groups = {}
    for page in aws.elbv2.get_paginator("describe_target_groups").paginate():
        for tg in page["TargetGroups"]:
            if tg.get("VpcId") != account.vpc_id:
                continue
            health = aws.elbv2.describe_target_health(TargetGroupArn=tg["TargetGroupArn"])
            target_groups[tg["TargetGroupName"]] = sorted(
                d["Target"].get("Port", tg.get("Port"))
                for d in health["TargetHealthDescriptions"]
                if d["Target"]["Id"] == instance_id
            )

    classic = {}
    for lb in aws.elb.describe_load_balancers()["LoadBalancerDescriptions"]:
        if lb.get("VPCId") not in (None, account.vpc_id):
            continue
        classic[lb["LoadBalancerName"]] = any(
            i["InstanceId"] == instance_id for i in lb.get("Instances", [])
        )

    def attribute(name: str, key: str):
        return aws.ec2.describe_instance_attribute(InstanceId=instance_id, Attribute=name)[key][
            "Value"
        ]

    # From DescribeInstances: the emulator answers DescribeInstanceAttribute(blockDeviceMapping)
    # with nothing.
    volumes = [
        Volume(m["DeviceName"], m["Ebs"]["VolumeId"], bool(m["Ebs"].get("DeleteOnTermination")))
        for m in instance.get("BlockDeviceMappings", [])
        if "Ebs" in m
    ]
    volume_order = {v.volume_id: n for n, v in enumerate(volumes)}
    evidence = aws.ec2.describe_snapshots(
        OwnerIds=["self"],
        Filters=[{"Name": "tag:ec2-quarantine:instance-id", "Values": [instance_id]}],
    )["Snapshots"]
    snapshots = sorted(
        ((s["SnapshotId"], s["VolumeId"]) for s in evidence),
        key=lambda s: (volume_order.get(s[1], len(volume_order)), s[0]),
    )

    return State(
        interfaces=interfaces,
        instance_profile_arn=profile,
        auto_scaling_group=auto_scaling_group,
        target_groups=target_groups,
        classic_load_balancers=classic,
        termination_protection=bool(attribute("disableApiTermination", "DisableApiTermination")),
        stop_protection=bool(attribute("disableApiStop", "DisableApiStop")),
        shutdown_behaviour=attribute(
            "instanceInitiatedShutdownBehavior", "InstanceInitiatedShutdownBehavior"
        ),
        volumes=volumes,
        snapshots=snapshots,
        tags={t["Key"]: t["Value"] for t in instance.get("Tags", [])},
    )


def state_rows(state: State) -> list[tuple[str, str]]:
    """The state as (label, value) rows; the same label before and after names the same thing."""
    rows = []
    for i in state.interfaces:
        groups = ", ".join(
            f"{g.group_id} {g.name} ({g.inbound_rules} in / {g.outbound_rules} out rules)"
            for g in i.groups
        )
        rows.append((f"interface {i.interface_id} (device {i.device_index})", groups or "no group"))
    rows.append(("instance profile", state.instance_profile_arn or "none"))
    rows.append(("auto scaling group", state.auto_scaling_group or "none"))
    for name, ports in sorted(state.target_groups.items()):
        rows.append(
            (
                f"target group {name}",
                f"registered (port {', '.join(map(str, ports))})" if ports else "not registered",
            )
        )
    for name, registered in sorted(state.classic_load_balancers.items()):
        rows.append(
            (f"classic load balancer {name}", "registered" if registered else "not registered")
        )
    rows.append(("termination protection", _on_off(state.termination_protection)))
    rows.append(("stop protection", _on_off(state.stop_protection)))
    rows.append(("OS shutdown", state.shutdown_behaviour))
    for v in state.volumes:
        rows.append(
            (
                f"volume {v.device} {v.volume_id}",
                "deleted with the instance (DeleteOnTermination=true)"
                if v.delete_on_termination
                else "kept if the instance is terminated (DeleteOnTermination=false)",
            )
        )
    rows.append(
        (
            "snapshots",
            ", ".join(f"{s} of {v}" for s, v in state.snapshots) if state.snapshots else "none",
        )
    )
    for key in sorted(k for k in state.tags if k.startswith("ec2-quarantine:")):
        rows.append((f"tag {key}", state.tags[key]))
    return rows


def format_state(state: State, before: State | None = None) -> str:
    """The state, one row per line; given `before`, rows that differ from it are marked *."""
    previous = dict(state_rows(before)) if before else None
    rows = state_rows(state)
    width = max(len(label) for label, _ in rows)
    lines = []
    for label, value in rows:
        mark = " "
        if previous is not None and previous.get(label) != value:
            mark = "*"
        lines.append(f" {mark} {label:<{width}}  {value}")
    return "\n".join(lines)


def _on_off(value: bool) -> str:
    return "on" if value else "off"


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------
def format_report(report: dict) -> str:
    lines = [f"outcome: {report.get('outcome')}"]
    if report.get("reason"):
        lines.append(f"reason:  {report['reason']}")
    for instance in report.get("instances", []):
        lines.append("")
        lines.append(
            f"instance {instance.get('instance_id')}: {instance.get('outcome')}"
            + (f" (incident {instance['incident']})" if instance.get("incident") else "")
        )
        steps = instance.get("steps", [])
        if not steps:
            continue
        step_width = max(len("step"), *(len(s["step"]) for s in steps))
        status_width = max(len("status"), *(len(s["status"]) for s in steps))
        indent = 2 + step_width + 2 + status_width + 2
        lines.append(f"  {'step':<{step_width}}  {'status':<{status_width}}  detail")
        for s in steps:
            detail = s.get("detail", "")
            error = s.get("error")
            if error:
                detail += (
                    f" [{error.get('operation')}: {error.get('code')}: {error.get('message')}]"
                )
            wrapped = textwrap.wrap(
                detail, width=max(40, 100 - indent), break_on_hyphens=False, break_long_words=False
            ) or [""]
            lines.append(
                f"  {s['step']:<{step_width}}  {s['status']:<{status_width}}  {wrapped[0]}"
            )
            lines.extend(" " * indent + more for more in wrapped[1:])
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------------
def event_for(path: Path, instance_id: str) -> dict:
    """A sample event with its one instance ARN pointing at `instance_id`."""
    event = json.loads(path.read_text())
    (arn,) = event["resources"]
    event["resources"] = [re.sub(r"instance/i-[0-9a-f]+$", f"instance/{instance_id}", arn)]
    return event


# ---------------------------------------------------------------------------------------------
# A Lambda Runtime API, as Lambda serves it to a custom runtime (provided.al2023)
# ---------------------------------------------------------------------------------------------
@dataclass
class Invocation:
    request_id: str
    ok: bool
    # The function's response (ok) or the error it posted: {"errorType", "errorMessage"}.
    body: dict

    @property
    def report(self) -> dict | None:
        """The report, also from a failed containment (its error message is the report)."""
        if self.ok:
            return self.body
        try:
            report = json.loads(self.body.get("errorMessage", ""))
        except (TypeError, ValueError):
            return None
        return report if isinstance(report, dict) else None


class FunctionFailed(Exception):
    pass


class RuntimeApi:
    """The four endpoints the binary calls. One event at a time, as Lambda gives one
    execution environment."""

    NEXT = "/2018-06-01/runtime/invocation/next"
    RESULT = re.compile(r"^/2018-06-01/runtime/invocation/([^/]+)/(response|error)$")
    INIT_ERROR = "/2018-06-01/runtime/init/error"

    def __init__(self):
        self._events: queue.Queue[tuple[str, dict]] = queue.Queue()
        self._results: queue.Queue[Invocation] = queue.Queue()
        self._stopping = threading.Event()
        self.init_error: dict | None = None
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # the binary's own log says what it did
                pass

            def do_GET(self):
                if self.path != api.NEXT:
                    return self._send(404, {"errorMessage": f"unknown path {self.path}"})
                # Long poll, as Lambda does: the binary waits here between events.
                while not api._stopping.is_set():
                    try:
                        request_id, event = api._events.get(timeout=0.2)
                    except queue.Empty:
                        continue
                    deadline_ms = int((time.time() + FUNCTION_TIMEOUT_S) * 1000)
                    return self._send(
                        200,
                        event,
                        {
                            "Lambda-Runtime-Aws-Request-Id": request_id,
                            "Lambda-Runtime-Deadline-Ms": str(deadline_ms),
                            "Lambda-Runtime-Invoked-Function-Arn": FUNCTION_ARN,
                            "Lambda-Runtime-Trace-Id": _trace_id(),
                        },
                    )
                self.close_connection = True

            def do_POST(self):
                body = self._body()
                match = api.RESULT.match(self.path)
                if match:
                    request_id, kind = match.groups()
                    api._results.put(Invocation(request_id, kind == "response", body))
                    return self._send(202, {"status": "OK"})
                if self.path == api.INIT_ERROR:
                    api.init_error = body
                    return self._send(202, {"status": "OK"})
                return self._send(404, {"errorMessage": f"unknown path {self.path}"})

            def _body(self):
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    raw = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            break
                        raw += self.rfile.read(size)
                        self.rfile.readline()
                else:
                    raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    return json.loads(raw or b"null")
                except ValueError:
                    return {"raw": raw.decode("utf-8", "replace")}

            def _send(self, status: int, payload, headers: dict | None = None):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                # The binary is killed while it waits for its next event: not worth a traceback.
                if not isinstance(sys.exc_info()[1], ConnectionError):
                    super().handle_error(request, client_address)

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    def submit(self, event: dict) -> str:
        request_id = str(uuid.uuid4())
        self._events.put((request_id, event))
        return request_id

    def result(self, timeout: float) -> Invocation | None:
        try:
            return self._results.get(timeout=timeout)
        except queue.Empty:
            return None

    def stop(self):
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()


def _trace_id() -> str:
    return (
        f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};"
        f"Parent={uuid.uuid4().hex[:16]};Sampled=0"
    )


class Function:
    """The real binary under a local Runtime API, as Lambda runs it. A context manager: the
    binary and the server stop on leaving, whatever happened."""

    def __init__(
        self,
        binary: str | Path,
        endpoint: str,
        isolation_profile: str,
        log_path: Path,
        incident_table: str,
    ):
        self.binary = Path(binary)
        self.endpoint = endpoint
        self.isolation_profile = isolation_profile
        self.incident_table = incident_table
        self.log_path = log_path
        self.api: RuntimeApi | None = None
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Function:
        if not os.access(self.binary, os.X_OK):
            raise FunctionFailed(f"no executable at {self.binary}")
        self.api = RuntimeApi()
        try:
            # Nothing from the caller's environment: a real AWS profile or session token on this
            # machine must not reach the function.
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "AWS_LAMBDA_RUNTIME_API": self.api.address,
                "AWS_LAMBDA_FUNCTION_NAME": FUNCTION_NAME,
                "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
                "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{FUNCTION_NAME}",
                "AWS_LAMBDA_LOG_STREAM_NAME": time.strftime("%Y/%m/%d/[$LATEST]")
                + uuid.uuid4().hex,
                "AWS_REGION": REGION,
                "AWS_DEFAULT_REGION": REGION,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_CONFIG_FILE": os.devnull,
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                "AWS_EC2_METADATA_DISABLED": "true",
                "AWS_ENDPOINT_URL": self.endpoint,
                "ISOLATION_INSTANCE_PROFILE": self.isolation_profile,
                "INCIDENT_TABLE": self.incident_table,
            }
            self._log = open(self.log_path, "wb")
            self.process = subprocess.Popen(
                [str(self.binary)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
            )
        except BaseException:
            self.api.stop()
            raise
        return self

    def invoke(self, event: dict, timeout: float = 2 * FUNCTION_TIMEOUT_S) -> Invocation:
        assert self.api and self.process, "use Function as a context manager"
        request_id = self.api.submit(event)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.api.result(timeout=0.2)
            if result is not None:
                if result.request_id != request_id:
                    raise FunctionFailed(f"answer for {result.request_id}, expected {request_id}")
                return result
            if self.api.init_error is not None:
                raise FunctionFailed(f"the function failed to start: {self.api.init_error}")
            if self.process.poll() is not None:
                raise FunctionFailed(
                    f"the function exited (status {self.process.returncode}) without answering:\n"
                    + self.log_tail()
                )
        raise FunctionFailed(f"no answer within {timeout:.0f} s:\n" + self.log_tail())

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __exit__(self, *exc):
        try:
            if self.process and self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        finally:
            if self.api:
                self.api.stop()
            if hasattr(self, "_log"):
                self._log.close()
        return False


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------
@dataclass
class DemoResult:
    account: Account
    before: State
    ignored: Invocation
    triggered: Invocation
    after: State
    log_path: Path

    @property
    def succeeded(self) -> bool:
        ignored = self.ignored.report or {}
        triggered = self.triggered.report or {}
        return (
            self.ignored.ok
            and ignored.get("outcome") == "ignored"
            and self.triggered.ok
            and triggered.get("outcome") == "contained"
        )


def run(
    endpoint: str,
    binary: str | Path,
    out: Printer = print,
    suffix: str = "",
    log_path: Path | None = None,
) -> DemoResult:
    aws = Aws(endpoint)
    if log_path is None:
        log_path = Path(tempfile.mkstemp(prefix="ec2-quarantine-function-", suffix=".log")[1])

    out(_heading(f"1. A small account in the emulator ({endpoint})"))
    account = build_account(aws, suffix)
    out(f"  VPC {account.vpc_id}, subnets {', '.join(account.subnet_ids)}")
    out(f"  application group {account.app_group_id}")
    out(
        f"  instance {account.instance_id} (web-1): 2 interfaces, 2 EBS volumes, "
        f"profile {account.app_profile_arn}"
    )
    out(
        f"  in Auto Scaling group {account.auto_scaling_group}, target group "
        f"{account.target_group_arn.split(':')[-1]}, classic load balancer "
        f"{account.classic_load_balancer}"
    )
    out(f"  isolation profile (deny-all) {account.isolation_profile_arn}")

    before = describe(aws, account)
    out(_heading(f"2. Instance {account.instance_id} before"))
    out(format_state(before))

    out(_heading("3. The function (the real binary, under a local Lambda Runtime API)"))
    out(f"  {binary}")
    out(f"  ISOLATION_INSTANCE_PROFILE={account.isolation_profile_name}")
    out(f"  INCIDENT_TABLE={account.incident_table}")
    out(f"  its log: {log_path}")
    with Function(
        binary, endpoint, account.isolation_profile_name, log_path, account.incident_table
    ) as function:
        out("")
        out(f"  event 1: {IGNORED_EVENT.relative_to(REPO)} (only the Owner tag changed)")
        ignored = function.invoke(event_for(IGNORED_EVENT, account.instance_id))
        out(textwrap.indent(_invocation_summary(ignored), "    "))

        # What an analyst does; AWS then emits the tag-change event that is sent next.
        aws.ec2.create_tags(
            Resources=[account.instance_id], Tags=[{"Key": "Quarantine", "Value": "true"}]
        )
        out("")
        out("  an analyst tags the instance Quarantine=true, and AWS sends:")
        out(f"  event 2: {TRIGGER_EVENT.relative_to(REPO)}")
        triggered = function.invoke(event_for(TRIGGER_EVENT, account.instance_id))
        out(textwrap.indent(_invocation_summary(triggered), "    "))

    after = describe(aws, account)
    out(_heading(f"4. Instance {account.instance_id} after (* = changed)"))
    out(format_state(after, before))

    return DemoResult(account, before, ignored, triggered, after, log_path)


def _invocation_summary(invocation: Invocation) -> str:
    if invocation.ok:
        head = "the invocation succeeded"
    else:
        head = (
            f"the invocation FAILED ({invocation.body.get('errorType')}); Lambda would retry it"
        )
    report = invocation.report
    if report is None:
        return f"{head}\n{json.dumps(invocation.body, indent=2)}"
    return f"{head}\n{format_report(report)}"


def _heading(text: str) -> str:
    return f"\n== {text}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True, help="the emulator's URL")
    parser.add_argument("--binary", required=True, help="the ec2-quarantine binary")
    args = parser.parse_args(argv)

    # SIGTERM as an exception, so that the binary and the Runtime API are stopped on the way out.
    def stop(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        result = run(args.endpoint, args.binary)
    except FunctionFailed as e:
        print(f"\ndemo failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    if not result.succeeded:
        print("\ndemo failed: the function did not contain the instance (see the report above)")
        return 1
    print(
        "\nThe instance is contained: its network and credentials are cut, it is out of its"
        "\nAuto Scaling group and load balancers, protected, and its volumes are snapshotted."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
