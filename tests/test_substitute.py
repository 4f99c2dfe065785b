"""Flux post-build substitution (`prbot.expand.substitute`): Flux's envsubst grammar, the
variables of a `postBuild`, the typing of substituted scalars, and the attacks a hostile repository
can try through variables (Secret values, YAML injection, expansion bombs)."""

from __future__ import annotations

import base64
import time

import pytest

from prbot.errors import SubstitutionError
from prbot.expand.substitute import Variables, envsubst, substitute, variables

VALUES = {"a": "A", "path": "hello/world.txt", "n": "3", "empty": ""}


def ev(text: str) -> str:
    return envsubst(text, lambda name: VALUES.get(name, ""))


@pytest.mark.parametrize(("text", "expected"), [
    ("${a}", "A"),
    ("$a and $path stay", "$a and $path stay"),           # only ${…} is an expression
    ("$${a}", "${a}"),                                      # $$ escapes
    ("$$a", "$a"),
    ("cost: 5$", "cost: 5$"),
    ("${a}}", "A}"),
    ("${unset}", ""),                                       # strict mode off
    ("${unset:=dflt}", "dflt"),
    ("${unset:-x${a}y}", "xAy"),
    ("${empty=d}", "d"),                                    # without strict mode, every default form acts as :-
    ("${a:-d}", "A"),
    ("${a,,}${a,}", "aa"),
    ("${path^^}", "HELLO/WORLD.TXT"),
    ("${path#*/}", "world.txt"),
    ("${path%.*}", "hello/world"),
    ("${path##*o}", "rld.txt"),
    ("${path%%o*}", "hell"),
    ("${path/o/0}", "hell0/world.txt"),
    ("${path//o/0}", "hell0/w0rld.txt"),
    ("${path/#hello/bye}", "bye/world.txt"),
    ("${path/%txt/md}", "hello/world.md"),
    ("${#path}", "15"),
    ("${path:6}", "world.txt"),
    ("${path:2:3}", "llo"),
    ("${path:-3}", "hello/world.txt"),                      # :- is a default, not a negative offset
])
def test_flux_envsubst_forms(text: str, expected: str) -> None:
    assert ev(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("${", "unable to parse variable name"),
    ("${a", "missing closing brace"),
    ("${a b}", "missing closing brace"),
    ("${-x}", "unable to parse variable name"),
    ("${unset-d}", "missing closing brace"),               # the parser has no `-` form (its README does)
])
def test_malformed_expressions_fail(text: str, message: str) -> None:
    with pytest.raises(SubstitutionError, match=message):
        ev(text)


def deployment(**spec: object) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web-${cluster_name}", "namespace": "apps"}, "spec": dict(spec)}


def test_substituted_scalars_are_read_back_as_flux_reads_them() -> None:
    obj = deployment(replicas="${replicas}", template={"metadata": {"labels": {
        "version": "${quote}${n}${quote}", "plain": "${n}", "on": "${yes}"}}})
    [out] = substitute([obj], {"cluster_name": "prod", "replicas": "3", "quote": '"', "n": "42", "yes": "true"})
    assert out["metadata"]["name"] == "web-prod"
    assert out["spec"]["replicas"] == 3                                   # the string "${replicas}" became a number
    labels = out["spec"]["template"]["metadata"]["labels"]
    assert labels == {"version": "42", "plain": 42, "on": True}           # ${quote} keeps a string a string


def test_nothing_is_substituted_without_variables_and_opted_out_objects_stay() -> None:
    obj = deployment(replicas="${replicas:=2}")
    assert substitute([obj], {}) == [obj]                                  # Flux: no variables, no substitution
    off = deployment(replicas="${replicas}")
    off["metadata"]["labels"] = {"kustomize.toolkit.fluxcd.io/substitute": "disabled"}
    off2 = deployment(replicas="${replicas}")
    off2["metadata"]["annotations"] = {"kustomize.toolkit.fluxcd.io/substitute": "disabled"}
    [_, _, out] = substitute([off, off2, obj], {"replicas": "5"})
    assert out["spec"] == {"replicas": 5} and out["metadata"]["name"] == "web-"    # unset: empty
    assert substitute([off, off2], {"replicas": "5"}) == [off, off2]


def test_multi_line_strings_substitute_inside_literal_blocks() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "script"},
          "data": {"run.sh": 'echo "${greeting}"\necho $$HOME $HOME\n'}}
    [out] = substitute([cm], {"greeting": 'say "hi": now'})
    assert out["data"]["run.sh"] == 'echo "say "hi": now"\necho $HOME $HOME\n'


def test_escapes_are_undone_in_objects_without_any_expression() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "prices"}, "data": {"a": "5$$ and $$1"}}
    assert substitute([cm], {"x": "1"})[0]["data"] == {"a": "5$ and $1"}


