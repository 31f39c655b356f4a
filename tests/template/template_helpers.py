"""Shared helpers and fixtures for the template, event and policy tests.

Run from the repository root:  python -m pytest tests/template
Needs: cfn-lint, moto[server], boto3 (requirements/test.txt). MOTO_ENDPOINT_URL, if set,
points the EventBridge tests at a running emulator instead of starting moto here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "template.yaml"
EVENTS = REPO / "events"
POLICIES = REPO / "policies"

# Placeholder values used wherever a test must turn template expressions into concrete
# strings (ARNs, names).
ACCOUNT = "123456789012"
REGION = "us-east-1"
STACK = "ec2-quarantine"


# ---------------------------------------------------------------------------------------
# template
# ---------------------------------------------------------------------------------------
def load_template() -> dict:
    """template.yaml through cfn-lint's CloudFormation-aware YAML loader (!Sub, !GetAtt...)."""
    from cfnlint.decode import cfn_yaml

    # Round-trip through JSON: plain dicts/lists/strs instead of cfn-lint's node classes.
    return json.loads(json.dumps(cfn_yaml.load(str(TEMPLATE))))


@pytest.fixture(scope="session")
def template() -> dict:
    return load_template()


def parameter_defaults(template: dict) -> dict[str, str]:
    return {
        name: str(p["Default"])
        for name, p in template.get("Parameters", {}).items()
        if "Default" in p
    }


def resources_of_type(template: dict, rtype: str) -> dict[str, dict]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == rtype}


def only_resource_of_type(template: dict, rtype: str) -> tuple[str, dict]:
    found = resources_of_type(template, rtype)
    assert len(found) == 1, f"expected exactly one {rtype}, found {sorted(found)}"
    return next(iter(found.items()))


_SUB_VAR = re.compile(r"\$\{([^}!][^}]*)\}")


def render_sub(value, variables: dict[str, str]) -> str:
    """Evaluate a Fn::Sub (string or [string, vars]) with the given variable values.

    Fails on any variable it was not given, so a new ${...} in the template cannot slip
    through a test unnoticed.
    """
    if isinstance(value, dict):
        assert list(value) == ["Fn::Sub"], f"not a Fn::Sub: {value!r}"
        value = value["Fn::Sub"]
    local: dict[str, str] = {}
    if isinstance(value, list):
        value, local = value[0], value[1]
    text: str = value

    def repl(m: re.Match) -> str:
        name = m.group(1)
        if name in local:
            return str(local[name])
        if name in variables:
            return str(variables[name])
        raise AssertionError(f"unresolved ${{{name}}} in Fn::Sub {text!r}")

    return _SUB_VAR.sub(repl, text).replace("${!", "${")


# ---------------------------------------------------------------------------------------
# events
# ---------------------------------------------------------------------------------------
def event_files() -> list[Path]:
    return sorted(EVENTS.glob("*.json"))


