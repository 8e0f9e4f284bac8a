#!/usr/bin/env bash
# Property-based API fuzzing of a running instance.
#
# Starts the service under gunicorn on a loopback port (a fresh database, a manifest
# folder, ADMIN_TOKEN, WEBHOOK_SECRETS and SNS_TOPIC_ARNS set) with a stand-in DLCS
# Orchestrator (tests/fuzz_orchestrator.py), runs schemathesis against the
# service's own /openapi.json with the admin bearer header, and stops both.
# tests/fuzz_hooks.py signs generated webhook deliveries so they get past the
# signature check. Fails on a 5xx other than the documented 503, an undocumented
# status code, content type or header, a body that does not match its schema, or
# an unhandled error in the server's log.
#
# FUZZ_DATABASE=postgresql runs the service on a database of its own, created on
# the server at WEBHOOK_TEST_POSTGRES_URL (as the tests do) and dropped afterwards;
# the default is a SQLite file.
#
# Bounded: FUZZ_MAX_EXAMPLES cases per operation and phase (default 100); the
# fixed FUZZ_SEED makes runs repeatable, set another one to explore further.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
case $PYTHON in /*) ;; *) PYTHON=$(pwd)/$PYTHON ;; esac
MAX_EXAMPLES=${FUZZ_MAX_EXAMPLES:-100}
SEED=${FUZZ_SEED:-20250101}
ADMIN_TOKEN=fuzz-admin-token-0123456789abcdef
export FUZZ_WEBHOOK_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw

work=$(mktemp -d)
server=""
orchestrator=""
postgres_server=${WEBHOOK_TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/test}
postgres_database=""

# create|drop a database on $postgres_server, as tests/conftest.py does.
postgres() {
  "$PYTHON" - "$postgres_server" "$1" "$2" <<'PY'
import sys
import psycopg2
server, action, name = sys.argv[1:]
connection = psycopg2.connect(server, connect_timeout=5)
connection.autocommit = True
with connection.cursor() as cursor:
    if action == "create":
        cursor.execute(f'CREATE DATABASE "{name}"')
    else:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
connection.close()
PY
}

stop() {
  status=$?
  for pid in $server $orchestrator; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      wait "$pid" || true
    fi
  done
  if [ -n "$postgres_database" ]; then
    postgres drop "$postgres_database" || true
  fi
  if [ "$status" -ne 0 ] && [ -f "$work/gunicorn.log" ]; then
    echo "== gunicorn log (last 200 lines)"
    tail -n 200 "$work/gunicorn.log"
  fi
  rm -rf "$work"
  exit "$status"
}
trap stop EXIT

"$PYTHON" tests/fuzz_orchestrator.py "$work/orchestrator.port" &
orchestrator=$!
for _ in $(seq 1 100); do [ -s "$work/orchestrator.port" ] && break; sleep 0.1; done
orchestrator_port=$(cat "$work/orchestrator.port")

case ${FUZZ_DATABASE:-sqlite} in
  sqlite) database_url="sqlite:///$work/webhook.db" ;;
  postgresql)
    postgres_database="webhook_fuzz_$(date +%s)_$$"
    postgres create "$postgres_database"
    database_url="${postgres_server%/*}/$postgres_database" ;;
  *) echo "FUZZ_DATABASE must be sqlite or postgresql" >&2; exit 2 ;;
esac
echo "== fuzzing on ${FUZZ_DATABASE:-sqlite}, seed $SEED, $MAX_EXAMPLES examples"

port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base=http://127.0.0.1:$port

# HTTP(S)_PROXY on a closed loopback port, loopback exempt: whatever the fuzzer
# sends (an SNS certificate URL...), the service reaches no host off this machine.
env DATABASE_URL="$database_url" \
    STORAGE_URL="file://$work/manifests" \
    PUBLIC_BASE_URL="$base" \
    ADMIN_TOKEN="$ADMIN_TOKEN" \
    WEBHOOK_SECRETS="$FUZZ_WEBHOOK_SECRET" \
    SNS_TOPIC_ARNS="arn:aws:sns:eu-west-1:123456789012:fuzz" \
    DLCS_ORCHESTRATOR_URL="http://127.0.0.1:$orchestrator_port" \
    DLCS_TIMEOUT_SECONDS=5 \
    HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY=127.0.0.1 \
    GUNICORN_BIND="127.0.0.1:$port" GUNICORN_WORKERS=2 GUNICORN_THREADS=4 \
    "$PYTHON" -m gunicorn -c gunicorn.conf.py --no-control-socket wsgi:app \
    >"$work/gunicorn.log" 2>&1 &
server=$!

"$PYTHON" - "$base/readyz" <<'PY'
import sys, time, urllib.request
deadline = time.monotonic() + 30
while True:
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=2) as response:
            if response.status == 200:
                break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit(f"{sys.argv[1]} did not answer 200 within 30 s")
    time.sleep(0.2)
PY

started=$(date +%s)
# One worker: CPython 3.11's ast module is not thread-safe ("AST constructor
# recursion depth mismatch"), and hypothesis parses sources from every worker.
# Run from $work: schemathesis keeps a cache in ./.schemathesis.
root=$(pwd)
(cd "$work" && PYTHONPATH="$root" SCHEMATHESIS_HOOKS=tests.fuzz_hooks \
  "$PYTHON" -m schemathesis.cli --config-file "$root/.ci/schemathesis.toml" \
  run "$base/openapi.json" \
  --header "Authorization: Bearer $ADMIN_TOKEN" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
  --phases examples,coverage,fuzzing,stateful \
  --max-examples "$MAX_EXAMPLES" --seed "$SEED" \
  --generation-database none --workers 1 --request-timeout 30 --no-color) \
  | tee "$work/schemathesis.log"
echo "== fuzzing took $(( $(date +%s) - started )) s"

# A 500 is answered as problem+json and logged; the checks above see it, and this
# also catches one the fuzzer could not (a crashed or timed-out worker).
if grep -q "unhandled error\|WORKER TIMEOUT\|was sent SIG" "$work/gunicorn.log"; then
  echo "the server logged an unhandled error or a worker crash:"
  grep -n -A20 "unhandled error\|WORKER TIMEOUT\|was sent SIG" "$work/gunicorn.log" | head -n 100
  exit 1
fi

# One plain closing line with the count, as CI reads it.
cases=$(sed -n 's/^ *\([0-9][0-9]*\) generated, \([0-9][0-9]*\) passed$/\2/p' "$work/schemathesis.log" | tail -n 1)
echo "fuzz: ${cases:-0} passed, 0 failed"
