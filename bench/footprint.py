"""Cold start, peak memory and package size of one build of the function.

    python bench/footprint.py --endpoint URL --binary PATH [--runs N]

- cold start: process start to the binary's first poll of the Lambda Runtime API (median of N);
- peak memory: the binary's peak resident set (VmHWM) after it contained the demo's instance
  (two interfaces, a profile, an Auto Scaling group, a target group, a classic load balancer)
  through the local Runtime API of scripts/demo.py, against the emulator at URL;
- size: the binary, and the binary zipped as `bootstrap` at the highest compression, as Lambda
  takes it.

bench/footprint.sh starts the emulator and runs this; README "Performance" has the figures.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import demo  # noqa: E402  (scripts/demo.py: the account, the events and the local Runtime API)


def cold_start_ms(binary: Path) -> float:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    host, port = listener.getsockname()
    env = {
        "AWS_LAMBDA_RUNTIME_API": f"{host}:{port}",
        "AWS_LAMBDA_FUNCTION_NAME": "ec2-quarantine",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_LOG_STREAM_NAME": "bench",
        "AWS_LAMBDA_LOG_GROUP_NAME": "bench",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
        "ISOLATION_INSTANCE_PROFILE": "ec2-quarantine-isolation",
        "INCIDENT_TABLE": "ec2-quarantine-incidents",
    }
    started = time.perf_counter()
    process = subprocess.Popen(
        [str(binary)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        connection, _ = listener.accept()
        first = connection.recv(64)
        elapsed = time.perf_counter() - started
        if not first.startswith(b"GET /2018-06-01/runtime/invocation/next"):
            raise SystemExit(f"the first request is not the poll for an event: {first!r}")
        connection.close()
        return elapsed * 1000
    finally:
        process.kill()
        process.wait()
        listener.close()


def peak_memory_mib(binary: Path, endpoint: str) -> float:
    aws = demo.Aws(endpoint)
    account = demo.build_account(aws, suffix=f"-footprint-{os.getpid()}")
    log = Path(tempfile.mkstemp(prefix="ec2-quarantine-footprint-", suffix=".log")[1])
    with demo.Function(
        binary, endpoint, account.isolation_profile_name, log, account.incident_table
    ) as function:
        result = function.invoke(demo.event_for(demo.TRIGGER_EVENT, account.instance_id))
        report = result.report
        if not report or report.get("outcome") != "contained":
            raise SystemExit(f"the containment did not succeed: {report}\n{function.log_tail()}")
        status = Path(f"/proc/{function.process.pid}/status").read_text()
    peak_kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    return peak_kib / 1024


def zipped_bytes(binary: Path) -> int:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.write(binary, "bootstrap")
    return buffer.tell()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--binary", required=True, type=Path)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    figures = {
        "binary": str(args.binary),
        "cold_start_ms": round(statistics.median(cold_start_ms(args.binary) for _ in range(args.runs)), 1),
        "peak_memory_mib": round(peak_memory_mib(args.binary, args.endpoint), 1),
        "binary_mib": round(args.binary.stat().st_size / 2**20, 2),
        "zipped_mib": round(zipped_bytes(args.binary) / 2**20, 2),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
