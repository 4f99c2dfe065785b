"""prbot.yamledit: scalar edits that leave every other byte of the file alone."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from prbot.errors import PrbotError, YamlEditError
from prbot.yamledit import TextEdit, YamlFile, apply_edits, format_scalar, get_value, items, set_scalar


def load_all(text: str) -> list[Any]:
    return list(YAML(typ="safe", pure=True).load_all(text))


# -- generated documents ----------------------------------------------------------------------------------

PLAIN_WORDS = st.one_of(
    st.from_regex(r"[a-zA-Z][a-zA-Z0-9._/-]{0,12}", fullmatch=True),
    st.sampled_from(["1.10", "42", "0x1", "true", "no", "null", "~", "1.2.3", "v1", "a b", "x:y", "é中"]),
)
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), max_codepoint=0xFFFF), max_size=12)
NEW_VALUES = st.one_of(
    TEXT,
    st.sampled_from(["", "1.10", "0x1", "true", "yes", "null", "~", "a: b", "x #y", "- a", "[a]", "{b}",
                     "'", '"', "\\", "\t", "a\nb", " lead", "trail ", "#", "&x", "*y", "!t", "%p", "@a",
                     "`b", "|", ">", "1e3", "2024-01-01", "=", "<<", "é中", "\u2028", "\x85", "\ufeff",
                     "1.2.3", "sha256:" + "a" * 64]),
)


@dataclass
class Leaf:
    doc: int
    path: tuple[str | int, ...]
    token: str          # the scalar as written in the generated text
    style: str          # "plain" | "single" | "double"


def _single(v: str) -> str:
    return "'" + v.replace("'", "''") + "'"


@st.composite
def tokens(draw: st.DrawFn, flow: bool) -> tuple[str, str]:
    style = draw(st.sampled_from(["plain", "single", "double"]))
    if style == "plain":
        word = draw(PLAIN_WORDS)
        if flow or word in ("a b",):
            word = word.replace(" ", "_")
        return word, style
    value = draw(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"),
                                                blacklist_characters="\ufeff\x85", max_codepoint=0xFFFF),
                         max_size=8))
    return (_single(value) if style == "single" else json.dumps(value)), style


@st.composite
def documents(draw: st.DrawFn) -> tuple[str, list[Leaf]]:
    leaves: list[Leaf] = []
    docs: list[str] = []
    ndocs = draw(st.integers(1, 3))
    for d in range(ndocs):
        lines: list[str] = []
        if d > 0 or draw(st.booleans()):
            lines.append("---" + draw(st.sampled_from(["", " # doc"])))
        if draw(st.booleans()):
            lines.append("# leading comment")
        _emit_map(draw, lines, leaves, d, (), 0, 0)
        docs.append("\n".join(lines))
    text = "\n".join(docs) + draw(st.sampled_from(["\n", "", "\n\n", "\n# end\n"]))
    if draw(st.booleans()):
        text = text.replace("\n", "\r\n")
    return text, leaves


def _emit_map(draw: st.DrawFn, lines: list[str], leaves: list[Leaf], doc: int, path: tuple[str | int, ...],
              indent: int, depth: int) -> None:
    pad = " " * indent
    for j in range(draw(st.integers(1, 4))):
        key = f"k{j}"
        if draw(st.integers(0, 5)) == 0:
            lines.append(pad + "# a comment line")
        if draw(st.integers(0, 5)) == 0:
            lines.append("")
        kinds = ["scalar", "flowmap", "flowseq"] + (["map", "seq", "seqmap"] if depth < 2 else [])
        kind = draw(st.sampled_from(kinds))
        comment = draw(st.sampled_from(["", "", "  # trailing", " #x"]))
        if kind == "scalar":
            token, style = draw(tokens(False))
            lines.append(f"{pad}{key}: {token}{comment}")
            leaves.append(Leaf(doc, (*path, key), token, style))
        elif kind == "map":
            lines.append(f"{pad}{key}:{comment}")
            step = draw(st.sampled_from([2, 4]))
            _emit_map(draw, lines, leaves, doc, (*path, key), indent + step, depth + 1)
        elif kind == "seq":
            lines.append(f"{pad}{key}:")
            dash = pad + " " * draw(st.sampled_from([0, 2]))
            for i in range(draw(st.integers(1, 3))):
                token, style = draw(tokens(False))
                lines.append(f"{dash}- {token}{draw(st.sampled_from(['', '  # item']))}")
                leaves.append(Leaf(doc, (*path, key, i), token, style))
        elif kind == "seqmap":                  # the shape of a kustomization's `images:`
            lines.append(f"{pad}{key}:")
            dash = pad + " " * draw(st.sampled_from([0, 2]))
            for i in range(draw(st.integers(1, 2))):
                for j in range(draw(st.integers(1, 3))):
                    token, style = draw(tokens(False))
                    lead = f"{dash}- " if j == 0 else f"{dash}  "
                    lines.append(f"{lead}f{j}: {token}{draw(st.sampled_from(['', '  # field']))}")
                    leaves.append(Leaf(doc, (*path, key, i, f"f{j}"), token, style))
        elif kind == "flowmap":
            parts = []
            for name in ("name", "newTag")[: draw(st.integers(1, 2))]:
                token, style = draw(tokens(True))
                parts.append(f"{name}: {token}")
                leaves.append(Leaf(doc, (*path, key, name), token, style))
            lines.append(f"{pad}{key}: {{{', '.join(parts)}}}{comment}")
        else:
            parts = []
            for i in range(draw(st.integers(1, 3))):
                token, style = draw(tokens(True))
                parts.append(token)
                leaves.append(Leaf(doc, (*path, key, i), token, style))
            lines.append(f"{pad}{key}: [{', '.join(parts)}]{comment}")


def _node_at(f: YamlFile, leaf: Leaf) -> Any:
    node = f.documents[leaf.doc]
    for step in leaf.path:
        node = items(node)[step] if isinstance(step, int) else get_value(node, step)
    return node


def _set_at(data: list[Any], leaf: Leaf, value: str) -> None:
    obj: Any = data[leaf.doc]
    for step in leaf.path[:-1]:
        obj = obj[step]
    obj[leaf.path[-1]] = value


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=documents(), data=st.data())
def test_any_scalar_edit_changes_only_that_scalar(doc: tuple[str, list[Leaf]], data: st.DataObject) -> None:
    text, leaves = doc
    original = load_all(text)
    leaf = data.draw(st.sampled_from(leaves))
    value = data.draw(NEW_VALUES)

    f = YamlFile(text)
    node = _node_at(f, leaf)
    edit = f.set_scalar(node, value)
    result = apply_edits(text, [edit])

    # The span is exactly the scalar as it was written, and nothing else.
    assert text[edit.start:edit.end] == leaf.token
    # (b) every byte before and after the span is the original's.
    assert result[:edit.start] == text[:edit.start]
    assert result[edit.start + len(edit.new):] == text[edit.end:]
    # (a) it parses, and the node holds the new value, as a string.
    parsed = load_all(result)
    target: Any = parsed[leaf.doc]
    for step in leaf.path:
        target = target[step]
    assert target == value and isinstance(target, str)
    # (c) every other value is unchanged.
    _set_at(original, leaf, value)
    assert parsed == original
    # The quoting style is kept whenever it can hold the value.
    if leaf.style == "double":
        assert edit.new.startswith('"')
    elif leaf.style == "single":
        assert edit.new.startswith("'" if "\n" not in value and edit.new[0] != '"' else '"')
    # CRLF files get no bare LF.
    if "\r\n" in text:
        assert result.count("\n") == result.count("\r\n")


def _mapping_paths(data: Any, path: tuple[str | int, ...] = ()) -> list[tuple[tuple[str | int, ...], list[str]]]:
    """(path, keys) of every mapping in parsed data."""
    out: list[tuple[tuple[str | int, ...], list[str]]] = []
    if isinstance(data, dict):
        out.append((path, list(data)))
        for k, v in data.items():
            out += _mapping_paths(v, (*path, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += _mapping_paths(v, (*path, i))
    return out


def _sequence_paths(data: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    out: list[tuple[str | int, ...]] = []
    if isinstance(data, list):
        out.append(path)
    children = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else []
    for k, v in children:
        out += _sequence_paths(v, (*path, k))
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=documents(), data=st.data())
def test_appended_item_changes_only_its_sequence(doc: tuple[str, list[Leaf]], data: st.DataObject) -> None:
    text, _ = doc
    original = load_all(text)
    where = [(d, path) for d, parsed in enumerate(original) for path in _sequence_paths(parsed)]
    assume(where)
    d, path = data.draw(st.sampled_from(where))
    f = YamlFile(text)
    value = data.draw(st.one_of(NEW_VALUES, st.fixed_dictionaries({"name": NEW_VALUES, "newTag": NEW_VALUES})))
    edit = f.append_item(_node_at_path(f, d, path), value)
    result = apply_edits(text, [edit])
    assert edit.start == edit.end and result[:edit.start] == text[:edit.start]
    assert result[edit.start + len(edit.new):] == text[edit.end:]
    target: Any = original[d]
    for step in path:
        target = target[step]
    target.append(value)
    assert load_all(result) == original


def _node_at_path(f: YamlFile, doc: int, path: tuple[str | int, ...]) -> Any:
    node = f.documents[doc]
    for step in path:
        node = items(node)[step] if isinstance(step, int) else get_value(node, step)
    return node


INSERTED = st.one_of(NEW_VALUES, st.fixed_dictionaries({"name": NEW_VALUES, "newTag": NEW_VALUES}),
                     st.lists(st.fixed_dictionaries({"name": NEW_VALUES}), min_size=1, max_size=2))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=documents(), data=st.data())
def test_structural_edits_change_only_their_entry(doc: tuple[str, list[Leaf]], data: st.DataObject) -> None:
    text, _ = doc
    original = load_all(text)
    where = [(d, path, keys) for d, parsed in enumerate(original) for path, keys in _mapping_paths(parsed)]
    d, path, keys = data.draw(st.sampled_from(where))
    f = YamlFile(text)
    mapping = _node_at_path(f, d, path)
    expected = load_all(text)
    target: Any = expected[d]
    for step in path:
        target = target[step]
    if data.draw(st.booleans()) or len(keys) < 2:
        value = data.draw(INSERTED)
        after = data.draw(st.sampled_from([(), *[(k,) for k in keys]]))
        edit = f.insert_key(mapping, "zz_new", value, after=after)
        assert edit.start == edit.end                      # a pure insertion
        target["zz_new"] = value
    else:
        key = data.draw(st.sampled_from(keys))
        edit = f.delete_key(mapping, key)
        assert edit.new in ("", "{}")
        del target[key]
    result = apply_edits(text, [edit])
    assert result[:edit.start] == text[:edit.start]
    assert result[edit.start + len(edit.new):] == text[edit.end:]
    assert load_all(result) == expected
    if "\r\n" in text:
        assert result.count("\n") == result.count("\r\n")


@settings(max_examples=100, deadline=None)
@given(value=NEW_VALUES, style=st.sampled_from([None, "'", '"']), flow=st.booleans())
def test_format_scalar_reads_back(value: str, style: str | None, flow: bool) -> None:
    written = format_scalar(value, style, flow=flow)
    doc = f"k: [{written}]\n" if flow else f"k: {written}  # c\n"
    got = load_all(doc)[0]["k"]
    assert (got[0] if flow else got) == value


# -- scalar formatting ------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["1.10", "0x1", "true", "yes", "on", "null", "~", "", "a: b", "x #y", "1e3",
                                   "2024-01-01", "010", "- a", "@a", "*a", "&a", "!a", "'q", "[a]", " a"])
def test_plain_that_would_change_type_or_break_is_double_quoted(value: str) -> None:
    assert format_scalar(value, None) == json.dumps(value)


@pytest.mark.parametrize("value", ["1.2.3", "v1.10", "abc", "a b", "x:y", "sha256:abc", "é中", "1.2.3-rc.1"])
def test_plain_stays_plain_when_safe(value: str) -> None:
    assert format_scalar(value, None) == value


def test_flow_context_quotes_flow_indicators() -> None:
    assert format_scalar("a,b", None) == "a,b"
    assert format_scalar("a,b", None, flow=True) == '"a,b"'


def test_single_and_double_quoting() -> None:
    assert format_scalar("it's", "'") == "'it''s'"
    assert format_scalar("a\nb", "'") == '"a\\nb"'
    assert format_scalar('say "hi" \\ \t', '"') == '"say \\"hi\\" \\\\ \\t"'
    assert format_scalar("\x00\x85\u2028", '"') == '"\\u0000\\u0085\\u2028"'


# -- documents edited in place ----------------------------------------------------------------------------

KUSTOMIZATION = (
    "apiVersion: kustomize.config.k8s.io/v1beta1\r\n"
    "kind: Kustomization\r\n"
    "resources:\r\n"
    "  - ../../base   # the base\r\n"
    "\r\n"
    "images:\r\n"
    "  - name: registry.example.com/shop  # shop\r\n"
    "    newTag: '1.0.0'   # bumped by prbot\r\n"
    "    digest: sha256:" + "a" * 64 + "\r\n"
    "  - {name: nginx, newTag: \"1.25\"}\r\n"
)


def test_crlf_scalar_edit_keeps_comment_and_quotes() -> None:
    out = set_scalar(KUSTOMIZATION, ["images", 0, "newTag"], "1.10")
    assert out == KUSTOMIZATION.replace("newTag: '1.0.0'", "newTag: '1.10'")
    out = set_scalar(KUSTOMIZATION, ["images", 1, "newTag"], "1.27")
    assert out == KUSTOMIZATION.replace('newTag: "1.25"', 'newTag: "1.27"')


def test_delete_key_line_crlf() -> None:
    f = YamlFile(KUSTOMIZATION)
    entry = items(get_value(f.documents[0], "images"))[0]
    out = apply_edits(KUSTOMIZATION, [f.delete_key(entry, "digest")])
    assert out == KUSTOMIZATION.replace("    digest: sha256:" + "a" * 64 + "\r\n", "")


def test_delete_first_key_of_sequence_item_pulls_next_key_up() -> None:
    text = "images:\n  - digest: sha256:" + "b" * 64 + "\n    name: x\n    newTag: '1'\n"
    f = YamlFile(text)
    out = apply_edits(text, [f.delete_key(items(get_value(f.documents[0], "images"))[0], "digest")])
    assert out == "images:\n  - name: x\n    newTag: '1'\n"


def test_delete_key_in_flow_mapping() -> None:
    f = YamlFile(KUSTOMIZATION)
    entry = items(get_value(f.documents[0], "images"))[1]
    assert apply_edits(KUSTOMIZATION, [f.delete_key(entry, "newTag")]) == KUSTOMIZATION.replace(
        '{name: nginx, newTag: "1.25"}', "{name: nginx}")
    assert apply_edits(KUSTOMIZATION, [f.delete_key(entry, "name")]) == KUSTOMIZATION.replace(
        '{name: nginx, newTag: "1.25"}', '{newTag: "1.25"}')


def test_insert_key_next_to_name_crlf() -> None:
    f = YamlFile(KUSTOMIZATION)
    entry = items(get_value(f.documents[0], "images"))[0]
    out = apply_edits(KUSTOMIZATION, [f.insert_key(entry, "newName", "ghcr.io/acme/shop", after="name")])
    assert out == KUSTOMIZATION.replace(
        "  # shop\r\n", "  # shop\r\n    newName: ghcr.io/acme/shop\r\n")
    flow = items(get_value(f.documents[0], "images"))[1]
    out = apply_edits(KUSTOMIZATION, [f.insert_key(flow, "digest", "sha256:" + "c" * 64, after="newTag")])
    assert out == KUSTOMIZATION.replace('newTag: "1.25"}', 'newTag: "1.25", digest: sha256:' + "c" * 64 + "}")


def test_append_item_to_block_and_flow_sequences() -> None:
    f = YamlFile(KUSTOMIZATION)
    images = get_value(f.documents[0], "images")
    out = apply_edits(KUSTOMIZATION, [f.append_item(images, {"name": "busybox", "newTag": "1.36"})])
    assert out == KUSTOMIZATION + "  - name: busybox\r\n    newTag: \"1.36\"\r\n"
    text = "a: [x, y]  # list\nb: []\n"
    f = YamlFile(text)
    out = apply_edits(text, [f.append_item(get_value(f.documents[0], "a"), "z"),
                             f.append_item(get_value(f.documents[0], "b"), "true")])
    assert out == 'a: [x, y, z]  # list\nb: ["true"]\n'


def test_add_top_level_block_without_final_newline() -> None:
    text = "kind: Kustomization\nresources:\n- ../base"
    f = YamlFile(text)
    out = apply_edits(text, [f.insert_key(f.documents[0], "images", [{"name": "nginx", "newTag": "1.2.3"}])])
    assert out == text + "\nimages:\n- name: nginx\n  newTag: 1.2.3"
    assert load_all(out)[0]["images"] == [{"name": "nginx", "newTag": "1.2.3"}]


def test_add_top_level_block_follows_sequence_indentation() -> None:
    text = "kind: Kustomization  # k\nresources:\n  - ../base\n"
    f = YamlFile(text)
    out = apply_edits(text, [f.insert_key(f.documents[0], "images", [{"name": "nginx", "newTag": "1.2.3"}])])
    assert out == text + "images:\n  - name: nginx\n    newTag: 1.2.3\n"


def test_empty_key_gets_block_value() -> None:
    text = "kind: Kustomization\nimages:   # none yet\nnamespace: x\n"
    f = YamlFile(text)
    out = apply_edits(text, [f.set_empty_value(f.documents[0], "images", [{"name": "a", "newTag": "b"}])])
    assert out == "kind: Kustomization\nimages:   # none yet\n- name: a\n  newTag: b\nnamespace: x\n"
    assert load_all(out)[0]["images"] == [{"name": "a", "newTag": "b"}]


def test_multi_document_edit_touches_one_document() -> None:
    text = "a: 1\n---\n# second\nimage: 'x:1'\n...\n---\nimage: 'x:1'\n"
    f = YamlFile(text)
    out = apply_edits(text, [f.set_scalar(get_value(f.documents[1], "image"), "x:2")])
    assert out == "a: 1\n---\n# second\nimage: 'x:2'\n...\n---\nimage: 'x:1'\n"


def test_anchor_and_tag_are_kept() -> None:
    text = "a: &v !!str v1  # c\nb: 2\n"
    f = YamlFile(text)
    assert apply_edits(text, [f.set_scalar(get_value(f.documents[0], "a"), "v2")]) == \
        "a: &v !!str v2  # c\nb: 2\n"


def test_aliased_scalar_is_refused() -> None:
    text = "a: &v x\nb: *v\n"
    f = YamlFile(text)
    with pytest.raises(YamlEditError, match="alias"):
        f.set_scalar(get_value(f.documents[0], "a"), "y")


def test_block_scalars_are_refused() -> None:
    text = "a: |\n  one\n  two\nb: >-\n  folded\n"
    f = YamlFile(text, "f.yaml")
    for key in ("a", "b"):
        with pytest.raises(YamlEditError, match="block scalar"):
            f.set_scalar(get_value(f.documents[0], key), "x")


def test_multi_line_plain_scalar_is_replaced_whole() -> None:
    text = "a: one\n  two\nb: 1\n"
    assert set_scalar(text, ["a"], "three") == "a: three\nb: 1\n"


def test_null_value_gets_a_value() -> None:
    assert set_scalar("tag:\nx: 1\n", ["tag"], "1.0") == 'tag: "1.0"\nx: 1\n'
    assert set_scalar("tag: # c\n", ["tag"], "v1") == "tag: v1 # c\n"
    assert set_scalar("a: {tag: , b: 1}\n", ["a", "tag"], "v1") == "a: {tag: v1 , b: 1}\n"


def test_json_file_edit_stays_json() -> None:
    text = '{\n  "spec": {"containers": [{"name": "a", "image": "nginx:1.25"}]}\n}\n'
    out = set_scalar(text, ["spec", "containers", 0, "image"], "nginx:1.27\u2028")
    assert json.loads(out)["spec"]["containers"][0]["image"] == "nginx:1.27\u2028"
    assert out.replace('"nginx:1.27\\u2028"', '"nginx:1.25"') == text


def test_bom_is_kept() -> None:
    text = "\ufeffa: 1\r\nb: x\r\n"
    assert set_scalar(text, ["b"], "z") == "\ufeffa: 1\r\nb: z\r\n"


def test_invalid_yaml_is_a_clear_error() -> None:
    with pytest.raises(YamlEditError, match=r"bad\.yaml:3: invalid YAML") as info:
        YamlFile("a: 1\nb: [\n", "bad.yaml")
    assert isinstance(info.value, PrbotError)
    assert "\n" not in str(info.value)


def test_overlapping_edits_are_refused() -> None:
    with pytest.raises(YamlEditError):
        apply_edits("abcdef", [TextEdit(0, 3, "x"), TextEdit(2, 4, "y")])
