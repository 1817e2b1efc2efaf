#!/usr/bin/env python3
"""Drive the API with a client generated from the OpenAPI document by a generator we did not write
(issue 3, item 6).

    python3 tests/python/generated_client.py --spec openapi/zedops.json --base http://127.0.0.1:8080 \\
        --agent NAME --container NAME [--token TOKEN] [--grace-s 5] [--keep]

Steps (any failure prints what went wrong and exits 1):
 1. Generates a Python client from --spec with `openapi-python-client` (PyPI) into a temporary
    directory, offline (the document is read from disk; post hooks such as ruff are switched off by
    the config file), with --fail-on-warning: a construct the generator cannot turn into code fails.
 2. Imports the generated package (sys.path) and finds the operations by operationId
    (`list_agents`, `container_action`), whatever tag folder the generator put them in.
 3. list_agents: expects 200 and a list of generated AgentInfo models; the --agent is in it, online.
 4. container_action with action=restart on --container: expects 200 and a generated ActionResult
    with changed == true and container.name == --container.

The bearer token comes from --token or ZEDOPS_TOKEN; without one the plain (unauthenticated)
client is used, which a server without tokens accepts. Exit 0 when all holds.
"""

from __future__ import annotations

import argparse
import glob
import importlib
import os
import subprocess
import sys
import tempfile
import time
import traceback
from importlib.metadata import PackageNotFoundError, version

PACKAGE = "zedops_client"
# Generation config: no post hooks (no ruff/black needed, nothing run after generating).
CONFIG = f"""post_hooks: []
project_name_override: zedops-client
package_name_override: {PACKAGE}
"""
GENERATE_TIMEOUT_S = 90


class Failure(Exception):
    pass


def step(msg: str) -> None:
    print(f"[generated-client] {msg}", flush=True)


