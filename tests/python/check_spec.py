#!/usr/bin/env python3
"""Check the checked-in OpenAPI document (issue 3, item 7).

    python3 tests/python/check_spec.py [openapi/zedops.json]

What is checked (each failure is listed, then the script exits 1):

 1. The document is valid OpenAPI 3.x according to `openapi-spec-validator` (PyPI), with the
    validator for the version the document declares (3.0.x or 3.1.x); every validation error is
    listed with its location.
 2. Every operation (every method of every path) has:
    a. a non-empty `summary`;
    b. an `operationId`, unique in the document (generated clients name their functions after it);
    c. at least one 2xx response.
 3. Every operation except the plain operational routes /healthz, /readyz and /metrics documents
    its errors: at least one 4xx or 5xx response, and EVERY 4xx/5xx response it documents
    - has a non-empty `description`, and
    - has an `application/json` media type (parameters such as `; charset=utf-8` allowed) whose
      schema is, or `$ref`s to, the ErrorBody shape: an object with properties `code` and
      `message`, both required.
    The operational routes may document only their own responses (e.g. /readyz 503 in plain
    text); for them only 2a-2c apply.

Notes (printed, never fatal): success responses with an empty description, and parameters without
a description. They make generated clients' docs poorer but are not errors.

Exit status: 0 when everything holds, 1 when something does not, 2 on bad usage or when
openapi-spec-validator is not installed (`bash scripts/provision.sh` installs it).
"""

from __future__ import annotations

import json
import os
import sys

# Operational routes: plain text health and metrics, no JSON error bodies required.
OPERATIONAL = {"/healthz", "/readyz", "/metrics"}
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def resolve(doc: dict, node):
    """Follows local `$ref`s (`#/a/b`) until a node without one."""
    seen = set()
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if ref in seen or not ref.startswith("#/"):
            return None
        seen.add(ref)
        cur = doc
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(cur, dict) or part not in cur:
                return None
            cur = cur[part]
        node = cur
    return node


def is_error_body(doc: dict, schema) -> bool:
    s = resolve(doc, schema)
    if not isinstance(s, dict):
        return False
    props = s.get("properties") or {}
    required = set(s.get("required") or [])
    return (
        s.get("type", "object") == "object"
        and "code" in props
        and "message" in props
        and {"code", "message"} <= required
    )


def validate_openapi(doc: dict) -> list[str]:
    try:
        from openapi_spec_validator import (
            OpenAPIV30SpecValidator,
            OpenAPIV31SpecValidator,
        )
    except ImportError as e:
        print(
            f"check_spec: cannot import openapi_spec_validator ({e}); run `bash scripts/provision.sh`",
            file=sys.stderr,
        )
        sys.exit(2)
    version = str(doc.get("openapi", ""))
    if version.startswith("3.0."):
        validator = OpenAPIV30SpecValidator
    elif version.startswith("3.1."):
        validator = OpenAPIV31SpecValidator
    else:
        return [f"`openapi` is {version!r}: not an OpenAPI 3.0.x or 3.1.x document"]
    errors = []
    for err in validator(doc).iter_errors():
        where = "/".join(str(p) for p in getattr(err, "absolute_path", [])) or "(document root)"
        errors.append(f"OpenAPI {version} schema: at {where}: {err.message}")
    return errors


def check_operations(doc: dict) -> tuple[list[str], list[str], int]:
    problems: list[str] = []
    notes: list[str] = []
    seen_ids: dict[str, str] = {}
    count = 0
    for path, item in (doc.get("paths") or {}).items():
        item = resolve(doc, item) or {}
        for method in METHODS:
            op = item.get(method)
            if not isinstance(op, dict):
                continue
            count += 1
            where = f"{method.upper()} {path}"
            if not str(op.get("summary") or "").strip():
                problems.append(f"{where}: no summary")
            op_id = op.get("operationId")
            if not op_id:
                problems.append(f"{where}: no operationId")
            elif op_id in seen_ids:
                problems.append(f"{where}: operationId {op_id!r} also used by {seen_ids[op_id]}")
            else:
                seen_ids[op_id] = where
            responses = op.get("responses") or {}
            codes = [str(c) for c in responses]
            if not any(c.startswith("2") for c in codes):
                problems.append(f"{where}: no 2xx response documented")
            for code, resp in responses.items():
                r = resolve(doc, resp) or {}
                if str(code).startswith("2") and not str(r.get("description") or "").strip():
                    notes.append(f"{where}: response {code} has an empty description")
            for p in op.get("parameters") or []:
                p = resolve(doc, p) or {}
                if not str(p.get("description") or "").strip():
                    notes.append(
                        f"{where}: parameter {p.get('name')!r} ({p.get('in')}) has no description"
                    )

            if path in OPERATIONAL:
                continue
            errs = [c for c in codes if c[:1] in ("4", "5") or c.upper() in ("4XX", "5XX")]
            if not errs:
                problems.append(f"{where}: no 4xx/5xx error response documented")
                continue
            for code in errs:
                r = resolve(doc, responses[code]) or {}
                if not str(r.get("description") or "").strip():
                    problems.append(f"{where}: error response {code} has an empty description")
                content = r.get("content") or {}
                json_types = {
                    mt: body
                    for mt, body in content.items()
                    if mt.split(";")[0].strip().lower() == "application/json"
                }
                if not json_types:
                    problems.append(
                        f"{where}: error response {code} has no application/json body "
                        f"(media types: {sorted(content) or 'none'})"
                    )
                    continue
                for mt, body in json_types.items():
                    if not is_error_body(doc, (body or {}).get("schema")):
                        problems.append(
                            f"{where}: error response {code} ({mt}) is not the ErrorBody "
                            f"{{code, message}} schema: {json.dumps((body or {}).get('schema'))}"
                        )
    return problems, notes, count


def main(argv: list[str]) -> int:
    if len(argv) > 2 or (len(argv) == 2 and argv[1] in ("-h", "--help")):
        print(__doc__)
        return 2 if len(argv) > 2 else 0
    path = (
        argv[1]
        if len(argv) == 2
        else os.path.join(
            os.path.dirname(os.path.abspath(__file__)), "..", "..", "openapi", "zedops.json"
        )
    )
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        print(f"check_spec: cannot read {path}: {e}", file=sys.stderr)
        return 1
    if not isinstance(doc, dict):
        print(f"check_spec: {path} is not a JSON object", file=sys.stderr)
        return 1

    problems = validate_openapi(doc)
    valid = not problems
    op_problems, notes, count = check_operations(doc)
    problems += op_problems

    if notes:
        print(f"check_spec: {len(notes)} note(s), not fatal:")
        for n in notes:
            print(f"  note: {n}")
    if problems:
        print(f"check_spec: {path}: {len(problems)} problem(s):", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        if not valid:
            print(
                f"  (lines starting 'OpenAPI {doc.get('openapi')} schema' come from "
                "openapi-spec-validator: the document is not valid OpenAPI)",
                file=sys.stderr,
            )
        return 1
    print(
        f"check_spec: {path}: valid OpenAPI {doc.get('openapi')}; {count} operations, all with a "
        f"summary and operationId; every non-operational route documents ErrorBody error responses "
        f"(operational routes exempt: {', '.join(sorted(OPERATIONAL))})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
