"""The PR comment and the JSON output, from hand-built plans (no git, no renderer)."""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prbot.diff import ObjectChange
from prbot.plan import DryRun, DryRunError, Plan, TargetPlan
from prbot.report import (
    MARKER,
    blind_spots,
    is_plan_comment,
    part_of,
    render_comment,
    render_json,
    render_markdown,
)
from prbot.report.markdown import _sections, html_text, md
from prbot.validate import ValidationIssue

SNAPSHOTS = Path(__file__).parent / "snapshots"
BASE = "3f9c2a1d7e5b4c6a8f0e1d2c3b4a5968776655aa"
HEAD = "9b8e7d6c5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c"


def assert_snapshot(name: str, text: str) -> None:
    """Compare with tests/snapshots/NAME; PRBOT_UPDATE_SNAPSHOTS=1 (re)writes it instead."""
    path = SNAPSHOTS / name
    if os.environ.get("PRBOT_UPDATE_SNAPSHOTS"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"{path} is missing: run PRBOT_UPDATE_SNAPSHOTS=1 pytest {__file__}"
    assert text == path.read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------------
# Reading a comment back the way GitHub would (enough CommonMark for fences and <details>)
# --------------------------------------------------------------------------------------------

OPEN_FENCE = re.compile(r"^ {0,3}(`{3,})([^`]*)$")
CLOSE_FENCE = re.compile(r"^ {0,3}(`{3,})\s*$")


def blocks_of(part: str) -> list[tuple[str, list[str]]]:
    """Every fenced code block of `part` as (info string, lines); asserts fences and <details>
    are balanced, never closed before they open, and nothing is left open at the end."""
    blocks: list[tuple[str, list[str]]] = []
    fence: str | None = None
    depth = 0
    for line in part.split("\n"):
        if fence is not None:
            m = CLOSE_FENCE.match(line)
            if m and len(m.group(1)) >= len(fence):
                fence = None
            else:
                blocks[-1][1].append(line)
            continue
        m = OPEN_FENCE.match(line)
        if m:
            fence = m.group(1)
            blocks.append((m.group(2).strip(), []))
        elif line.startswith("<details"):
            depth += 1
        elif line.startswith("</details>"):
            depth -= 1
            assert depth >= 0, "</details> without <details>"
    assert fence is None, "code fence left open"
    assert depth == 0, "<details> left open"
    return blocks


def diff_lines(parts: list[str]) -> list[str]:
    return [line for part in parts for info, lines in blocks_of(part) if info == "diff" for line in lines]


def outside_code(part: str) -> str:
    """`part` without the content of its code blocks."""
    kept, fence = [], None
    for line in part.split("\n"):
        if fence is not None:
            m = CLOSE_FENCE.match(line)
            if m and len(m.group(1)) >= len(fence):
                fence = None
            continue
        m = OPEN_FENCE.match(line)
        if m:
            fence = m.group(1)
        kept.append(line)
    return "\n".join(kept)


def without_code_spans(text: str) -> str:
    """`text` minus its inline code spans (a backtick run up to the next run of the same length)."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\":
            out.append(text[i:i + 2])
            i += 2
        elif text[i] == "`":
            j = i
            while j < len(text) and text[j] == "`":
                j += 1
            end = re.compile(rf"(?<!`){text[i:j]}(?!`)").search(text, j)
            out.append("" if end else text[i:j])
            i = end.end() if end else j
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def table_rows(part: str) -> list[str]:
    return [line for line in outside_code(part).split("\n") if line.startswith("|")]


def cells(row: str) -> list[str]:
    """Cells of a GFM table row: split on `|` not escaped by a backslash."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]]


# --------------------------------------------------------------------------------------------
# A realistic plan
# --------------------------------------------------------------------------------------------

SHOP_DEPLOYMENT = """\
--- a/apps/Deployment/shop-dev/shop
+++ b/apps/Deployment/shop-dev/shop
@@ -21,11 +21,11 @@
       containers:
       - envFrom:
         - configMapRef:
-            name: shop-config-h4k9m2t6cf
+            name: shop-config-7g2hc5d8bm
         - secretRef:
             name: shop-db
-        image: registry.cn-hangzhou.aliyuncs.com/demo/shop:1.1.0
+        image: registry.cn-hangzhou.aliyuncs.com/demo/shop:1.2.0
         name: shop
         ports:
         - containerPort: 8080
"""

SHOP_CONFIG = """\
--- a/ConfigMap/shop-dev/shop-config-h4k9m2t6cf
+++ b/ConfigMap/shop-dev/shop-config-7g2hc5d8bm
@@ -1,8 +1,8 @@
 apiVersion: v1
 data:
-  LOG_LEVEL: info
+  LOG_LEVEL: debug
   PORT: '8080'
 kind: ConfigMap
 metadata:
-  name: shop-config-h4k9m2t6cf
+  name: shop-config-7g2hc5d8bm
   namespace: shop-dev
"""

SHOP_SECRET = """\
--- a/Secret/shop-dev/shop-db
+++ b/Secret/shop-dev/shop-db
@@ -1,6 +1,6 @@
 apiVersion: v1
 data:
-  DATABASE_PASSWORD: '*** (before)'
+  DATABASE_PASSWORD: '*** (after)'
   DATABASE_USER: '***'
 kind: Secret
 metadata:
"""

BILLING_DEPLOYMENT = """\
--- a/apps/Deployment/billing-staging/billing-staging
+++ b/apps/Deployment/billing-staging/billing-staging
@@ -9,7 +9,7 @@
   name: billing-staging
   namespace: billing-staging
 spec:
-  replicas: 2
+  replicas: two
   selector:
     matchLabels:
       app.kubernetes.io/name: billing
"""

STAGING_SHOP = """\
--- a/apps/Deployment/shop-staging/shop
+++ b/apps/Deployment/shop-staging/shop
@@ -30,7 +30,7 @@
         - secretRef:
             name: shop-db
-        image: registry.cn-hangzhou.aliyuncs.com/demo/shop:1.0.0
+        image: registry.cn-hangzhou.aliyuncs.com/demo/shop:1.1.0
         name: shop
         ports:
         - containerPort: 8080
"""

STAGING_SHOP_LIVE = """\
--- live/apps/Deployment/shop-staging/shop
+++ dry-run/apps/Deployment/shop-staging/shop
@@ -14,7 +14,7 @@
   namespace: shop-staging
 spec:
-  replicas: 4
+  replicas: 2
   selector:
     matchLabels:
       app: shop
@@ -30,7 +30,7 @@
         - secretRef:
             name: shop-db
-        image: registry.cn-hangzhou.aliyuncs.com/demo/shop:1.0.0
+        image: registry.cn-hangzhou.aliyuncs.com/demo/shop:1.1.0
         name: shop
"""

WORKER_ERROR = """\
apps/worker/envs/prod/worker.yaml: while parsing a block mapping
  in "<unicode string>", line 3, column 1
expected <block end>, but found '<block sequence start>'
  in "<unicode string>", line 14, column 3"""


def realistic_plan() -> Plan:
    return Plan(base=BASE, head=HEAD, targets=[
        TargetPlan(
            app="shop", env="dev", path="apps/shop/envs/dev", renderer="kustomize", status="changed",
            changes=[
                ObjectChange("", "ConfigMap", "shop-dev", "shop-config-7g2hc5d8bm", "changed", SHOP_CONFIG,
                             renamed_from="shop-config-h4k9m2t6cf"),
                ObjectChange("", "Secret", "shop-dev", "shop-db", "changed", SHOP_SECRET),
                ObjectChange("apps", "Deployment", "shop-dev", "shop", "changed", SHOP_DEPLOYMENT),
            ],
            validation=[ValidationIssue("ServiceMonitor", "shop", "skipped", "",
                                        "no schema known for monitoring.coreos.com/v1 ServiceMonitor")]),
        TargetPlan(app="worker", env="dev", path="apps/worker/envs/dev", renderer="plain",
                   status="unchanged"),
        TargetPlan(
            app="billing", env="staging", path="billing/staging", renderer="helm", status="changed",
            changes=[ObjectChange("apps", "Deployment", "billing-staging", "billing-staging", "changed",
                                  BILLING_DEPLOYMENT)],
            validation=[ValidationIssue("Deployment", "billing-staging", "error", "spec.replicas",
                                        "spec.replicas: 'two' is not of type 'integer'")],
            dry_run=DryRun(status="failed", errors=[DryRunError(
                "apps", "Deployment", "billing-staging", "billing-staging",
                'Deployment.apps "billing-staging" is invalid: spec.replicas: Invalid value: "string": '
                'spec.replicas in body must be of type integer: "string"')])),
        TargetPlan(
            app="shop", env="staging", path="apps/shop/envs/staging", renderer="kustomize", status="changed",
            changes=[ObjectChange("apps", "Deployment", "shop-staging", "shop", "changed", STAGING_SHOP)],
            dry_run=DryRun(status="ok", changes=[
                ObjectChange("apps", "Deployment", "shop-staging", "shop", "changed", STAGING_SHOP_LIVE)])),
        TargetPlan(app="shop", env="prod", path="apps/shop/envs/prod", renderer="kustomize",
                   status="unchanged", dry_run=DryRun(status="ok")),
        TargetPlan(app="worker", env="prod", path="apps/worker/envs/prod", renderer="plain", status="error",
                   error=WORKER_ERROR),
    ])


def test_realistic_plan_comment_matches_snapshot() -> None:
    [body] = render_markdown(realistic_plan())
    assert_snapshot("plan_comment.md", body)


def test_realistic_plan_comment_reads_right() -> None:
    [body] = render_markdown(realistic_plan())
    lines = body.split("\n")
    assert lines[0] == MARKER and is_plan_comment(body) and part_of(body) is None
    # the five-second verdict, in promotion order
    assert ("**3 environments change** · dev ✅ · staging ❌ 1 target failed · prod ❌ 1 target failed"
            in lines)
    # one row per target that needs a look, in plan order; quiet ones named on one line
    rows = [cells(r) for r in table_rows(body)]
    assert rows[0] == ["Environment", "App", "Changes", "Validation", "Dry-run"]
    assert rows[2:] == [
        ["dev", "shop", "`+0 ~3 -0`", "⚠️ 1 skipped", "—"],
        ["staging", "billing", "`+0 ~1 -0`", "❌ 1 error", "❌ 1 refused"],
        ["staging", "shop", "`+0 ~1 -0`", "✅ passed", "✅ 1 change"],
        ["prod", "worker", "❌ render failed", "—", "—"],
    ]
    assert any(line.startswith("**Unchanged**") and "dev/worker" in line and "prod/shop" in line
               for line in lines)
    # failed targets are open, the others folded
    assert sum(line.startswith("<details open>") for line in lines) == 2
    assert sum(line == "<details>" for line in lines) == 2
    # every diff line is shown verbatim, Secret values masked as the diff engine left them
    shown = diff_lines([body])
    expected = [SHOP_CONFIG, SHOP_SECRET, SHOP_DEPLOYMENT, BILLING_DEPLOYMENT,
                STAGING_SHOP, STAGING_SHOP_LIVE]
    assert shown == [line for diff in expected for line in diff.rstrip("\n").split("\n")]
    assert "+  DATABASE_PASSWORD: '*** (after)'" in body
    assert "renamed from `shop-config-h4k9m2t6cf`" in body
    # the renderer's message in a code block, its `<` untouched there
    assert [lines for info, lines in blocks_of(body) if info == "text"] == [WORKER_ERROR.split("\n")]
    assert "`/prbot plan`" in body and "`/prbot promote`" in body and "`/prbot help`" in body
    assert "Planned `3f9c2a1`…`9b8e7d6`" in body


def test_every_target_state_reads_right() -> None:
    issues = [ValidationIssue("Deployment", "web", "warning", "", "deprecated field")]
    issues += [ValidationIssue("Pod", f"p{i}", "error", "spec", f"spec: bad {i}") for i in range(60)]
    issues += [ValidationIssue("Certificate", "a", "skipped", "", "no schema"),
               ValidationIssue("Certificate", "b", "skipped", "", "no schema")]
    added = [ObjectChange("", "Service", "ns", "new", "added", "--- /dev/null\n+++ b\n+kind: Service\n"),
             ObjectChange("rbac.authorization.k8s.io", "ClusterRole", None, "view", "added", "")]
    plan = Plan(base=BASE, head=HEAD, targets=[
        TargetPlan(app="cache", env="dev", path="apps/cache/envs/dev", renderer="plain", status="added",
                   changes=added, validation=issues, dry_run=DryRun(status="failed")),
        TargetPlan(app="old", env="dev", path="apps/old/envs/dev", renderer="plain", status="removed",
                   changes=[ObjectChange("", "Service", "ns", "gone", "removed", "-kind: Service\n")]),
        TargetPlan(app="shop", env="dev", path="apps/shop/envs/dev", renderer="kustomize", status="changed",
                   error="the base revision did not render (boom); every object is shown as added",
                   changes=[ObjectChange("", "ConfigMap", "ns", "c", "added", "+a: 1\n")]),
    ])
    [body] = render_markdown(plan)
    assert [cells(r) for r in table_rows(body)][2:] == [
        ["dev", "cache", "`+2 ~0 -0` new target", "❌ 60 errors · ⚠️ 1 warning · ⚠️ 2 skipped", "❌ failed"],
        ["dev", "old", "`+0 ~0 -1` target removed", "—", "—"],
        ["dev", "shop", "`+1 ~0 -0`", "✅ passed", "—"],
    ]
    assert "· plain · new target, +2</summary>" in body
    assert "· plain · target removed, -1</summary>" in body
    lines = body.split("\n")
    validation = [line for line in lines if line.startswith("- ")]
    assert validation[0] == "- ❌ `Pod/p0` at `spec`: bad 0"          # errors first, the path not repeated
    assert validation[49] == "- ❌ `Pod/p49` at `spec`: bad 49"
    assert validation[50:] == ["- … and 11 more",
                               "- ⚠️ Not validated, no schema known for: `Certificate` ×2"]
    assert "➕ **added** `rbac.authorization.k8s.io/ClusterRole view`" in lines   # no diff: no empty block
    assert "➖ **removed** `Service ns/gone`" in lines
    assert "**Server-side dry-run:** ❌ refused" in lines
    assert "⚠️ **Note:**" in lines
    assert [b for info, b in blocks_of(body) if info == "text"] == [[plan.targets[2].error]]


def test_empty_plan_matches_snapshot() -> None:
    [body] = render_markdown(Plan(base=BASE, head=HEAD))
    assert "No targets affected between `3f9c2a1` and `9b8e7d6`." in body
    assert_snapshot("empty_plan.md", body)


def test_no_rendered_change_lists_targets_compactly() -> None:
    plan = Plan(base=BASE, head=HEAD + "-dirty", targets=[
        TargetPlan(app=app, env=env, path=f"apps/{app}/envs/{env}", renderer="kustomize", status="unchanged")
        for env in ("dev", "staging", "prod") for app in ("shop", "worker")])
    [body] = render_markdown(plan, title="Plan for #42")
    assert body.startswith(f"{MARKER}\n## Plan for #\u200b42\n")       # a reference made inert
    assert "**No rendered changes** · dev ✅ · staging ✅ · prod ✅" in body
    assert table_rows(body) == [] and "<details" not in body
    assert ("**Unchanged** (6 targets render identically at base and head): dev/shop, dev/worker, "
            "staging/shop, staging/worker, prod/shop, prod/worker") in body
    assert "`9b8e7d6-dirty`" in body


# --------------------------------------------------------------------------------------------
# Splitting
# --------------------------------------------------------------------------------------------

def long_diff(n: int, lines: int) -> str:
    body = [f"@@ -1,{lines} +1,{lines} @@"]
    for i in range(lines):
        sign = " -+"[i % 3]
        body.append(f"{sign}  key-{n}-{i}: value {i} ünïcødé 日本語テキスト 🚀 " + "x" * (i % 50))
    return f"--- a/ConfigMap/big/cm-{n}\n+++ b/ConfigMap/big/cm-{n}\n" + "\n".join(body) + "\n"


def big_plan() -> Plan:
    many = [ObjectChange("", "ConfigMap", "big", f"cm-{n}", "changed", long_diff(n, 40)) for n in range(300)]
    huge = long_diff(9999, 3000)
    assert len(huge) > 200_000
    return Plan(base=BASE, head=HEAD, targets=[
        TargetPlan(app="many", env="dev", path="apps/many/envs/dev", renderer="kustomize", status="changed",
                   changes=many),
        TargetPlan(app="huge", env="staging", path="apps/huge/envs/staging", renderer="plain", status="error",
                   error="boom\n" * 3000, validation=[]),
        TargetPlan(app="huge", env="prod", path="apps/huge/envs/prod", renderer="plain", status="changed",
                   changes=[ObjectChange("", "ConfigMap", "big", "huge", "changed", huge)],
                   dry_run=DryRun(status="ok", changes=[
                       ObjectChange("", "ConfigMap", "big", "huge", "changed", long_diff(7, 300))])),
    ])


def all_diffs(plan: Plan) -> list[str]:
    out = []
    for t in plan.targets:
        for c in t.changes + (t.dry_run.changes if t.dry_run else []):
            out += c.diff.rstrip("\n").split("\n")
    return out


@pytest.mark.parametrize("limit", [65_000, 20_000, 4_000])
def test_big_plan_splits_into_balanced_parts(limit: int) -> None:
    plan = big_plan()
    parts = render_markdown(plan, limit=limit, max_parts=None)
    total = len(parts)
    assert total > 1
    for i, part in enumerate(parts, 1):
        assert len(part) <= limit
        lines = part.split("\n")
        assert lines[0] == f"{MARKER}<!-- prbot:plan part={i}/{total} -->"
        assert part_of(part) == (i, total)
        blocks_of(part)                                      # balanced, or it raises
        if i < total:
            assert f"continued in the next comment (part {i + 1} of {total})" in part
    # nothing lost, nothing reordered: the diff lines of all parts are the plan's diff lines
    assert diff_lines(parts) == all_diffs(plan)
    # the renderer's message too
    text = [line for part in parts for info, lines in blocks_of(part) if info == "text" for line in lines]
    assert text == ["boom"] * 3000
    # the summary is in the first part only, the footer in the last only
    assert "| Environment |" in parts[0] and all("| Environment |" not in p for p in parts[1:])
    assert "`/prbot help`" in parts[-1] and all("`/prbot help`" not in p for p in parts[:-1])


def small_target(env: str, app: str) -> TargetPlan:
    return TargetPlan(app=app, env=env, path=f"apps/{app}/envs/{env}", renderer="plain", status="changed",
                      changes=[ObjectChange("", "ConfigMap", env, app, "changed", f"-v: 1\n+v: {app}-{env}\n")])


def test_a_noisy_target_cannot_push_the_others_out_of_the_comment() -> None:
    """Attack: a 20,000-line diff listed first; the comment shows the others in full and names the
    noisy one as hidden (the check run fails on it)."""
    noisy = TargetPlan(app="aaa-noisy", env="dev", path="apps/aaa-noisy/envs/dev", renderer="plain",
                       status="changed", changes=[ObjectChange("", "ConfigMap", "dev", "noise", "changed",
                                                               long_diff(0, 20_000))])
    others = [small_target("dev", "shop"), small_target("staging", "shop"), small_target("prod", "shop")]
    plan = Plan(base=BASE, head=HEAD, targets=[noisy, *others])
    comment = render_comment(plan, max_parts=2)
    assert len(comment.parts) <= 2
    assert comment.hidden == [noisy]
    shown = diff_lines(comment.parts)
    assert [line for line in shown if line.startswith("+v: ")] == ["+v: shop-dev", "+v: shop-staging", "+v: shop-prod"]
    assert "1 target is summarised without its diffs" in comment.parts[0]
    assert render_comment(plan, max_parts=None).hidden == []        # room for everything: nothing hidden


def test_when_not_even_sections_fit_every_target_is_hidden() -> None:
    plan = Plan(base=BASE, head=HEAD, targets=[small_target("dev", f"app{i:04d}" + "x" * 150) for i in range(900)])
    comment = render_comment(plan, limit=4_000, max_parts=2)
    assert len(comment.parts) == 2 and len(comment.hidden) == 900


def test_a_target_prbot_could_not_render_reads_as_a_failure_with_the_way_out() -> None:
    reason = ("not rendered: it reads https://github.com/acme/infra//base?ref=v1, a remote input that "
              "render.remote in .prbot.yml does not allow")
    plan = Plan(base=BASE, head=HEAD, targets=[
        TargetPlan(app="web", env="dev", path="apps/web/envs/dev", renderer="kustomize", status="skipped",
                   error=reason),
        small_target("staging", "web")])
    assert blind_spots(plan) == [plan.targets[0]]
    [body] = render_markdown(plan)
    assert "**1 environment changes** · dev ❌ 1 target not rendered · staging ✅" in body
    assert cells(table_rows(body)[2])[2] == "❌ not rendered (remote input)"
    assert "<details open>\n<summary>❌ <b>dev</b> · web · <code>apps/web/envs/dev</code> · kustomize · " \
           "not rendered</summary>" in body
    assert "`render.remote` of `.prbot.yml` on the default branch, or vendor the input" in body
    assert [lines for info, lines in blocks_of(body) if info == "text"] == [[reason]]


def test_cut_inside_a_diff_reopens_details_and_fence() -> None:
    plan = big_plan()
    plan.targets = plan.targets[2:]                      # the 200 KB diff alone
    parts = render_markdown(plan)
    assert len(parts) == 4
    for index, part in enumerate(parts, 1):
        lines = part.split("\n")
        if index > 1:                                    # reopened: same summary, same object, same fence
            assert lines[0] == f"{MARKER}<!-- prbot:plan part={index}/4 -->"
            assert lines[1:8] == [
                "", f"<sub>prbot plan · part {index} of 4</sub>", "", "<details>",
                "<summary>✅ <b>prod</b> · huge · <code>apps/huge/envs/prod</code> · plain · +0 ~1 -0"
                " (continued)</summary>",
                "", "✏️ **changed** `ConfigMap big/huge` (continued)"]
            assert lines[9] == "```diff" and lines[10].startswith(("-", "+", " "))
        if index < 4:                                    # closed at the cut, then the pointer to the next
            assert lines[-6:] == ["```", "", "</details>", "",
                                  f"<sub>⤵ continued in the next comment (part {index + 1} of 4)</sub>", ""]


def test_a_line_longer_than_a_part_is_cut_into_pieces() -> None:
    line = "+  blob: " + "0123456789abcdef" * 10_000
    plan = Plan(base=BASE, head=HEAD, targets=[TargetPlan(
        app="a", env="dev", path="a", renderer="plain", status="changed",
        changes=[ObjectChange("", "ConfigMap", "ns", "blob", "changed",
                              f"--- a\n+++ b\n@@ -1 +1 @@\n{line}\n")])])
    parts = render_markdown(plan, limit=20_000)
    assert len(parts) >= 8 and all(len(p) <= 20_000 for p in parts)
    pieces = diff_lines(parts)
    assert pieces[:3] == ["--- a", "+++ b", "@@ -1 +1 @@"] and "".join(pieces[3:]) == line


def test_one_part_has_no_part_marker() -> None:
    [body] = render_markdown(realistic_plan())
    assert "part=" not in body and "continued" not in body


def test_limit_too_small_is_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        render_markdown(realistic_plan(), limit=500)


# --------------------------------------------------------------------------------------------
# Escaping
# --------------------------------------------------------------------------------------------

def test_diff_containing_a_code_fence_is_fenced_longer() -> None:
    diff = ("--- a/ConfigMap/docs/readme\n+++ b/ConfigMap/docs/readme\n@@ -1,5 +1,5 @@\n"
            " data:\n   README.md: |\n"
            "```\n"
            " ```bash\n"
            "-    make old\n"
            "+    make new\n"
            "   ```\n")
    plan = Plan(base=BASE, head=HEAD, targets=[TargetPlan(
        app="docs", env="dev", path="apps/docs/envs/dev", renderer="kustomize", status="changed",
        changes=[ObjectChange("", "ConfigMap", "docs", "readme", "changed", diff)])])
    [body] = render_markdown(plan)
    assert "````diff" in body
    assert diff_lines([body]) == diff.rstrip("\n").split("\n")
    assert "</details>" in outside_code(body)


def test_user_strings_cannot_break_the_table_or_inject_html() -> None:
    evil_app = "a|b<script>alert(1)</script>"
    evil_env = "dev|`x` *y* [z](http://e)"
    plan = Plan(base=BASE, head=HEAD, targets=[TargetPlan(
        app=evil_app, env=evil_env, path="apps/<img src=x onerror=alert(1)>|/envs\n```",
        renderer="kustomize", status="changed",
        changes=[ObjectChange("", "ConfigMap", "ns|<b>", "n`a`me", "added", "--- /dev/null\n+++ b\n+x: 1\n")],
        validation=[ValidationIssue("Deployment", "x|<i>", "error", "spec.a|b",
                                    "bad value '<script>' | \n```\nnot code")])])
    [body] = render_markdown(plan)
    # outside code (HTML lines have no code spans), the only tags are prbot's own
    markup = "\n".join(line if line.startswith("<") else without_code_spans(line)
                       for line in outside_code(body).split("\n"))
    assert set(re.findall(r"<(/?[a-z]+)", markup)) == {"details", "/details", "summary", "/summary",
                                                       "b", "/b", "code", "/code", "sub", "/sub"}
    assert "&lt;script&gt;" in body and "&lt;img src=x onerror=alert(1)&gt;" in body
    rows = [cells(r) for r in table_rows(body)]
    assert all(len(r) == 5 for r in rows)
    assert rows[2][:2] == ["dev\\|\\`x\\` \\*y\\* \\[z\\](http:\u200b//e)",      # the link made inert
                           r"a\|b&lt;script&gt;alert(1)&lt;/script&gt;"]
    blocks_of(body)                                          # the ``` in path and message opened nothing
    assert [info for info, _ in blocks_of(body)] == ["diff"]


# What GitHub makes live in comment text (outside code): pings, cross-references, commit links,
# autolinks.  Python's \b treats the zero-width space as a boundary, as a stricter GitHub would.
LIVE = {
    "mention": re.compile(r"(?<![\w`])@[A-Za-z0-9][\w-]*"),
    "reference": re.compile(r"#[0-9]+"),
    "GH reference": re.compile(r"(?i)\bGH-[0-9]+"),
    "custom autolink": re.compile(r"\b[A-Z]{2,}-[0-9]+"),
    "commit": re.compile(r"(?i)\b[0-9a-f]{7,40}\b"),
    "url": re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://"),
    "www": re.compile(r"(?i)\bwww\."),
}
BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
PR_TEXT = ("see GH-123 and ACME-42, fixed in 0123456789abcdef0123456789abcdef01234567 (0123abc), "
           "https://evil.example/x www.evil.example #12 owner/repo#7 cc @org/team @alice")


def live_links(body: str) -> list[tuple[str, str]]:
    """(kind, text) of everything GitHub would make live in `body`, code blocks and spans aside."""
    text = html.unescape("\n".join(without_code_spans(line) for line in outside_code(body).split("\n")))
    text = text.replace("\\", "")                          # markdown escapes do not stop a link
    return [(kind, m.group()) for kind, rx in LIVE.items() for m in rx.finditer(text)]


def test_pr_text_makes_no_live_link_anywhere_in_the_comment() -> None:
    """Attack: PR text (a directory name, a validation or dry-run message, a render error's note)
    written to ping, cross-reference, link a commit or an outside site from prbot's comment."""
    plan = Plan(base=BASE, head=HEAD, targets=[TargetPlan(
        app=PR_TEXT, env="dev", path=f"apps/{PR_TEXT}", renderer="kustomize", status="changed",
        changes=[ObjectChange("", "ConfigMap", "ns", PR_TEXT, "added", f"+a: {PR_TEXT}\n")],
        validation=[ValidationIssue("ConfigMap", PR_TEXT, "error", "", PR_TEXT)],
        dry_run=DryRun(status="failed", errors=[DryRunError("", "ConfigMap", "ns", "c", PR_TEXT)],
                       skipped=[DryRunError("", "Secret", "ns", "s", PR_TEXT)]))])
    [body] = render_markdown(plan)
    assert body.count("GH-​123") >= 4 and "0123ab​c" in body   # still readable, just inert
    assert live_links(body) == []
    # the check run's title is the verdict line; its summary the comment itself
    assert live_links(md(PR_TEXT)) == [] and live_links(html_text(PR_TEXT)) == []


def test_the_link_detector_sees_raw_pr_text() -> None:
    kinds = {kind for kind, _ in live_links(PR_TEXT)}
    assert kinds == set(LIVE)


def test_bidi_controls_never_reach_the_comment() -> None:
    """Attack: a right-to-left override in a ConfigMap value (diff), an app name (table cell),
    a summary, a validation message, a render error: each shown as `<U+202E>`, none applied."""
    rlo = "safe\u202eexe.sh\u2066x\u2069\u200f\u061c"
    plan = Plan(base=BASE, head=HEAD, targets=[
        TargetPlan(app=f"shop{rlo}", env=f"dev{rlo}", path=f"apps/{rlo}", renderer="kustomize", status="changed",
                   changes=[ObjectChange("", "ConfigMap", "ns", f"cfg{rlo}", "changed",
                                         f"-  GREETING: hello\n+  GREETING: {rlo}\n")],
                   validation=[ValidationIssue("ConfigMap", f"cfg{rlo}", "error", "", f"bad {rlo}")]),
        TargetPlan(app="worker", env="dev", path="apps/worker", renderer="helm", status="error",
                   error=f"render failed: {rlo}")])
    [body] = render_markdown(plan)
    assert BIDI.search(body) is None
    row = cells(table_rows(body)[2])
    assert row[:2] == ["dev" + "safe&lt;U+202E&gt;exe.sh&lt;U+2066&gt;x&lt;U+2069&gt;&lt;U+200F&gt;&lt;U+061C&gt;",
                       "shop" + "safe&lt;U+202E&gt;exe.sh&lt;U+2066&gt;x&lt;U+2069&gt;&lt;U+200F&gt;&lt;U+061C&gt;"]
    assert "+  GREETING: safe<U+202E>exe.sh<U+2066>x<U+2069><U+200F><U+061C>" in diff_lines([body])
    assert "render failed: safe<U+202E>exe.sh" in body


def test_huge_user_strings_are_clipped_and_parts_stay_within_the_limit() -> None:
    evil = "<|`" * 500
    target = TargetPlan(app=evil, env=evil, path=evil, renderer=evil, status="changed",
                        changes=[ObjectChange(evil, evil, evil, evil, "changed", "+x\n" * 2000,
                                              renamed_from=evil)],
                        validation=[ValidationIssue(evil, evil, "error", evil, evil)] * 3)
    parts = render_markdown(Plan(base=evil, head=evil, targets=[target] * 5), limit=4_000, max_parts=None)
    assert len(parts) > 10
    for part in parts:
        assert len(part) <= 4_000
        blocks_of(part)
        assert all(len(cells(row)) == 5 for row in table_rows(part))
    assert diff_lines(parts) == ["+x"] * 10_000


# --------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------

def test_json_has_the_spec_shape() -> None:
    plan = Plan(base=BASE, head=HEAD, targets=[
        TargetPlan(app="demo", env="dev", path="apps/demo/envs/dev", renderer="kustomize", status="changed",
                   changes=[ObjectChange("apps", "Deployment", "demo-dev", "app", "changed",
                                         "--- a\n+++ b\n")],
                   validation=[ValidationIssue("Deployment", "app", "error", "spec.replicas",
                                               "spec.replicas: 'two' is not of type 'integer'")]),
        TargetPlan(app="demo", env="prod", path="apps/demo/envs/prod", renderer="helm", status="error",
                   error="Error: parse error", dry_run=DryRun(
                       status="failed",
                       changes=[ObjectChange("", "ConfigMap", None, "c", "added", "+x")],
                       errors=[DryRunError("apps", "Deployment", "demo-prod", "app", "forbidden")])),
    ])
    out = render_json(plan)
    data = json.loads(out)
    assert data == {
        "base": BASE, "head": HEAD,
        "targets": [
            {"app": "demo", "env": "dev", "path": "apps/demo/envs/dev", "renderer": "kustomize",
             "status": "changed", "error": None,
             "changes": [{"group": "apps", "kind": "Deployment", "namespace": "demo-dev", "name": "app",
                          "action": "changed", "diff": "--- a\n+++ b\n"}],
             "validation": [{"kind": "Deployment", "name": "app", "level": "error", "path": "spec.replicas",
                             "message": "spec.replicas: 'two' is not of type 'integer'"}],
             "dry_run": None},
            {"app": "demo", "env": "prod", "path": "apps/demo/envs/prod", "renderer": "helm",
             "status": "error", "error": "Error: parse error", "changes": [], "validation": [],
             "dry_run": {"status": "failed",
                         "changes": [{"group": "", "kind": "ConfigMap", "namespace": None, "name": "c",
                                      "action": "added", "diff": "+x"}],
                         "errors": [{"group": "apps", "kind": "Deployment", "namespace": "demo-prod",
                                     "name": "app", "message": "forbidden"}]}},
        ],
        "tools": {}}
    # key order is the documented one, every time (then the renderer versions the plan used)
    assert list(data) == ["base", "head", "targets", "tools"]
    assert list(data["targets"][0]) == ["app", "env", "path", "renderer", "status", "error", "changes",
                                        "validation", "dry_run"]
    assert list(data["targets"][1]["dry_run"]) == ["status", "changes", "errors"]
    assert render_json(plan) == out and out.startswith('{\n  "base": ')


def test_json_round_trips_a_realistic_plan() -> None:
    plan = realistic_plan()
    out = render_json(plan)
    assert json.loads(out) == plan.to_json()
    assert out.isascii()
    assert json.loads(render_json(Plan(base=BASE, head=HEAD))) == {"base": BASE, "head": HEAD, "targets": [],
                                                                   "tools": {}}


# --------------------------------------------------------------------------------------------
# Any plan, any limit: the invariants of splitting
# --------------------------------------------------------------------------------------------

line_text = st.text(alphabet=st.sampled_from(list("ab -+`|<>*_é日🚀\t")), max_size=300)
# a few distinct lines repeated up to 80 times: big enough to split at small limits
diff_text = st.tuples(st.lists(line_text, max_size=20), st.integers(1, 80)).map(
    lambda x: "\n".join(x[0] * x[1]))
change = st.builds(ObjectChange, st.sampled_from(["", "apps"]), st.sampled_from(["ConfigMap", "Deployment"]),
                   st.sampled_from(["ns", None]), st.text(min_size=1, max_size=30),
                   st.sampled_from(["added", "changed", "removed"]), diff_text)
target = st.builds(TargetPlan, app=st.text(min_size=1, max_size=20), env=st.sampled_from(["dev", "staging"]),
                   path=st.text(max_size=40), renderer=st.just("plain"),
                   status=st.sampled_from(["changed", "unchanged", "error", "added"]),
                   error=st.one_of(st.none(), diff_text), changes=st.lists(change, max_size=8))


@settings(max_examples=60, deadline=None)
@given(targets=st.lists(target, max_size=6), limit=st.integers(4_000, 12_000))
def test_any_plan_splits_into_valid_parts(targets: list[TargetPlan], limit: int) -> None:
    plan = Plan(base=BASE, head=HEAD, targets=targets)
    parts = render_markdown(plan, limit=limit, max_parts=None)
    for i, part in enumerate(parts, 1):
        assert len(part) <= limit
        assert part.startswith(MARKER)
        assert part_of(part) == ((i, len(parts)) if len(parts) > 1 else None)
        blocks_of(part)
    shown = [line for part in parts for info, lines in blocks_of(part) if info == "diff" for line in lines]
    # targets of one app changing identically share a section: its diffs are shown once, where the
    # first of them stands; every target is in exactly one section
    sections = _sections(plan)
    assert sorted(id(t) for group in sections for t in group) == sorted(id(t) for t in targets if t.changes
                                                                         or t.error or t.status != "unchanged")
    assert all(t.changes == group[0].changes and t.app == group[0].app for group in sections for t in group)
    expected = []
    for t in (group[0] for group in sections):
        for c in t.changes:
            if c.diff.strip():
                lines = c.diff.split("\n")
                expected += lines[:-1] if lines[-1] == "" else lines
    assert shown == expected