def generate(spec: str, workdir: str) -> str:
    """Generates the client package under workdir; returns its directory."""
    try:
        gen_version = version("openapi-python-client")
    except PackageNotFoundError:
        raise Failure(
            "openapi-python-client is not installed for "
            f"{sys.executable}: run `bash scripts/provision.sh`"
        ) from None
    cfg = os.path.join(workdir, "config.yaml")
    with open(cfg, "w", encoding="utf-8") as f:
        f.write(CONFIG)
    out = os.path.join(workdir, PACKAGE)
    cmd = [
        sys.executable,
        "-m",
        "openapi_python_client",
        "generate",
        "--path",
        spec,
        "--config",
        cfg,
        "--meta",
        "none",
        "--output-path",
        out,
        "--fail-on-warning",
    ]
    step(f"generating with openapi-python-client {gen_version} from {spec}")
    t0 = time.monotonic()
    env = dict(os.environ, NO_COLOR="1", TERM="dumb", COLUMNS="200")
    try:
        p = subprocess.run(
            cmd,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=GENERATE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise Failure(
            f"openapi-python-client did not finish within {GENERATE_TIMEOUT_S} s"
        ) from None
    output = (p.stdout + p.stderr).strip()
    if p.returncode != 0:
        raise Failure(
            f"openapi-python-client exited with {p.returncode} (warnings are fatal here):\n{output}"
        )
    if not os.path.isfile(os.path.join(out, "__init__.py")):
        raise Failure(f"openapi-python-client wrote no package at {out}:\n{output}")
    n = len(glob.glob(os.path.join(out, "api", "*", "*.py")))
    step(f"generated {PACKAGE} ({n} api modules) in {time.monotonic() - t0:.1f} s")
    return out


def operation(package_dir: str, operation_id: str):
    """The generated module for an operationId (api/<tag>/<operation_id>.py)."""
    found = sorted(glob.glob(os.path.join(package_dir, "api", "*", f"{operation_id}.py")))
    if len(found) != 1:
        raise Failure(
            f"expected one generated module for operationId {operation_id!r}, found {found or 'none'}"
        )
    tag = os.path.basename(os.path.dirname(found[0]))
    return importlib.import_module(f"{PACKAGE}.api.{tag}.{operation_id}")


def describe(resp) -> str:
    parsed = resp.parsed
    if parsed is not None and hasattr(parsed, "to_dict"):
        body = parsed.to_dict()
    else:
        body = resp.content.decode("utf-8", "replace")[:2000]
    return f"HTTP {int(resp.status_code)}: {body}"


def run(args: argparse.Namespace, workdir: str) -> None:
    spec = os.path.abspath(args.spec)
    if not os.path.isfile(spec):
        raise Failure(f"no OpenAPI document at {spec}")
    pkg_dir = generate(spec, workdir)

    sys.path.insert(0, workdir)
    try:
        client_mod = importlib.import_module(f"{PACKAGE}.client")
        models = importlib.import_module(f"{PACKAGE}.models")
        list_agents = operation(pkg_dir, "list_agents")
        container_action = operation(pkg_dir, "container_action")
    except Failure:
        raise
    except Exception as e:  # noqa: BLE001 - an import error is a generator/spec problem: show it
        raise Failure(
            f"cannot import the generated client: {e!r}\n{traceback.format_exc()}"
        ) from None
    for name in ("AgentInfo", "ActionResult", "ErrorBody"):
        if not hasattr(models, name):
            raise Failure(f"the generated models have no {name}")

    import httpx  # a dependency of the generated client (and of openapi-python-client)

    common = {
        "base_url": args.base,
        "timeout": httpx.Timeout(60.0),
        "raise_on_unexpected_status": True,
    }
    if args.token:
        client = client_mod.AuthenticatedClient(token=args.token, **common)
        step(f"client for {args.base} with a bearer token")
    else:
        client = client_mod.Client(**common)
        step(f"client for {args.base} without a token")

    with client:
        # list_agents
        resp = list_agents.sync_detailed(client=client)
        if int(resp.status_code) != 200:
            raise Failure(f"list_agents: expected HTTP 200, got {describe(resp)}")
        agents = resp.parsed
        if not isinstance(agents, list) or not all(isinstance(a, models.AgentInfo) for a in agents):
            raise Failure(f"list_agents: expected a list of AgentInfo, got {agents!r}")
        names = [a.name for a in agents]
        mine = [a for a in agents if a.name == args.agent]
        if not mine:
            raise Failure(f"list_agents: agent {args.agent!r} not in the list {names}")
        agent = mine[0]
        if agent.online is not True:
            raise Failure(f"list_agents: agent {args.agent!r} is not online: {agent.to_dict()}")
        step(
            f"list_agents: {len(agents)} agent(s); {agent.name} online, state {agent.state.value}, "
            f"last seen {agent.last_seen.isoformat()}"
        )

        # container_action restart
        t0 = time.monotonic()
        resp = container_action.sync_detailed(
            args.agent, args.container, "restart", client=client, grace_s=args.grace_s
        )
        took = time.monotonic() - t0
        if int(resp.status_code) != 200:
            raise Failure(f"container_action restart: expected HTTP 200, got {describe(resp)}")
        result = resp.parsed
        if not isinstance(result, models.ActionResult):
            raise Failure(f"container_action restart: expected an ActionResult, got {result!r}")
        if result.changed is not True:
            raise Failure(
                f"container_action restart: expected changed=true, got {result.to_dict()}"
            )
        if result.container.name != args.container:
            raise Failure(
                f"container_action restart: expected container {args.container!r}, "
                f"got {result.container.name!r}: {result.to_dict()}"
            )
        step(
            f"container_action restart: {result.container.name} ({result.container.short_id}) "
            f"changed={result.changed}, now {result.container.state.value} ({took:.2f} s)"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", required=True, help="OpenAPI document (JSON)")
    ap.add_argument("--base", required=True, help="API base URL, e.g. http://127.0.0.1:8080")
    ap.add_argument("--agent", required=True, help="agent expected online")
    ap.add_argument("--container", required=True, help="container to restart on that agent")
    ap.add_argument(
        "--token",
        default=os.environ.get("ZEDOPS_TOKEN") or None,
        help="bearer token (default: $ZEDOPS_TOKEN; none: unauthenticated client)",
    )
    ap.add_argument("--grace-s", type=int, default=5, help="grace_s of the restart (default 5)")
    ap.add_argument("--keep", action="store_true", help="keep the generated client and print where")
    args = ap.parse_args()

    t0 = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="zedops-genclient-")
    try:
        run(args, workdir)
    except Failure as e:
        print(f"[generated-client] FAILED: {e}", file=sys.stderr, flush=True)
        return 1
    except Exception as e:  # noqa: BLE001 - anything the generated code raised (parse, HTTP, ...)
        if type(e).__module__.startswith("httpx"):
            print(
                f"[generated-client] FAILED: HTTP request to {args.base} failed: "
                f"{type(e).__name__}: {e}",
                file=sys.stderr,
                flush=True,
            )
            return 1
        print(
            f"[generated-client] FAILED with {type(e).__name__}: {e}\n{traceback.format_exc()}",
            file=sys.stderr,
            flush=True,
        )
        return 1
    finally:
        if args.keep:
            print(f"[generated-client] generated client kept in {workdir}", flush=True)
        else:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    step(f"ok in {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
