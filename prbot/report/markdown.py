"""The sticky PR comment: a verdict, a summary table, one `<details>` per target.

The comment is built as a list of *atoms* (a few lines that must stay together), each tagged with the
stack of containers (`<details>`, a code fence, the table) open after it, and grouped in *blocks*
(one per object diff) that the packer prefers not to split.  The packer fills parts of at most
`limit` characters; at a cut it closes every open container and reopens it at the top of the next
part, so each part is balanced markdown on its own.

Wording lives in `templates/comment.toml`; this module only decides structure and escaping.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prbot.report.texts import templates

if TYPE_CHECKING:
    from prbot.diff import ObjectChange
    from prbot.plan.model import DryRun, DryRunError, Plan, TargetPlan
    from prbot.validate import ValidationIssue

MARKER = "<!-- prbot:plan -->"
"""Hidden start of every part's first line: how the bot finds its comments again."""
PART_MARKER = "<!-- prbot:plan part={index}/{total} -->"
"""Follows `MARKER` on the first line of each part of a split comment."""
FIRST_LINE_RE = re.compile(r"<!-- prbot:plan -->(?:<!-- prbot:plan part=(\d+)/(\d+) -->)?")
DEFAULT_LIMIT = 65_000
MIN_LIMIT = 4_000           # room for the longest unsplittable atom (a summary, a table row) twice over

_INLINE_MAX = 200           # names, paths, kinds in summaries and table cells
_MESSAGE_MAX = 600          # one validation / API message
_MAX_ISSUES = 50            # validation issues listed per target
_MAX_SKIPPED_KINDS = 30
_MAX_QUIET = 100            # unchanged targets named in the compact line
_MAX_GROUPED = 5            # objects named on one line of dry-run refusals or notes


# --------------------------------------------------------------------------------------------
# Templates and escaping
# --------------------------------------------------------------------------------------------

def _t(key: str, **values: object) -> str:
    return templates("comment")[key].substitute(values)


def _n(key: str, count: int, **values: object) -> str:
    """The singular (`key_one`) or plural (`key_other`) form of a message."""
    return _t(f"{key}_one" if count == 1 else f"{key}_other", count=count, **values)


_SPACE = re.compile(r"\s+")
_MD_SPECIAL = re.compile(r"([\\`*_\[\]~|])")
_ZWSP = "\u200b"
# GitHub turns these into pings, cross-references and links in text (not in code): a zero-width
# space after `@`/`#`, inside `://`, after `www`, after the dash of `GH-12` (and of any `KEY-12`
# a repository's custom autolinks may know) and every 6 digits of a hex run (a commit id is 7 or
# more) leaves them readable and inert.
_WWW = re.compile(r"(?i)\b(www)\.")
_KEY_NUMBER = re.compile(r"(?<=[A-Za-z])-(?=[0-9])")
_HEX_RUN = re.compile(r"(?<![0-9A-Za-z_])[0-9A-Fa-f]{7,}(?![0-9A-Za-z_])")
# Unicode bidirectional controls: they make text display in another order than it reads (a value
# that looks harmless in a table cell or a diff is not); shown as `<U+202E>`, never applied.
_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def visible(text: str) -> str:
    """`text` with each Unicode bidirectional control (U+202A–U+202E, U+2066–U+2069, U+200E,
    U+200F, U+061C) written out as `<U+XXXX>`: for every place PR text lands, code blocks included."""
    return _BIDI.sub(lambda m: f"<U+{ord(m.group()):04X}>", text)


def _hex_pieces(m: re.Match[str]) -> str:
    run = m.group()
    return _ZWSP.join(run[i:i + 6] for i in range(0, len(run), 6))


def inert(text: str) -> str:
    """`text` with mentions (`@user`, `@org/team`), references (`#12`, `owner/repo#12`, `GH-12`,
    `KEY-12`), commit ids (7 or more hex digits) and autolinks (`https://…`, `www.…`) broken by a
    zero-width space, as GitHub renders them inert; bidirectional controls made `visible`."""
    text = visible(text)
    text = text.replace("@", "@" + _ZWSP).replace("#", "#" + _ZWSP).replace("://", ":" + _ZWSP + "//")
    text = _KEY_NUMBER.sub("-" + _ZWSP, _HEX_RUN.sub(_hex_pieces, text))
    return _WWW.sub(lambda m: m.group(1) + _ZWSP + ".", text)


