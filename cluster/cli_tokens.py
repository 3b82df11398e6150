"""`tessera token create/list/revoke`: the HTTP API's bearer tokens, in the served store (jobs.sqlite of
--state-dir). Run them where `tessera serve` keeps its state; they need neither Ray nor a running serve.

    tessera token create studio-a --max-priority 5 --max-queued 50   # prints the token once
    tessera token list
    tessera token revoke 3f9c0a1b2d4e
"""

from __future__ import annotations

import argparse
import json
import time

from cluster.cli_jobs import DEFAULT_STATE_DIR


def _store(args: argparse.Namespace):
    from cluster.job_files import JobFiles
    from cluster.tenants import TokenStore

    return TokenStore(JobFiles(args.state_dir).store_path)


def token_command(args: argparse.Namespace) -> int:
    store = _store(args)
    if args.action == "create":
        token_id, token = store.create(args.tenant, args.max_priority, args.max_queued)
        print(json.dumps({"id": token_id, "tenant": args.tenant, "token": token}))
        return 0
    if args.action == "revoke":
        store.revoke(args.token_id)
        print(f"revoked {args.token_id}")
        return 0
    for row in store.list():
        created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(row["created_at"]))
        state = "revoked" if row["revoked_at"] else "live"
        print(
            f"{row['id']}  {row['tenant']:20s}  {state:7s}  created {created}  "
            f"max priority {row['max_priority']}  max queued {row['max_queued']}"
        )
    return 0


def add_token_command(sub) -> None:
    parser = sub.add_parser("token", help="the HTTP API's bearer tokens: create, list, revoke")
    actions = parser.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="a new token for a tenant (printed once)")
    create.add_argument("tenant")
    create.add_argument("--max-priority", type=int, default=None, help="the tenant's priority ceiling")
    create.add_argument("--max-queued", type=int, default=None, help="the tenant's limit on jobs waiting to run")
    listing = actions.add_parser("list", help="tokens (never their secret) and their tenants' limits")
    revoke = actions.add_parser("revoke", help="refuse a token from now on")
    revoke.add_argument("token_id")
    for action in (create, listing, revoke):
        action.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="the served store's folder")