def load_event(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


# ---------------------------------------------------------------------------------------
# moto server
# ---------------------------------------------------------------------------------------
def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(url: str, proc: subprocess.Popen | None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"moto server exited with {proc.returncode} before it answered")
        try:
            with urllib.request.urlopen(url + "/moto-api/", timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers: good enough
        except Exception as e:  # noqa: BLE001 - connection refused while starting
            last = e
            time.sleep(0.1)
    raise RuntimeError(f"moto server at {url} did not answer within {timeout}s: {last!r}")


@pytest.fixture(scope="session")
def moto_endpoint():
    """URL of an AWS emulator: $MOTO_ENDPOINT_URL, or a moto server started here."""
    external = os.environ.get("MOTO_ENDPOINT_URL")
    if external:
        _wait_until_up(external.rstrip("/"), None, timeout=10)
        yield external.rstrip("/")
        return
    port = _free_loopback_port()
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def aws_session():
    import boto3

    return boto3.session.Session(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        aws_session_token="testing",
        region_name=REGION,
    )


# ---------------------------------------------------------------------------------------
# tools
# ---------------------------------------------------------------------------------------
def venv_tool(name: str) -> str | None:
    """A console script next to the running interpreter, else on PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    return shutil.which(name)


# ---------------------------------------------------------------------------------------
# template expressions, IAM
# ---------------------------------------------------------------------------------------
def as_list(v):
    return v if isinstance(v, list) else [v]


# The containment function; the release function (FUNCTION_MODE=release) is the other one.
CONTAINMENT_FUNCTION = "QuarantineFunction"
RELEASE_FUNCTION = "ReleaseFunction"


def function(template):
    functions = resources_of_type(template, "AWS::Serverless::Function")
    assert set(functions) == {CONTAINMENT_FUNCTION, RELEASE_FUNCTION}, sorted(functions)
    return CONTAINMENT_FUNCTION, functions[CONTAINMENT_FUNCTION]


def release_function(template):
    function(template)
    return RELEASE_FUNCTION, template["Resources"][RELEASE_FUNCTION]


def getatt(value) -> tuple[str, str] | None:
    if isinstance(value, dict) and list(value) == ["Fn::GetAtt"]:
        ga = value["Fn::GetAtt"]
        if isinstance(ga, str):
            ga = ga.split(".", 1)
        return ga[0], ga[1]
    return None


def ref(value) -> str | None:
    if isinstance(value, dict) and list(value) == ["Ref"]:
        return value["Ref"]
    return None


def function_role(template, fn=None) -> tuple[str, dict]:
    if fn is None:
        _, fn = function(template)
    ga = getatt(fn["Properties"].get("Role"))
    assert ga and ga[1] == "Arn", "the function must use an explicit role (SAM's generated role adds broad managed policies)"
    role = template["Resources"][ga[0]]
    assert role["Type"] == "AWS::IAM::Role"
    return ga[0], role


def role_statements(role: dict) -> list[dict]:
    props = role["Properties"]
    out = []
    for p in props.get("Policies", []):
        out.extend(as_list(p["PolicyDocument"]["Statement"]))
    return out


def stack_name_sub_vars(template) -> dict[str, str]:
    return {
        "AWS::Partition": "aws",
        "AWS::Region": REGION,
        "AWS::AccountId": ACCOUNT,
        "AWS::StackName": STACK,
        **parameter_defaults(template),
    }


def sample_value(template, value) -> str:
    """A concrete sample for a resource/ARN expression of the template."""
    if isinstance(value, str):
        return value
    r = ref(value)
    if r is not None:
        res = template["Resources"].get(r)
        if res is None:
            return stack_name_sub_vars(template)[r]
        if res["Type"] == "AWS::Logs::LogGroup":
            return sample_value(template, res["Properties"]["LogGroupName"])
        if res["Type"] == "AWS::SNS::Topic":
            # Ref of a topic is its ARN.
            return f"arn:aws:sns:{REGION}:{ACCOUNT}:{STACK}-{r}-ABC123"
        return f"{STACK}-{r}-ABC123"
    ga = getatt(value)
    if ga is not None:
        name, attr = ga
        res = template["Resources"][name]
        t, props = res["Type"], res.get("Properties", {})
        if attr == "Arn":
            path = props.get("Path", "/")
            if t == "AWS::IAM::Role":
                return f"arn:aws:iam::{ACCOUNT}:role{path}{STACK}-{name}-ABC123"
            if t == "AWS::IAM::InstanceProfile":
                return f"arn:aws:iam::{ACCOUNT}:instance-profile{path}{STACK}-{name}-ABC123"
            if t == "AWS::SQS::Queue":
                return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{STACK}-{name}-ABC123"
            if t == "AWS::Logs::LogGroup":
                return f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{sample_value(template, props['LogGroupName'])}:*"
            if t == "AWS::Events::Rule":
                return f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{STACK}-{name}-ABC123"
            if t == "AWS::DynamoDB::Table":
                return f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{STACK}-{name}-ABC123"
        raise AssertionError(f"no sample for GetAtt {name}.{attr} ({t})")
    if isinstance(value, dict) and "Fn::Sub" in value:
        variables = stack_name_sub_vars(template)
        text = value["Fn::Sub"] if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"][0]
        for name in _SUB_VAR.findall(text):
            if name in template["Resources"]:
                variables[name] = sample_value(template, {"Ref": name})
        return render_sub(value, variables)
    raise AssertionError(f"cannot evaluate {value!r}")


def service_authorization_data() -> dict:
    """The Service Authorization Reference as cfn-lint ships it (actions -> resource types)."""
    import cfnlint

    path = Path(cfnlint.__file__).parent / "data" / "AdditionalSpecs" / "Policies.json"
    assert path.exists(), f"{path} not found: cfn-lint layout changed (pinned in requirements/test.txt)"
    return json.loads(path.read_text())