def test_variables_follow_flux_precedence_and_optional_sources() -> None:
    objects = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cluster-vars", "namespace": "flux-system"},
         "data": {"cluster_name": "prod", "region": "eu\n-1"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cluster-secrets", "namespace": "flux-system"},
         "data": {"token": base64.b64encode(b"s3cr3t-token").decode()}, "stringData": {"region": "secret-region"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cluster-vars", "namespace": "other"},
         "data": {"cluster_name": "wrong"}},
    ]
    post_build = {"substitute": {"replicas": "3"}, "substituteFrom": [
        {"kind": "ConfigMap", "name": "cluster-vars"},
        {"kind": "Secret", "name": "cluster-secrets"},
        {"kind": "ConfigMap", "name": "absent", "optional": True}]}
    got = variables(post_build, objects, "flux-system")
    assert got.values == {"cluster_name": "prod", "region": "secret-region", "token": "s3cr3t-token", "replicas": "3"}
    assert got.secret == {"region", "token"}
    assert variables({"substituteFrom": [{"kind": "ConfigMap", "name": "cluster-vars"}],
                      "substitute": {"region": "inline"}}, objects, "flux-system").values["region"] == "inline"
    assert variables({"substituteFrom": [{"kind": "ConfigMap", "name": "cluster-vars"}]},
                     objects, "flux-system").values["region"] == "eu-1"   # newlines dropped, as Flux does
    with pytest.raises(SubstitutionError, match="substituteFrom ConfigMap flux-system/absent is not among"):
        variables({"substituteFrom": [{"kind": "ConfigMap", "name": "absent"}]}, objects, "flux-system")


def test_an_invalid_variable_name_fails_the_substitution() -> None:
    with pytest.raises(SubstitutionError, match="variable name 'cluster-name' is invalid"):
        substitute([deployment()], {"cluster-name": "x"})


# -- attacks ----------------------------------------------------------------------------------------------

SECRET = "hunter2-very-secret"


def secret_sourced() -> Variables:
    objects = [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": "flux-system"},
                "stringData": {"db_password": SECRET}}]
    return variables({"substituteFrom": [{"kind": "Secret", "name": "creds"}], "substitute": {"env": "prod"}},
                     objects, "flux-system")


def test_secret_values_reach_secrets_only() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app"},
          "data": {"url": "postgres://app:${db_password}@db", "len": "${#db_password}", "up": "${db_password^^}",
                   "env": "${env}"}}
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app"},
              "stringData": {"password": "${db_password}"}}
    out_cm, out_secret = substitute([cm, secret], secret_sourced())
    assert SECRET not in repr(out_cm) and SECRET.upper() not in repr(out_cm)
    assert out_cm["data"] == {"url": "postgres://app:(secret:db_password)@db", "len": 20,
                              "up": "(SECRET:DB_PASSWORD)", "env": "prod"}
    assert out_secret["stringData"]["password"] == SECRET                 # masked by the diff engine


def test_errors_never_show_a_secret_value() -> None:
    broken = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app"},
              "stringData": {"password": "${db_password}", "x": "${unclosed"}}
    with pytest.raises(SubstitutionError) as err:
        substitute([broken], secret_sourced())
    assert SECRET not in str(err.value)
    injected = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app"}, "stringData": {"k": "${v}"}}
    with pytest.raises(SubstitutionError) as err:
        substitute([injected], {"v": f"{SECRET}: {{"})
    assert SECRET not in str(err.value)
    assert str(err.value).startswith("Secret app: the substituted object is not valid YAML (line ")


@pytest.mark.parametrize("value", [
    "x\nkind: Secret",                  # Flux drops newlines: `xkind: Secret` is no longer one scalar
    "x\rkind: Secret",                  # a carriage return is a YAML line break Flux keeps
    "x\r---\rkind: Secret",             # a second document
    "{injected: true}",                 # a flow mapping instead of a scalar
    "[a, b]",
    "x\r  extra: field",
    "&a x",                             # an anchor … and an alias in another value
])
def test_a_value_cannot_change_more_than_its_scalar(value: str) -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app", "labels": {"l": "${v}"}},
          "data": {"k": "${v}", "z": "*a"}}
    post_build = {"substitute": {"v": value}}
    with pytest.raises(SubstitutionError) as err:
        substitute([cm], variables(post_build, [], None))
    assert "Secret" not in str(err.value) and "injected" not in str(err.value)


def test_a_value_may_not_rename_a_key_it_was_not_in() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app"}, "data": {"a": "${v}", "b": "x"}}
    with pytest.raises(SubstitutionError, match="changes the object's structure at data"):
        substitute([cm], {"v": "1\r  c: y"})
    keyed = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app"}, "data": {"${k}": "v"}}
    assert substitute([keyed], {"k": "region"})[0]["data"] == {"region": "v"}


def test_expansion_is_bounded() -> None:
    big = "x" * 100_000
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bomb"},
          "data": {str(i): "${v}" * 100 for i in range(20)}}
    with pytest.raises(SubstitutionError, match="exceed 10,000,000 bytes"):
        substitute([cm], {"v": big}, max_bytes=10_000_000)
    with pytest.raises(SubstitutionError, match="exceed"):          # nested defaults repeat the value too
        envsubst("${u:=${v}${v}${v}${v}}" * 100, lambda n: big if n == "v" else "",
                 __import__("prbot.expand.substitute", fromlist=["_Budget"])._Budget(1_000_000))
    deep = "${a:=" * 5000 + "}" * 5000
    with pytest.raises(SubstitutionError, match="nested deeper than 32"):
        ev(deep)
    started = time.monotonic()
    assert ev("$$" * 200_000) == "$" * 200_000                       # escapes cost linear time
    with pytest.raises(SubstitutionError, match="glob patterns"):
        envsubst("${v#" + "*a" * 30 + "b}" * 50, lambda n: "a" * 3000)
    assert time.monotonic() - started < 20
