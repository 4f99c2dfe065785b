"""The `prbot` command: argument handling and exit codes only (SPEC §9)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from prbot import __version__
from prbot.errors import PrbotError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:   # one line on stderr, exit 2 (argparse's usage spam trimmed)
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="prbot", description="Pull-request review as the deployment gate for GitOps repos.")
    p.add_argument("--version", action="version", version=f"prbot {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    b = sub.add_parser("bump", help="move an image to a new version in one environment (edits the working tree)")
    b.add_argument("image", metavar="IMAGE", help="image reference, e.g. ghcr.io/acme/app:1.2.3")
    b.add_argument("--env", required=True, help="environment to bump")
    b.add_argument("--repo", default=".", type=Path, help="GitOps repository (default: .)")
    b.add_argument("--app", help="only this app")

    pl = sub.add_parser("plan", help="render affected targets at base and head and report the difference")
    pl.add_argument("--base", required=True, help="base revision")
    pl.add_argument("--head", help="head revision (default: the working tree, uncommitted changes included)")
    pl.add_argument("--repo", default=".", type=Path)
    pl.add_argument("--config", type=Path, help="configuration file (default: REPO/.prbot.yml)")
    pl.add_argument("--env", action="append", help="only this environment (repeatable)")
    pl.add_argument("--format", choices=("markdown", "json"), default="markdown")
    pl.add_argument("--no-cluster", action="store_true",
                    help="skip the server-side dry-run even when PRBOT_CLUSTERS is set")

    pr = sub.add_parser("promote", help="carry one environment's image versions into another (edits the working tree)")
    pr.add_argument("from_env", metavar="FROM_ENV")
    pr.add_argument("to_env", metavar="TO_ENV")
    pr.add_argument("--repo", default=".", type=Path)
    pr.add_argument("--app", help="only this app")

    cc = sub.add_parser("check-config", help="validate .prbot.yml")
    cc.add_argument("--repo", default=".", type=Path)

    sub.add_parser("demo", help="run the whole flow on a generated sample repository")
    return p


def _load(repo: Path, config_file: Path | None = None):  # type: ignore[no-untyped-def]
    from prbot.config import CONFIG_FILE, load_config_file

    path = config_file or repo / CONFIG_FILE
    if not path.is_file():
        raise PrbotError(f"{path}: no such file (is --repo a GitOps repository with a {CONFIG_FILE}?)")
    return load_config_file(path)


def _finish_edits(result, nothing: str) -> int:  # type: ignore[no-untyped-def]
    """Print what an edit command changed; exit 2 on per-target errors, 1 when `nothing` happened."""
    for e in result.edits:
        print(f"{e.target}: {e.path} {e.old} → {e.new}")
    for key in result.current:
        print(f"{key}: already current")
    for err in result.errors:
        print(f"prbot: error: {err}", file=sys.stderr)
    if result.errors:
        return EXIT_BAD_INPUT
    if nothing:
        print(f"prbot: {nothing}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_bump(args: argparse.Namespace) -> int:
    from prbot.edit import bump
    from prbot.images import parse_image

    result = bump(args.repo, _load(args.repo), args.image, args.env, args.app)
    nothing = "" if result.matched else f"no target of {args.env} uses {parse_image(args.image).name}"
    return _finish_edits(result, nothing)


def cmd_promote(args: argparse.Namespace) -> int:
    from prbot.edit import promote

    result = promote(args.repo, _load(args.repo), args.from_env, args.to_env, args.app)
    nothing = "" if result.edits else f"nothing to promote from {args.from_env} to {args.to_env}"
    return _finish_edits(result, nothing)


def cmd_plan(args: argparse.Namespace) -> int:
    from prbot.plan import make_plan
    from prbot.report import render_json, render_markdown

    config = _load(args.repo, args.config)
    runner = None
    if not args.no_cluster:
        from prbot.kube import clusters_from_env, make_dry_runner

        clusters = clusters_from_env()
        runner = make_dry_runner(config, clusters) if clusters else None
    try:
        plan = make_plan(args.repo, config, args.base, args.head, envs=args.env, dry_runner=runner)
    finally:
        if runner is not None:
            runner.close()
    if args.format == "json":
        print(render_json(plan))
    else:
        print("\n\n".join(render_markdown(plan)))
    return EXIT_FAILED if plan.failed else EXIT_OK


def cmd_check_config(args: argparse.Namespace) -> int:
    from prbot.config import CONFIG_FILE, check_config

    errors = check_config(args.repo)
    for err in errors:
        print(err, file=sys.stderr)
    if errors:
        return EXIT_BAD_INPUT
    print(f"{CONFIG_FILE}: ok")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from prbot.demo import run_demo

    return run_demo(sys.stdout)


COMMANDS = {"bump": cmd_bump, "plan": cmd_plan, "promote": cmd_promote,
            "check-config": cmd_check_config, "demo": cmd_demo}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="prbot: %(message)s")
    try:
        return COMMANDS[args.command](args)
    except PrbotError as exc:
        print(f"prbot: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:                   # `prbot plan | head`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
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
