"""The use cases of the bot, written against `prbot.ports` only, one module each:

- `bump`: a registry push → the image-bump PR into the first environment;
- `plan_comment`: a pull request → the sticky plan comment and the `prbot/plan` check run;
- `slash_commands`: a `/prbot …` comment → its commands;
- `deploy`: a merged PR → the sync, the wait for health, GitHub Deployments, the result comment;
- `promote`: a healthy environment → the promotion PR into the next one;
- `rollback`: `/prbot rollback` → a PR restoring the previous successful deployment's images;
- `preview`: `/prbot preview` → the PR rendered into its own namespace;
- `heads`: which head of a PR a comment's author saw (binds `/prbot plan` and `preview` to it);
- `warm_base`: a push to the default branch → its targets rendered ahead of the PR plans;
- `locks`, `sticky`, `context`: what they share.

The worker runs them (`prbot.service.handlers`) with the GitHub adapter and the repository mirror;
`prbot demo` narrates them with in-process stand-ins (`prbot.standins`).  Every flow can be re-run
after a failure at any point and ends in the same state: it finds what it made before (the PR of a
branch, the comment with the marker, the check run of a head) before making anything.
"""

from prbot.flows.bump import BumpOutcome, Push, best_push, bump_pending, bump_pull_request, record_push, take_pushes
from prbot.flows.context import Repo, config_at, default_config
from prbot.flows.deploy import DeployState, deploy_merged, load_state, poll_deploy, start_deploy
from prbot.flows.locks import Lock, clear_lock, get_lock, locks, set_lock
from prbot.flows.plan_comment import CHECK_NAME, PLAN_ACTIONS, PlanOutcome, check_annotations, plan_pull_request
from prbot.flows.preview import preview_down, preview_up
from prbot.flows.promote import Provenance, open_promotion, promote_healthy
from prbot.flows.rollback import open_rollback
from prbot.flows.slash_commands import CommandOutcome, run_commands
from prbot.flows.sticky import sticky_comment

__all__ = ["CHECK_NAME", "PLAN_ACTIONS", "BumpOutcome", "CommandOutcome", "DeployState", "Lock", "PlanOutcome",
           "Provenance", "Push", "Repo", "config_at", "deploy_merged", "load_state", "open_promotion", "open_rollback",
           "poll_deploy", "preview_down", "preview_up", "promote_healthy", "start_deploy",
           "best_push", "bump_pending", "bump_pull_request", "check_annotations", "clear_lock", "default_config",
           "get_lock", "locks", "plan_pull_request", "record_push", "run_commands", "set_lock", "sticky_comment",
           "take_pushes"]
