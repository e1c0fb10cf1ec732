#!/usr/bin/env bash
# cli-smoke.sh drives a real `nubo serve` with the stock AWS CLI v2, the way a
# user would: create, wait, read, list, update, publish, alias, delete.
#
# Usage: scripts/cli-smoke.sh   (from anywhere; builds bin/nubo when missing
# or older than the sources). Needs the AWS CLI (/usr/bin/aws, else `aws` on
# PATH) and python3. Exits non-zero on any failed check.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
nubo=$root/bin/nubo

if [[ -x /usr/bin/aws ]]; then
	aws=/usr/bin/aws
elif command -v aws >/dev/null; then
	aws=$(command -v aws)
else
	echo "cli-smoke: no AWS CLI found" >&2
	exit 1
fi

if [[ ! -x $nubo || -n $(find "$root/cmd" "$root/internal" -name '*.go' -newer "$nubo" -print -quit) ]]; then
	echo "cli-smoke: building $nubo"
	bash "$root/scripts/build.sh" "$nubo"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/nubo-cli-smoke.XXXXXX")
pid=""
cleanup() {
	if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

# Port 0: the kernel picks a free port and nubo logs the one it got, so
# there is no window in which another process can take it.
# The namespace sandbox needs root; without it the smoke test runs functions
# as plain processes (NUBO_ISOLATION overrides either).
isolation=${NUBO_ISOLATION:-namespace}
[[ $(id -u) == 0 ]] || isolation=${NUBO_ISOLATION:-process}
"$nubo" serve --listen 127.0.0.1:0 --data-dir "$work/data" --state-transition-delay 300ms \
	--isolation "$isolation" 2>"$work/nubo.log" &
pid=$!
addr=""
for _ in $(seq 1 200); do
	addr=$(sed -n 's/.*msg="nubo serving" listen=\([^ ]*\).*/\1/p' "$work/nubo.log" | head -n1)
	[[ -n $addr ]] && break
	if ! kill -0 "$pid" 2>/dev/null; then
		echo "cli-smoke: nubo exited:" >&2
		cat "$work/nubo.log" >&2
		exit 1
	fi
	sleep 0.05
done
if [[ -z $addr ]]; then
	echo "cli-smoke: nubo is not serving after 10s" >&2
	cat "$work/nubo.log" >&2
	exit 1
fi
endpoint=http://$addr

export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1
export AWS_PAGER="" AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL AWS_ENDPOINT_URL_LAMBDA

lam() { "$aws" --endpoint-url "$endpoint" --output json lambda "$@"; }

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $1"; }
fail() {
	failed=$((failed + 1))
	echo "FAIL $1" >&2
	[[ -f $work/out ]] && sed 's/^/     /' "$work/out" >&2
	[[ -f $work/err ]] && sed 's/^/     /' "$work/err" >&2
	return 0
}

# step NAME ARGS...: runs `aws lambda ARGS`, output in $work/out, stderr in
# $work/err; returns the CLI's status without tripping set -e.
step() {
	local name=$1
	shift
	rm -f "$work/out" "$work/err"
	if lam "$@" >"$work/out" 2>"$work/err"; then
		return 0
	fi
	fail "$name: aws lambda $* exited non-zero"
	return 1
}

# expect NAME PYEXPR: evaluates a python expression over the JSON output
# (bound to j) and passes when it is true.
expect() {
	local name=$1 expr=$2
	if python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); sys.exit(0 if eval(sys.argv[2]) else 1)' "$work/out" "$expr" 2>>"$work/err"; then
		ok "$name"
	else
		fail "$name: $expr"
	fi
}

sha64() { python3 -c 'import base64,hashlib,sys; print(base64.b64encode(hashlib.sha256(open(sys.argv[1],"rb").read()).digest()).decode())' "$1"; }

mkzip() { # mkzip ZIP BODY: a zip holding an executable bootstrap
	mkdir -p "$work/src"
	printf '#!/bin/sh\n# %s\n' "$2" >"$work/src/bootstrap"
	chmod 755 "$work/src/bootstrap"
	(cd "$work/src" && python3 -m zipfile -c "$1" bootstrap)
}
mkzip "$work/v1.zip" "version one"
mkzip "$work/v2.zip" "version two"
sha1=$(sha64 "$work/v1.zip")
sha2=$(sha64 "$work/v2.zip")
fn=smoke
arn=arn:aws:lambda:us-east-1:000000000000:function:$fn