def _oneline(text: object, limit: int) -> str:
    """Whitespace (newlines included) collapsed to single spaces, clipped to `limit` characters."""
    flat = _SPACE.sub(" ", str(text)).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _escaped(text: object, limit: int, escape: Callable[[str], str]) -> str:
    """`text` on one line, made inert (`inert`), escaped character by character, at most `limit`
    characters (plus `…`)."""
    out: list[str] = []
    used = 0
    for ch in inert(_SPACE.sub(" ", str(text)).strip()):
        esc = escape(ch)
        if used + len(esc) > limit:
            out.append("…")
            break
        out.append(esc)
        used += len(esc)
    return "".join(out)


def _md_char(ch: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", html.escape(ch, quote=False))


def md(text: object, limit: int = _INLINE_MAX) -> str:
    """User data as inert inline markdown: one line, no HTML, no emphasis, no mention, reference or
    autolink, `|` safe in a table cell."""
    return _escaped(text, limit, _md_char)


def html_text(text: object, limit: int = _INLINE_MAX) -> str:
    """User data inside an HTML element (`<summary>`): one line, HTML-escaped, no mention, reference
    or autolink."""
    return _escaped(text, limit, html.escape)


def code(text: object, limit: int = _INLINE_MAX) -> str:
    """User data as an inline code span, with a delimiter longer than any backtick run inside.

    Not for table cells (a `|` inside a code span would still end the cell)."""
    flat = _oneline(visible(str(text)), limit)
    if not flat:
        return '`""`'
    tick = "`" * (max((len(run) for run in re.findall(r"`+", flat)), default=0) + 1)
    pad = " " if flat[0] == "`" or flat[-1] == "`" else ""
    return f"{tick}{pad}{flat}{pad}{tick}"


def fence_for(text: str) -> str:
    """A code fence no line of `text` can close: longer than its longest run of backticks."""
    longest = max((len(run) for run in re.findall(r"`{3,}", text)), default=0)
    return "`" * max(3, longest + 1)


def short_sha(rev: str) -> str:
    """`abc1234` for a full sha, keeping a suffix such as `-dirty`; other revisions as given."""
    m = re.fullmatch(r"([0-9a-f]{7})[0-9a-f]*(\S*)", rev)
    return m.group(1) + m.group(2) if m else _oneline(rev, 40)


def describe_object(group: str, kind: str, namespace: str | None, name: str) -> str:
    """`apps/Deployment shop-dev/shop`, `ConfigMap shop-dev/cfg`, `storage.k8s.io/StorageClass x`."""
    kind_text = f"{group}/{kind}" if group else kind
    return f"{kind_text} {namespace}/{name}" if namespace else f"{kind_text} {name}"


# --------------------------------------------------------------------------------------------
# Document model: atoms, containers, blocks
# --------------------------------------------------------------------------------------------

def _size(lines: Iterable[str]) -> int:
    return sum(len(line) + 1 for line in lines)


@dataclass(frozen=True, eq=False)
class _Box:
    """A container: how it opens, closes, is cut at the end of a part and reopened in the next.

    `cut` is never shorter than `close`: the room set aside for cutting always holds the close."""
    open: tuple[str, ...]
    close: tuple[str, ...]
    cut: tuple[str, ...]
    reopen: tuple[str, ...]


@dataclass(frozen=True)
class _Atom:
    lines: tuple[str, ...]
    stack: tuple[_Box, ...]     # containers open after this atom
    glue: bool = False          # keep together with the next atom
    split: bool = False         # one line of a code block: may be cut in pieces if a part can't hold it

    @property
    def size(self) -> int:
        return _size(self.lines)


class _Doc:
    def __init__(self) -> None:
        self.blocks: list[list[_Atom]] = [[]]
        self.stack: tuple[_Box, ...] = ()

    def block(self) -> None:
        """Start a new block: the packer prefers cutting between blocks."""
        if self.blocks[-1]:
            self.blocks.append([])

    def add(self, *lines: str) -> None:
        self.blocks[-1].append(_Atom(lines, self.stack))

    def code_line(self, line: str) -> None:
        self.blocks[-1].append(_Atom((line,), self.stack, split=True))

    def push(self, box: _Box, *lead: str) -> None:
        self.stack += (box,)
        self.blocks[-1].append(_Atom(lead + box.open, self.stack, glue=True))

    def pop(self) -> None:
        box, self.stack = self.stack[-1], self.stack[:-1]
        self.blocks[-1].append(_Atom(box.close, self.stack))


def _details(summary: str, is_open: bool) -> _Box:
    tag = "<details open>" if is_open else "<details>"
    return _Box(open=(tag, f"<summary>{summary}</summary>", ""),
                close=("", "</details>", ""),
                cut=("", "</details>", ""),
                reopen=(tag, f"<summary>{_t('summary_continued', summary=summary)}</summary>", ""))


def _code_block(doc: _Doc, text: str, lang: str, lead: tuple[str, ...] = (),
                relead: tuple[str, ...] = ()) -> None:
    text = visible(text)
    fence = fence_for(text)
    box = _Box(open=(fence + lang,), close=(fence, ""), cut=(fence, ""), reopen=relead + (fence + lang,))
    doc.push(box, *lead)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for line in lines:
        doc.code_line(line)
    doc.pop()


# --------------------------------------------------------------------------------------------
# Content
# --------------------------------------------------------------------------------------------

def not_rendered(t: TargetPlan) -> bool:
    """A target the PR affects that prbot could not render (a remote input `render.remote` does not
    allow): a blind spot, so it fails the plan like a target that failed to render."""
    return t.status == "skipped"


def not_expanded(t: TargetPlan) -> bool:
    """A target holding an object the cluster would expand (a HelmRelease's chart …) that prbot
    could not expand: what it creates is not shown, a blind spot like a target not rendered."""
    return bool(getattr(t, "not_expanded", None))


def blind_spots(plan: Plan) -> list[TargetPlan]:
    """The targets of `plan` that were not rendered (`not_rendered`) or not fully expanded."""
    return [t for t in plan.targets if not_rendered(t) or not_expanded(t)]


def _failing(t: TargetPlan) -> bool:
    return t.failed or not_rendered(t) or not_expanded(t)


def _quiet(t: TargetPlan) -> bool:
    """Nothing to review: unchanged, rendered, no error or warning, nothing from the cluster."""
    dry = t.dry_run
    return (t.status == "unchanged" and not t.error and not t.failed and not t.changes and not not_expanded(t)
            and all(v.level == "skipped" for v in t.validation)
            and (dry is None or (dry.status == "ok" and not dry.changes and not dry.errors
                                 and not dry.skipped)))


def _envs(plan: Plan) -> list[str]:
    return list(dict.fromkeys(t.env for t in plan.targets))


def _verdict(plan: Plan) -> str:
    """The count names the environments that change; those planned but unchanged (a `.prbot.yml`
    change plans every target) are listed apart, so the count and the list agree."""
    envs = _envs(plan)
    changing = [e for e in envs if any(t.env == e and t.status not in ("unchanged", "skipped")
                                       for t in plan.targets)]
    head = _n("verdict_change", len(changing)) if changing else _t("verdict_no_change")
    marks, quiet = [], []
    for env in envs:
        failed = sum(1 for t in plan.targets if t.env == env and t.failed)
        blind = sum(1 for t in plan.targets if t.env == env and not_rendered(t))
        partial = sum(1 for t in plan.targets if t.env == env and not_expanded(t) and not not_rendered(t))
        if failed or blind or partial:
            if failed:
                marks.append(_n("env_failed", failed, env=md(env)))
            if blind:
                marks.append(_n("env_not_rendered", blind, env=md(env)))
            if partial:
                marks.append(_n("env_not_expanded", partial, env=md(env)))
        elif env in changing or not changing:
            marks.append(_t("env_ok", env=md(env)))
        else:
            quiet.append(md(env))
    if quiet:
        marks.append(_t("env_unchanged", envs=", ".join(quiet)))
    return _t("verdict_sep").join([head, *marks])


def _counts(t: TargetPlan, prefix: str) -> str:
    added, changed, removed = t.counts()
    if t.status in ("error", "skipped"):
        return _t(f"{prefix}_{'render_failed' if t.status == 'error' else 'skipped'}")
    key = {"added": "_counts_new", "removed": "_counts_gone"}.get(t.status, "_counts")
    if prefix == "summary" and t.status == "unchanged" and not t.changes:
        key = "_no_changes"
    return _t(prefix + key, added=added, changed=changed, removed=removed)


def _validation_cell(t: TargetPlan) -> str:
    if t.status in ("error", "removed", "skipped"):
        return _t("cell_none")
    levels = Counter(v.level if v.level in ("error", "skipped") else "warning" for v in t.validation)
    cells = []
    if levels["error"]:
        cells.append(_n("cell_validation_errors", levels["error"]))
    if levels["warning"]:
        cells.append(_n("cell_validation_warnings", levels["warning"]))
    if levels["skipped"]:
        cells.append(_t("cell_validation_skipped", count=levels["skipped"]))
    return _t("cell_sep").join(cells) if cells else _t("cell_validation_passed")


def _dry_run_cell(dry: DryRun | None) -> str:
    if dry is None:
        return _t("cell_none")
    if dry.status != "ok" or dry.errors:
        if not dry.errors or any(not e.kind for e in dry.errors):
            return _t("cell_dry_run_failed")
        return _n("cell_dry_run_refused", len(dry.errors))
    not_sent = _n("cell_dry_run_not_sent", len(dry.skipped)) if dry.skipped else ""
    if not dry.changes:
        return not_sent or _t("cell_dry_run_clean")
    changes = _n("cell_dry_run_changes", len(dry.changes))
    return f"{changes} · {not_sent}" if not_sent else changes


def _table(doc: _Doc, targets: Sequence[TargetPlan], rows: int | None = None) -> None:
    head, rule = _t("table_head"), _t("table_rule")
    doc.push(_Box(open=(head, rule), close=("",), cut=("",), reopen=(head, rule)))
    shown = targets if rows is None else targets[:rows]
    for t in shown:
        doc.add(_t("table_row", env=md(t.env), app=md(t.app), changes=_counts(t, "cell"),
                   validation=_validation_cell(t), dry_run=_dry_run_cell(t.dry_run)))
    if len(shown) < len(targets):
        doc.add(_t("table_more", count=len(targets) - len(shown)))
    doc.pop()


def _quiet_line(targets: Sequence[TargetPlan]) -> str:
    names = [md(f"{t.env}/{t.app}") for t in targets[:_MAX_QUIET]]
    if len(targets) > _MAX_QUIET:
        names.append(_t("quiet_more", count=len(targets) - _MAX_QUIET))
    return _n("quiet", len(targets), targets=", ".join(names))


def _issues(doc: _Doc, issues: Sequence[ValidationIssue]) -> None:
    listed = ([v for v in issues if v.level == "error"]
              + [v for v in issues if v.level not in ("error", "skipped")])
    skipped = Counter(v.kind for v in issues if v.level == "skipped")
    doc.add(_t("validation_heading"), "")
    for v in listed[:_MAX_ISSUES]:
        message = v.message
        if v.path and message.startswith(f"{v.path}: "):
            message = message[len(v.path) + 2:]
        doc.add(_t("issue_error" if v.level == "error" else "issue_warning",
                   object=code(f"{v.kind}/{v.name}"), message=md(message, _MESSAGE_MAX),
                   where=_t("issue_where", path=code(v.path)) if v.path else ""))
    if len(listed) > _MAX_ISSUES:
        doc.add(_t("issue_more", count=len(listed) - _MAX_ISSUES))
    if skipped:
        kinds = [code(kind) + (f" ×{n}" if n > 1 else "")
                 for kind, n in skipped.most_common(_MAX_SKIPPED_KINDS)]
        if len(skipped) > _MAX_SKIPPED_KINDS:
            kinds.append(_t("quiet_more", count=len(skipped) - _MAX_SKIPPED_KINDS))
        doc.add(_t("issue_skipped", kinds=", ".join(kinds)))
    doc.add("")


def _object(doc: _Doc, c: ObjectChange) -> None:
    values = {"icon": _t(f"icon_{c.action}") if f"icon_{c.action}" in templates("comment") else "•",
              "action": md(c.action), "object": code(describe_object(c.group, c.kind, c.namespace, c.name))}
    renamed = getattr(c, "renamed_from", None)
    heading = (_t("object_renamed", old=code(renamed), **values) if renamed
               else _t("object_heading", **values))
    origin = getattr(c, "origin", None)
    if origin:
        heading += _t("object_origin", origin=code(origin))
    if not c.diff.strip():
        doc.add(heading, "")
        return
    _code_block(doc, c.diff, "diff", lead=(heading, ""), relead=(_t("object_continued", **values), ""))


def _grouped(entries: Iterable[DryRunError]) -> list[tuple[str, list[str]]]:
    """(message, objects) in first-seen order: one line per reason, not one per object."""
    groups: dict[str, list[str]] = {}
    for e in entries:
        objects = groups.setdefault(e.message, [])
        if e.kind:
            objects.append(describe_object(e.group, e.kind, e.namespace, e.name))
    return list(groups.items())


def _objects(names: Sequence[str]) -> str:
    listed = ", ".join(code(n) for n in names[:_MAX_GROUPED])
    return _t("dry_run_more", objects=listed, count=len(names) - _MAX_GROUPED) if len(names) > _MAX_GROUPED \
        else listed


def _dry_run(doc: _Doc, dry: DryRun) -> None:
    unavailable = any(not e.kind for e in dry.errors)
    if unavailable:
        doc.add(_t("dry_run_unavailable"), "")
    elif dry.status != "ok" or dry.errors:
        doc.add(_t("dry_run_failed"), "")
    elif dry.changes:
        doc.add(_n("dry_run_changes", len(dry.changes)), "")
    elif dry.skipped:
        doc.add(_t("dry_run_not_sent"), "")
    else:
        doc.add(_t("dry_run_clean"), "")
    for message, names in _grouped(dry.errors):
        text = md(message, _MESSAGE_MAX)
        doc.add(_t("dry_run_error", object=_objects(names), message=text) if names
                else _t("dry_run_cluster", message=text))
    for message, names in _grouped(dry.skipped):
        doc.add(_t("dry_run_skipped", objects=_objects(names), message=md(message, _MESSAGE_MAX)))
    if dry.errors or dry.skipped:
        doc.add("")
    for c in dry.changes:
        doc.block()
        _object(doc, c)


def _target(doc: _Doc, t: TargetPlan, full: bool = True) -> None:
    """One `<details>` section; not `full`: the summary, a clipped error and a note only."""
    summary = _t("summary", icon=_t("target_failed" if _failing(t) else "target_ok"),
                 env=html_text(t.env), app=html_text(t.app), path=html_text(t.path),
                 renderer=html_text(t.renderer), changes=_counts(t, "summary"))
    doc.push(_details(summary, _failing(t)))
    if t.error:
        intro = (_t("render_failed", renderer=_oneline(visible(t.renderer), _INLINE_MAX).replace("`", "'"))
                 if t.status == "error" else _t("render_skipped") if not_rendered(t) else _t("render_note"))
        _code_block(doc, t.error if full else _oneline(t.error, _MESSAGE_MAX), "text", lead=(intro, ""))
    if not_expanded(t):
        doc.add(_t("not_expanded_intro"), "")
        for reason in t.not_expanded[:_MAX_ISSUES]:
            doc.add(_t("not_expanded_item", reason=md(reason, _MESSAGE_MAX)))
        if len(t.not_expanded) > _MAX_ISSUES:
            doc.add(_t("issue_more", count=len(t.not_expanded) - _MAX_ISSUES))
        doc.add("")
    if not full:
        doc.add(_t("target_summarised"), "")
        doc.pop()
        return
    if t.validation:
        _issues(doc, t.validation)
    for i, change in enumerate(t.changes):
        if i:                       # the first object travels with the target's heading
            doc.block()
        _object(doc, change)
    if t.dry_run is not None:
        doc.block()
        _dry_run(doc, t.dry_run)
    doc.pop()


def _tools(plan: Plan) -> str:
    """The renderer versions the plan used, for the footer (empty when it rendered with none)."""
    tools = getattr(plan, "tools", None) or {}
    said = _t("footer_unisolated") if getattr(plan, "isolation", "jail") == "off" else ""
    if not tools:
        return said
    return _t("footer_tools", tools=", ".join(f"{md(name)} {md(version)}" for name, version in tools.items())) + said


@dataclass(frozen=True)
class _Shape:
    """How much of a plan a comment shows: every target in full (the default), or only the loud
    targets numbered in `full`, the others summarised (`sections` False: not even a section), the
    table cut after `rows` rows — what keeps a plan within its number of comments."""

    full: frozenset[int] | None = None
    sections: bool = True
    rows: int | None = None
    parts: int = 0                  # the comment limit that forced the shape (for the note)


def _loud(plan: Plan) -> list[TargetPlan]:
    return [t for t in plan.targets if not _quiet(t)]


def _document(plan: Plan, title: str, shape: _Shape = _Shape()) -> list[list[_Atom]]:
    doc = _Doc()
    doc.add(_t("heading", title=md(title)), "")
    if not plan.targets:
        doc.add(_t("empty", base=code(short_sha(plan.base)), head=code(short_sha(plan.head))), "")
    else:
        loud = _loud(plan)
        quiet = [t for t in plan.targets if _quiet(t)]
        doc.add(_verdict(plan), "")
        summarised = 0 if shape.full is None else len(loud) - len(shape.full)
        if summarised:
            doc.add(_n("summarised_note", summarised, parts=shape.parts), "")
        if loud:
            _table(doc, loud, shape.rows)
        if quiet:
            doc.add(_quiet_line(quiet), "")
        for i, t in enumerate(loud):
            full = shape.full is None or i in shape.full
            if full or shape.sections:
                doc.block()
                _target(doc, t, full)
    doc.block()
    doc.add("", "---", _t("footer", base=code(short_sha(plan.base)), head=code(short_sha(plan.head)))
            + _tools(plan))
    assert not doc.stack, "unbalanced document"
    return [b for b in doc.blocks if b]


# --------------------------------------------------------------------------------------------
# Packing into parts
# --------------------------------------------------------------------------------------------

class _Packer:
    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.parts: list[list[str]] = []
        self.lines: list[str] = []
        self.used = 0
        self.stack: tuple[_Box, ...] = ()
        self.content = False        # anything besides reopened containers in the current part
        self.blank = False          # the last line is a blank line of markup (not of a code block)

    @staticmethod
    def _cut_size(stack: tuple[_Box, ...]) -> int:
        return sum(_size(box.cut) for box in stack)

    def room(self, stack: tuple[_Box, ...]) -> int:
        """Characters left for atoms that end with `stack` open (its cut lines are set aside)."""
        return self.budget - self.used - self._cut_size(stack)

    def _emit(self, lines: Sequence[str], code_line: bool = False) -> None:
        """Append lines; one blank line of markup where two would meet (sizes only shrink)."""
        if code_line:
            self.lines.extend(lines)
            self.used += _size(lines)
            self.blank = False
            return
        for line in lines:
            if line or not self.blank:
                self.lines.append(line)
                self.used += len(line) + 1
            self.blank = not line

    def put(self, atom: _Atom) -> None:
        self._emit(atom.lines, atom.split)
        self.stack = atom.stack
        self.content = True

    def new_part(self) -> None:
        for box in reversed(self.stack):
            self._emit(box.cut)
        self.parts.append(self.lines)
        self.lines, self.used, self.blank, self.content = [], 0, False, False
        for box in self.stack:
            self._emit(box.reopen)

    def block(self, atoms: list[_Atom]) -> None:
        total = sum(a.size for a in atoms)
        end = atoms[-1].stack
        if total <= self.room(end):
            for a in atoms:
                self.put(a)
            return
        if self.content:
            reopen = _size(line for box in self.stack for line in box.reopen)
            fresh = self.budget - reopen - self._cut_size(end)
            # a block that fits a part of its own moves there whole; a bigger one starts here
            # unless this part is nearly full (no stub of a few lines before the cut)
            if total <= fresh or self.room(self.stack) < self.budget // 4:
                self.new_part()
                if total <= self.room(end):
                    for a in atoms:
                        self.put(a)
                    return
        self._atoms(atoms)

    def _atoms(self, atoms: list[_Atom]) -> None:
        i = 0
        while i < len(atoms):
            j = i
            while atoms[j].glue and j + 1 < len(atoms):
                j += 1
            chain = atoms[i:j + 1]
            if sum(a.size for a in chain) <= self.room(chain[-1].stack):
                for a in chain:
                    self.put(a)
            elif self.content:
                self.new_part()
                continue
            else:                   # not even a fresh part holds the chain: place it atom by atom
                for a in chain:
                    self._one(a)
            i = j + 1

    def _one(self, atom: _Atom) -> None:
        if atom.size <= self.room(atom.stack):
            self.put(atom)
            return
        if not atom.split:
            if self.content:
                self.new_part()
            self.put(atom)          # bounded by MIN_LIMIT: every non-code atom is short
            return
        text = atom.lines[0]        # a code line longer than a part: cut it in pieces
        while text:
            room = max(1, self.room(atom.stack) - 1)
            if room < 80 and self.content:
                self.new_part()
                continue
            piece, text = text[:room], text[room:]
            self.put(_Atom((piece,), atom.stack))
            if text:
                self.new_part()

    def finish(self) -> list[list[str]]:
        assert not self.stack, "document ended inside a container"
        self.parts.append(self.lines)
        return self.parts


_OPERATOR: Any = object()


@dataclass(frozen=True)
class Comment:
    """The plan comment's bodies, and the targets they do not show in full (`hidden`: summarised
    without their diffs, or not even in the table, because the plan outgrew its comments)."""

    parts: list[str]
    hidden: list[TargetPlan]


def render_markdown(plan: Plan, *, limit: int = DEFAULT_LIMIT, title: str | None = None,
                    max_parts: int | None = _OPERATOR) -> list[str]:
    """The bodies of `render_comment`."""
    return render_comment(plan, limit=limit, title=title, max_parts=max_parts).parts


def render_comment(plan: Plan, *, limit: int = DEFAULT_LIMIT, title: str | None = None,
                   max_parts: int | None = _OPERATOR) -> Comment:
    """The sticky PR comment for `plan`, as one or more comment bodies of at most `limit` characters.

    Every part's first line starts with `MARKER`; when there are several, `<!-- prbot:plan part=I/N -->`
    follows on that line.  Code fences and `<details>` are closed at each cut and reopened (summary
    marked "(continued)") at the top of the next part.

    At most `max_parts` parts (default: the operator's `PRBOT_COMMENT_PARTS`; None: no bound): a
    bigger plan shows failed targets first, then as many targets in full as fit (the smallest
    first: one noisy target cannot push the others out), and the others summarised — every target
    still in the table; those not shown in full are `Comment.hidden`.
    """
    if limit < MIN_LIMIT:
        raise ValueError(f"limit must be at least {MIN_LIMIT} characters, got {limit}")
    if max_parts is _OPERATOR:
        from prbot.limits import Limits
        max_parts = Limits.from_env().comment_parts
    title = title or _t("default_title")
    bodies = _pack(_document(plan, title), title, limit)
    hidden: list[TargetPlan] = []
    if max_parts is not None and len(bodies) > max(max_parts, 1):
        bodies, hidden = _fit(plan, title, limit, max(max_parts, 1))
    parts = []
    for index, body in enumerate(bodies, 1):
        head, tail = _frame(title, index, len(bodies))
        while body and not body[-1]:
            body = body[:-1]
        parts.append("\n".join(head + body + tail) + "\n")
    return Comment(parts, hidden)


def _pack(blocks: list[list[_Atom]], title: str, limit: int) -> list[list[str]]:
    digits = 1
    while True:
        worst = int("9" * digits)
        head, tail = _frame(title, worst, worst + 1)
        packer = _Packer(limit - _size(head) - _size(tail))
        for block in blocks:
            packer.block(block)
        bodies = packer.finish()
        if len(str(len(bodies))) <= digits:
            return bodies
        digits = len(str(len(bodies)))


def _fit(plan: Plan, title: str, limit: int, max_parts: int) -> tuple[list[list[str]], list[TargetPlan]]:
    """The most of `plan` that `max_parts` comments hold (see `_Shape`), and the targets it does not
    show in full."""
    loud = _loud(plan)
    room = limit * max_parts

    def attempt(shape: _Shape) -> list[list[str]] | None:
        bodies = _pack(_document(plan, title, shape), title, limit)
        return bodies if len(bodies) <= max_parts else None

    def besides(full: Iterable[int]) -> list[TargetPlan]:
        shown = set(full)
        return [t for i, t in enumerate(loud) if i not in shown]

    # failures first, then the smallest: the most targets in full; at most as many as their own
    # sizes allow, then the most that really fit
    sizes = []
    for t in loud:
        doc = _Doc()
        _target(doc, t)
        sizes.append(sum(a.size for block in doc.blocks for a in block))
    order = sorted(range(len(loud)), key=lambda i: (not _failing(loud[i]), sizes[i], i))
    upper, used = 0, 0
    while upper < len(order) and used + sizes[order[upper]] <= room:
        used += sizes[order[upper]]
        upper += 1
    best = attempt(_Shape(full=frozenset(), parts=max_parts))
    if best is not None:
        lo, hi = 0, upper
        while lo < hi:
            mid = (lo + hi + 1) // 2
            got = attempt(_Shape(full=frozenset(order[:mid]), parts=max_parts))
            if got is not None:
                lo, best = mid, got
            else:
                hi = mid - 1
        return best, besides(order[:lo])
    best = attempt(_Shape(full=frozenset(), sections=False, parts=max_parts))
    if best is not None:
        return best, besides(())
    lo, hi = 0, len(loud)                 # thousands of targets: the table itself is cut
    packed = _pack(_document(plan, title, _Shape(full=frozenset(), sections=False, rows=0, parts=max_parts)),
                   title, limit)
    best = packed[:max_parts]
    while lo < hi:
        mid = (lo + hi + 1) // 2
        got = attempt(_Shape(full=frozenset(), sections=False, rows=mid, parts=max_parts))
        if got is not None:
            lo, best = mid, got
        else:
            hi = mid - 1
    if lo == 0 and len(packed) > max_parts:     # not even the unchanged targets' line made it
        return best, list(plan.targets)
    return best, besides(())


def _frame(title: str, index: int, total: int) -> tuple[list[str], list[str]]:
    """Lines before and after the body of part `index` of `total`."""
    if total == 1:
        return [MARKER], []
    head = [MARKER + PART_MARKER.format(index=index, total=total)]
    if index > 1:
        head += ["", _t("part_heading", title=md(title), index=index, total=total), ""]
    tail = ["", _t("part_next", next=index + 1, total=total)] if index < total else []
    return head, tail


def part_of(body: str) -> tuple[int, int] | None:
    """(I, N) of a comment body whose first line marks it `part=I/N`; None for a one-part comment or
    another comment.  Only the first line counts: text further down (a rendered resource name, a
    value) can never forge a part."""
    m = FIRST_LINE_RE.fullmatch(body.split("\n", 1)[0].rstrip("\r"))
    return (int(m.group(1)), int(m.group(2))) if m and m.group(1) else None


def is_plan_comment(body: str) -> bool:
    """Whether a comment body is (a part of) prbot's plan comment: its first line is prbot's marker."""
    return FIRST_LINE_RE.fullmatch(body.split("\n", 1)[0].rstrip("\r")) is not None
