# Sourced: starts moto's server on a free loopback port, exports EC2Q_TEST_ENDPOINT, and stops
# the server when the sourcing shell exits.
emulator_log=$(mktemp -t moto-XXXXXX.log)
emulator_port=$("$EC2Q_VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$EC2Q_VENV/bin/moto_server" -H 127.0.0.1 -p "$emulator_port" >"$emulator_log" 2>&1 &
emulator_pid=$!
trap 'kill "$emulator_pid" 2>/dev/null || true; wait "$emulator_pid" 2>/dev/null || true' EXIT
export EC2Q_TEST_ENDPOINT="http://127.0.0.1:$emulator_port"
# Wait until it answers (bounded: 60 s), or stop with its log.
"$EC2Q_VENV/bin/python" - "$EC2Q_TEST_ENDPOINT" "$emulator_pid" "$emulator_log" <<'PY'
import os, sys, time, urllib.request
url, pid, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
deadline = time.monotonic() + 60
while True:
    try:
        urllib.request.urlopen(url + "/moto-api/", timeout=2)
        break
    except Exception:
        try:
            os.kill(pid, 0)
        except OSError:
            sys.exit("moto_server exited:\n" + open(log).read())
        if time.monotonic() > deadline:
            sys.exit("moto_server did not answer within 60 s:\n" + open(log).read())
        time.sleep(0.2)
PY
echo "emulator: $EC2Q_TEST_ENDPOINT (log $emulator_log)" >&2