if step create-function create-function --function-name "$fn" --runtime provided.al2023 --handler bootstrap \
	--role arn:aws:iam::000000000000:role/smoke --zip-file "fileb://$work/v1.zip" --memory-size 256 --timeout 5 \
	--environment 'Variables={GREETING=hello}'; then
	expect "create-function answers Pending" "j['State'] == 'Pending' and j['StateReasonCode'] == 'Creating'"
	expect "create-function CodeSha256" "j['CodeSha256'] == '$sha1' and j['FunctionArn'] == '$arn'"
	expect "create-function configuration" "j['MemorySize'] == 256 and j['Timeout'] == 5 and j['Environment']['Variables'] == {'GREETING': 'hello'}"
fi

if step "wait function-active-v2" wait function-active-v2 --function-name "$fn"; then
	ok "wait function-active-v2"
fi

if step get-function get-function --function-name "$fn"; then
	expect "get-function Active" "j['Configuration']['State'] == 'Active' and j['Configuration']['Version'] == '\$LATEST'"
	expect "get-function LastModified" "__import__('re').fullmatch(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000', j['Configuration']['LastModified']) is not None"
	loc=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["Code"]["Location"])' "$work/out") || loc=""
	if python3 -c 'import sys,urllib.request; sys.exit(0 if urllib.request.urlopen(sys.argv[1]).read() == open(sys.argv[2],"rb").read() else 1)' "$loc" "$work/v1.zip"; then
		ok "get-function Code.Location downloads the zip"
	else
		fail "get-function Code.Location downloads the zip"
	fi
fi

if step list-functions list-functions; then
	expect "list-functions shows $fn" "[f['FunctionName'] for f in j['Functions']] == ['$fn']"
fi

if step update-function-code update-function-code --function-name "$fn" --zip-file "fileb://$work/v2.zip"; then
	expect "update-function-code answers InProgress" "j['LastUpdateStatus'] == 'InProgress' and j['CodeSha256'] == '$sha2'"
fi

if step "wait function-updated-v2" wait function-updated-v2 --function-name "$fn"; then
	ok "wait function-updated-v2"
fi

if step get-function-configuration get-function-configuration --function-name "$arn"; then
	expect "updated code is Successful" "j['LastUpdateStatus'] == 'Successful' and j['CodeSha256'] == '$sha2'"
fi

if step publish-version publish-version --function-name "$fn" --description first; then
	expect "publish-version is 1" "j['Version'] == '1' and j['FunctionArn'] == '$arn:1' and j['CodeSha256'] == '$sha2'"
fi

if step create-alias create-alias --function-name "$fn" --name live --function-version 1; then
	expect "create-alias" "j['AliasArn'] == '$arn:live' and j['FunctionVersion'] == '1'"
fi

# Invoke a Python function with the log tail, as a user would.
mkdir -p "$work/py"
cat >"$work/py/app.py" <<'PY'
def handler(event, context):
    print("hello from", context.aws_request_id)
    return {"echo": event, "fn": context.function_name}
PY
(cd "$work/py" && python3 -m zipfile -c "$work/py.zip" app.py)
if step "create-function python" create-function --function-name hello --runtime "$(python3 -c 'import sys; print("python%d.%d" % sys.version_info[:2])')" \
	--handler app.handler --role arn:aws:iam::000000000000:role/smoke --zip-file "fileb://$work/py.zip" &&
	step "wait hello active" wait function-active-v2 --function-name hello; then
	if step "invoke --log-type Tail" invoke --function-name hello --cli-binary-format raw-in-base64-out \
		--payload '{"n":42}' --log-type Tail "$work/payload.json"; then
		expect "invoke answers 200 with the version" "j['StatusCode'] == 200 and j['ExecutedVersion'] == '\$LATEST' and 'FunctionError' not in j"
		expect "invoke log tail has START, output, END, REPORT" "(lambda t: 'START RequestId:' in t and 'hello from' in t and 'END RequestId:' in t and 'REPORT RequestId:' in t and 'Init Duration:' in t)(__import__('base64').b64decode(j['LogResult']).decode())"
		if python3 -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1])) == {"echo": {"n": 42}, "fn": "hello"} else 1)' "$work/payload.json"; then
			ok "invoke payload"
		else
			fail "invoke payload: $(cat "$work/payload.json")"
		fi
	fi
fi

# InvokeWithResponseStream, which neither CLI offers, through boto3: it
# reads the event stream itself.
rm -f "$work/out" "$work/err"
if ! python3 -c 'import boto3' 2>/dev/null; then
	if [[ ${CI:-} == true ]]; then fail "invoke-with-response-stream: no boto3"; else echo "skip invoke-with-response-stream: no boto3"; fi
