"""``jinmei dashboards``: Grafana dashboards as code — export provisioning files or push by API.

    jinmei dashboards export DIR [--provisioning-path P]
    jinmei dashboards push --url URL [--token T]     (token default: $JINMEI_GRAFANA_TOKEN)

See dashboards/provisioning.py for what is provisioned and how a push stays idempotent.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from config.errors import JinmeiError
from config.loader import load_deployment
from jinmei.cli import config_option, formatter

__all__ = ["GRAFANA_TOKEN_ENV", "register"]

GRAFANA_TOKEN_ENV = "JINMEI_GRAFANA_TOKEN"


def register(sub: Any) -> None:
    """Add ``dashboards`` to the ``jinmei`` subcommands."""
    boards = sub.add_parser(
        "dashboards", formatter_class=formatter, help="Grafana dashboards: export or push",
        description="Build the Grafana dashboards of the deployment (one per mine and the "
                    "regulator overview)\nfrom the sensor registry and the limits table, and "
                    "jinmei's own from its Prometheus metrics;\nthen write them as provisioning "
                    "files or push them to Grafana.")
    actions = boards.add_subparsers(dest="dashboards_command", required=True, metavar="ACTION")
    export = actions.add_parser(
        "export", formatter_class=formatter, help="write Grafana provisioning files",
        description="Write datasources/jinmei.yaml, dashboards/jinmei.yaml and "
                    "dashboards/jinmei/*.json under DIR,\nready to copy to "
                    "/etc/grafana/provisioning.")
    config_option(export)
    prometheus_option(export)
    export.add_argument("dir", type=Path, metavar="DIR", help="output directory")
    export.add_argument("--provisioning-path", metavar="P",
                        help="where DIR will be on the Grafana host, e.g. "
                             "/etc/grafana/provisioning (default: DIR itself)")
    export.set_defaults(func=cmd_export)
    push = actions.add_parser(
        "push", formatter_class=formatter, help="create or update everything in Grafana",
        description="Create or update the jinmei folder, the InfluxDB data source and every "
                    "dashboard\nthrough the Grafana HTTP API; prints what changed. A second "
                    "push changes nothing.")
    config_option(push)
    prometheus_option(push)
    push.add_argument("--url", required=True, help="Grafana, e.g. http://127.0.0.1:3000")
    push.add_argument("--token", help=f"service-account token (default: ${GRAFANA_TOKEN_ENV})")
    push.set_defaults(func=cmd_push)


def prometheus_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prometheus-url", metavar="URL", default="http://127.0.0.1:9090",
                        help="the Prometheus or VictoriaMetrics that scrapes jinmei's /metrics, "
                             "for the dashboard of jinmei itself (default http://127.0.0.1:9090)")


def cmd_export(args: argparse.Namespace) -> int:
    from dashboards.provisioning import export, sqlite_note

    deployment = load_deployment(args.config)
    written = export(deployment, args.dir, args.prometheus_url, args.provisioning_path)
    print("\n".join(f"wrote {path}" for path in written))
    if note := sqlite_note(deployment):
        print(note, file=sys.stderr)
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from grafana_client import GrafanaApi
    from grafana_client.client import GrafanaException

    from dashboards.provisioning import push, sqlite_note

    deployment = load_deployment(args.config)
    token = args.token or os.environ.get(GRAFANA_TOKEN_ENV) or None
    api = GrafanaApi.from_url(args.url, credential=token)
    parts = urlsplit(args.url)  # printed without any credentials written into the URL
    where = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    try:
        changes = push(api, deployment, deployment.store.influx_token, args.prometheus_url)
    except OSError as exc:  # the HTTP client's connection errors are OSErrors
        raise JinmeiError(f"cannot reach Grafana at {where}: {exc.__class__.__name__}") from None
    except GrafanaException as exc:
        raise JinmeiError(f"Grafana at {where} refused the push: {exc}") from None
    print("\n".join(str(c) for c in changes))
    changed = sum(c.action != "unchanged" for c in changes)
    print(f"{changed} of {len(changes)} objects changed")
    if note := sqlite_note(deployment):
        print(note, file=sys.stderr)
    return 0
