"""Helpers of tests/conformance/run.sh (standard library only).

    check.py wait BASE_URL                  wait until the server answers /healthz
    check.py seed BASE_URL OPENAPI_OUT      link one identity, record a prospect, save /openapi.json
    check.py report REPORT_DIR ACCEPTED     judge a schemathesis run against the accepted list

The credentials come from the environment (AUTOLINK_ADMIN__TOKEN, CONFORMANCE_CONNECTOR_USER,
AUTOLINK_AUTH__BASIC__PASSWORD) and are never printed.
"""

from __future__ import annotations

import base64
import glob
import json
import os
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections import Counter


def request(method: str, url: str, headers: dict[str, str], body: bytes | None = None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def wait(base: str) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            status, _ = request("GET", f"{base}/healthz", {})
            if status == 200:
                return 0
        except OSError:
            pass
        time.sleep(0.2)
    print(f"nothing answers at {base}/healthz", file=sys.stderr)
    return 1


def seed(base: str, openapi_out: str) -> int:
    user = os.environ["CONFORMANCE_CONNECTOR_USER"]
    password = os.environ["AUTOLINK_AUTH__BASIC__PASSWORD"]
    basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    body = {
        "email": "ana@example.com",
        "identities": [{"signInType": "emailAddress", "issuer": "conformance.onmicrosoft.com",
                        "issuerAssignedId": "ana@example.com"}],
        "objectId": "00000000-0000-0000-0000-0000000000a1",
        "step": "PreTokenIssuance",
        "client_id": "00000000-0000-0000-0000-00000000d3e0",
    }
    status, answer = request(
        "POST", f"{base}/b2c/api-connector",
        {"Authorization": f"Basic {basic}", "Content-Type": "application/json"},
        json.dumps(body).encode(),
    )
    if status != 200 or b"extension_CustomerAccountNumber" not in answer:
        print(f"seeding a link: HTTP {status}: {answer[:300]!r}", file=sys.stderr)
        return 1
    token = os.environ["AUTOLINK_ADMIN__TOKEN"]
    admin = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    prospect = {"email": "cy@example.com", "companyName": "Contoso", "legalEntity": "USRT"}
    status, answer = request("POST", f"{base}/admin/v1/prospects", admin, json.dumps(prospect).encode())
    if status != 201:
        print(f"seeding a prospect: HTTP {status}: {answer[:300]!r}", file=sys.stderr)
        return 1
    status, document = request("GET", f"{base}/openapi.json", {"Authorization": f"Bearer {token}"})
    if status != 200:
        print(f"GET /openapi.json: HTTP {status}", file=sys.stderr)
        return 1
    json.loads(document)
    with open(openapi_out, "wb") as out:
        out.write(document)
    return 0


def decode(content) -> str:
    if isinstance(content, dict) and "$base64" in content:
        return base64.b64decode(content["$base64"]).decode("utf-8", "replace")
    if content is None:
        return ""
    return str(content)


def failures(ndjson_path: str):
    """Every failed check of the run, with the request and the answer that failed it."""
    requests = 0
    found = []
    errors = []
    with open(ndjson_path, encoding="utf-8") as events:
        for line in events:
            event = json.loads(line)
            if "NonFatalError" in event:
                info = event["NonFatalError"]
                errors.append(f"{info.get('label', '?')}: {info.get('info', {}).get('title', '')} "
                              f"{info.get('info', {}).get('message', '')}".strip())
            if "FatalError" in event:
                errors.append(f"fatal: {event['FatalError']}")
            finished = event.get("ScenarioFinished")
            if not finished:
                continue
            recorder = finished["recorder"]
            interactions = recorder.get("interactions", {})
            requests += len(interactions)
            for case_id, checks in recorder.get("checks", {}).items():
                for check in checks:
                    if check.get("status") != "failure":
                        continue
                    failure = check.get("failure_info", {}).get("failure", {})
                    interaction = interactions.get(case_id, {})
                    response = interaction.get("response") or {}
                    req = interaction.get("request") or {}
                    found.append({
                        "operation": failure.get("operation", recorder.get("label", "?")),
                        "code": failure.get("code", check.get("name")),
                        "check": check.get("name"),
                        "title": failure.get("title", ""),
                        "message": failure.get("message", ""),
                        "status": response.get("status_code"),
                        "body": decode(response.get("content")),
                        "request": f"{req.get('method', '?')} {req.get('uri', '?')}",
                        "request_body": decode(req.get("body"))[:300],
                    })
    return requests, found, errors


def matches(entry: dict, failure: dict) -> bool:
    if entry["operation"] != failure["operation"] or entry["code"] != failure["code"]:
        return False
    if "status" in entry and entry["status"] != failure["status"]:
        return False
    if "body_contains" in entry and entry["body_contains"] not in failure["body"]:
        return False
    return True


def report(report_dir: str, accepted_path: str) -> int:
    with open(accepted_path, "rb") as file:
        accepted = tomllib.load(file).get("accepted", [])
    for entry in accepted:
        missing = {"operation", "code", "reason"} - set(entry)
        if missing or not entry["reason"].strip():
            print(f"accepted.toml: an entry without {sorted(missing) or ['a reason']}: {entry}")
            return 1
    ndjson = sorted(glob.glob(os.path.join(report_dir, "ndjson-*.ndjson")))
    summary = sorted(glob.glob(os.path.join(report_dir, "json-*.json")))
    if not ndjson or not summary:
        print(f"no schemathesis report in {report_dir}: schemathesis did not run")
        return 1
    with open(summary[-1], encoding="utf-8") as file:
        run = json.load(file)
    requests, found, errors = failures(ndjson[-1])
    print(f"schemathesis {run.get('schemathesis_version')}: {run['test_cases']['generated']} test cases, "
          f"{requests} requests, {len(found)} failed checks, {len(errors)} errors, "
          f"{run.get('running_time', 0):.0f} s")
    ok = run.get("complete", False)
    if not ok:
        print(f"the run did not complete: {run.get('stop_reason')}")
    used = Counter()
    unexpected = []
    for failure in found:
        entry = next((e for e in accepted if matches(e, failure)), None)
        if entry is None:
            unexpected.append(failure)
        else:
            used[accepted.index(entry)] += 1
    for index, entry in enumerate(accepted):
        status = f"{used[index]} accepted" if used[index] else "not seen in this run"
        reason = " ".join(entry["reason"].split())
        print(f"  [{status}] {entry['code']} {entry['operation']}: {reason}")
    seen = set()
    for failure in unexpected:
        key = (failure["operation"], failure["code"], failure["status"], failure["body"][:80])
        if key in seen:
            continue
        seen.add(key)
        print(f"\nUNEXPECTED {failure['code']} {failure['title']} on {failure['operation']}")
        print(f"  {failure['message'].strip()}".replace("\n", "\n  "))
        print(f"  request:  {failure['request']} {failure['request_body']}")
        print(f"  response: {failure['status']} {failure['body'][:300]}")
    for error in errors:
        print(f"\nERROR {error[:2000]}")
    # Warnings that mean part of the API was not really tested fail the run too, unless listed.
    with open(accepted_path, "rb") as file:
        accepted_warnings = tomllib.load(file).get("accepted_warning", [])
    warnings = run.get("warnings", {})
    for name in ("unused_openapi_auth", "missing_auth", "missing_test_data", "validation_mismatch"):
        for operation in warnings.get(name) or []:
            listed = next((w for w in accepted_warnings
                           if w.get("name") == name and w.get("operation") == operation
                           and w.get("reason", "").strip()), None)
            if listed:
                reason = " ".join(listed["reason"].split())
                print(f"  [accepted warning] {name} {operation}: {reason}")
            else:
                print(f"\nWARNING {name}: {operation}")
                ok = False
    if unexpected or errors:
        ok = False
    print(f"\n{len(found) - len(unexpected)} failed checks accepted (accepted.toml), "
          f"{len(unexpected)} not accepted, {len(errors)} errors")
    return 0 if ok else 1


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[1] == "wait":
        return wait(argv[2])
    if len(argv) == 4 and argv[1] == "seed":
        return seed(argv[2], argv[3])
    if len(argv) == 4 and argv[1] == "report":
        return report(argv[2], argv[3])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
