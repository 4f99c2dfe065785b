"""A stateful fake GitHub on 127.0.0.1 that PyGithub and git talk to over HTTP.

    fake = FakeGitHub(tmp_path).start()          # or: with FakeGitHub(tmp_path) as fake: ...
    inst = fake.add_installation("acme")          # the App installed on every repository of acme
    fake.create_repo("acme/gitops", source=some_directory)      # or files={"path": "text"}
    fake.set_permission("acme/gitops", "alice", "write")
    app = GitHubApp(fake.app_id, fake.private_key, api_url=fake.api_url)

It keeps installations and their tokens, repositories (real bare git repositories served over
smart HTTP at each repository's `clone_url`, basic auth `x-access-token:<installation token>`),
pull requests (with `refs/pull/N/head`), plain issues (one number sequence with PRs), labels, issue
comments and reactions, check runs and their annotations, deployments and statuses, collaborator
permissions, team memberships and GraphQL auto-merge.  Tests act as people (`commit`, `open_pull`,
`open_issue`, `comment`, `merge` …), inject failures (`fail`, `secondary_rate_limit`,
`drop_connections`, `unreachable`, `pace_writes`, `expire_tokens`), count API writes (`requests`,
`api_writes`) and drain the webhooks GitHub would have sent (`drain_events()`,
each a `Webhook` with `.event`, `.payload`, `.body` and signed `.headers(secret)`).
"""

from .model import CheckRun, Comment, Deployment, Issue, Logged, Pull, Repo
from .server import API, GRAPHQL, SECONDARY_MESSAGE, ApiError, FakeGitHub, app_key_pair
from .webhooks import Webhook

__all__ = ["API", "GRAPHQL", "SECONDARY_MESSAGE", "ApiError", "CheckRun", "Comment", "Deployment", "FakeGitHub",
           "Issue", "Logged", "Pull", "Repo", "Webhook", "app_key_pair"]