elif python3 - "$endpoint" >"$work/out" 2>"$work/err" <<'PY'; then
import base64, json, sys
import boto3
c = boto3.client("lambda", endpoint_url=sys.argv[1])
r = c.invoke_with_response_stream(FunctionName="hello", Payload=b'{"n":7}', LogType="Tail")
payload, complete = b"", None
for ev in r["EventStream"]:
    if "PayloadChunk" in ev:
        payload += ev["PayloadChunk"]["Payload"]
    elif "InvokeComplete" in ev:
        complete = ev["InvokeComplete"]
assert r["StatusCode"] == 200 and r["ExecutedVersion"] == "$LATEST", r
assert json.loads(payload) == {"echo": {"n": 7}, "fn": "hello"}, payload
assert complete is not None and not complete.get("ErrorCode"), complete
assert "hello from" in base64.b64decode(complete["LogResult"]).decode(), complete
PY
	ok "invoke-with-response-stream (boto3)"
else
	fail "invoke-with-response-stream (boto3)"
fi

# A function URL, made with the CLI and called with plain HTTP, as a
# browser or curl would.
if step create-function-url-config create-function-url-config --function-name hello --auth-type NONE &&
	step "add-permission InvokeFunctionUrl" add-permission --function-name hello --statement-id url \
		--action lambda:InvokeFunctionUrl --principal '*' --function-url-auth-type NONE &&
	step get-function-url-config get-function-url-config --function-name hello; then
	furl=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["FunctionUrl"])' "$work/out")
	rm -f "$work/err"
	if python3 - "$furl" >"$work/out" 2>"$work/err" <<'PY'; then
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + "smoke?x=1") as r:
    assert r.status == 200 and r.headers["Content-Type"] == "application/json", (r.status, dict(r.headers))
    body = json.load(r)
ev = body["echo"]
assert body["fn"] == "hello" and ev["version"] == "2.0" and ev["rawPath"] == "/smoke", body
assert ev["queryStringParameters"] == {"x": "1"} and ev["requestContext"]["http"]["method"] == "GET", ev
PY
		ok "function URL (NONE) answers with the function's result"
	else
		fail "function URL $furl"
	fi
fi

# The README's quickstart as written, with each AWS CLI this host has
# (Debian's v2 and, where `aws` on the PATH is another major version, v1):
# what a new user pastes must work. Only the endpoint, the scratch paths and
# the CLI's path are substituted. The quickstart makes its own "hello".
lam delete-function --function-name hello >/dev/null 2>&1 || true
clis=("$aws")
if other=$(command -v aws) && [[ $("$other" --version 2>&1 | cut -c1-9) != $("$aws" --version 2>&1 | cut -c1-9) ]]; then
	clis+=("$other")
fi
for cli in "${clis[@]}"; do
	v=$("$cli" --version 2>&1 | cut -d' ' -f1)
	qs=$work/quickstart
	rm -rf "$qs" && mkdir -p "$qs"
	awk '/^## Quickstart/ { q = 1 } q && /^```sh$/ { b = 1; next } b && /^```$/ { exit } b' "$root/README.md" |
		sed -e 's|  *# .*$||' -e "s#^EP=http://127.0.0.1:9000#EP=$endpoint#" -e "s#/tmp/#$qs/#g" -e "s#^aws #'$cli' #" \
			-e "s#^\./bin/nubo logs \(.*\)#'$nubo' logs \1 --endpoint \$EP#" >"$qs/run.sh"
	rm -f "$work/out" "$work/err"
	if ! grep -q "logs hello" "$qs/run.sh"; then
		fail "quickstart ($v): no quickstart block found in README.md"
	elif (cd "$root" && bash -eo pipefail "$qs/run.sh") >"$work/out" 2>"$work/err"; then
		if grep -q "^START RequestId:" "$work/out" && grep -q "hello from" "$work/out" &&
			[[ $(grep -c "hello from" "$work/out") -ge 2 ]] &&
			python3 -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1])) == {"you_sent": {"name": "nubo"}} else 1)' "$qs/out.json"; then
			ok "README quickstart ($v)"
		else
			fail "README quickstart ($v): log tail, answer or log stream wrong"
		fi
	else
		fail "README quickstart ($v) exited non-zero"
	fi
	lam delete-function --function-name hello >/dev/null 2>&1 || true
done

if step delete-function delete-function --function-name "$fn"; then
	ok "delete-function"
fi

rm -f "$work/out" "$work/err"
if lam get-function --function-name "$fn" >"$work/out" 2>"$work/err"; then
	fail "get-function after delete succeeded"
elif grep -q "ResourceNotFoundException" "$work/err" && grep -q "Function not found: $arn" "$work/err"; then
	ok "get-function after delete: ResourceNotFoundException"
else
	fail "get-function after delete: wrong error"
fi

echo "cli-smoke: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
