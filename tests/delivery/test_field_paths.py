"""The field path grammar of drift reports and ignore rules (pure, no servers)."""

from __future__ import annotations

import pytest

from delivery.errors import InvalidInput
from delivery.field_paths import IgnoreRules, format_path, parse_path


@pytest.mark.parametrize(
    "text,segments",
    [
        ("spec.replicas", ("spec", "replicas")),
        ("spec.template.spec.containers[app].image", ("spec", "template", "spec", "containers", "[app]", "image")),
        ('metadata.labels["app.kubernetes.io/name"]', ("metadata", "labels", "app.kubernetes.io/name")),
        ("spec.ports[port=80]", ("spec", "ports", "[port=80]")),
        ("spec.*.x[*]", ("spec", "*", "x", "[*]")),
        ("spec.rules[0].host", ("spec", "rules", "[0]", "host")),
        ('metadata.annotations["say \\"hi\\""]', ("metadata", "annotations", 'say "hi"')),
        ('data["a b"].x', ("data", "a b", "x")),
        ('["a b"]', ("a b",)),
    ],
)
def test_paths_parse_and_format_round_trip(text, segments):
    assert parse_path(text) == segments
    assert format_path(segments) == text


def test_a_single_quoted_key_is_a_key_with_its_dots():
    assert parse_path("metadata.labels['app.kubernetes.io/name']") == ("metadata", "labels", "app.kubernetes.io/name")


def test_a_path_may_start_with_a_list_item():
    assert parse_path("[app].image") == ("[app]", "image")
    assert format_path(("[app]", "image")) == "[app].image"


@pytest.mark.parametrize("bad", ["", "  "])
def test_an_empty_rule_says_so(bad):
    with pytest.raises(InvalidInput) as info:
        IgnoreRules([bad])
    assert str(info.value) == "empty field path in drift.ignore"


@pytest.mark.parametrize(
    "bad,where",
    [(".spec", 1), ("spec..replicas", 5), ("spec[unclosed", 5), ("spec replicas", 5), ("spec.", 5)],
)
def test_a_bad_rule_is_rejected_naming_the_rule_and_where_it_goes_wrong(bad, where):
    with pytest.raises(InvalidInput) as info:
        parse_path(bad)
    assert str(info.value) == f"drift.ignore: {bad!r} is not a field path (problem at character {where})"


# --------------------------------------------------------------------------- ignore rules


def test_a_rule_ignores_its_path_and_everything_below_but_not_its_parent_or_siblings():
    ignored = IgnoreRules(["spec.template.spec"])
    assert ignored(("spec", "template", "spec"))
    assert ignored(("spec", "template", "spec", "containers", "[app]", "image"))
    assert not ignored(("spec", "template"))
    assert not ignored(("spec", "template", "metadata"))
    assert not ignored(("spec",))


def test_no_rules_ignore_nothing():
    assert not IgnoreRules()(("spec", "replicas"))
    assert not IgnoreRules([])(())


def test_a_star_stands_for_one_key_never_a_list_item():
    ignored = IgnoreRules(["spec.*.image"])
    assert ignored(("spec", "app", "image"))
    assert not ignored(("spec", "[app]", "image"))
    assert not ignored(("spec", "app", "name"))


def test_a_bracketed_star_stands_for_one_list_item_never_a_key():
    ignored = IgnoreRules(["spec.containers[*].image"])
    assert ignored(("spec", "containers", "[app]", "image"))
    assert ignored(("spec", "containers", "[port=80]", "image"))
    assert not ignored(("spec", "containers", "app", "image"))
    assert not ignored(("spec", "containers", "[app]", "name"))


def test_any_rule_of_several_ignores():
    ignored = IgnoreRules(["spec.replicas", "metadata.labels"])
    assert ignored(("spec", "replicas")) and ignored(("metadata", "labels", "team"))
    assert not ignored(("spec", "paused"))


def test_the_rules_are_kept_parsed():
    assert IgnoreRules(["spec.replicas", "a[*]"]).rules == (("spec", "replicas"), ("a", "[*]"))


def test_rules_compile_once():
    compiled = IgnoreRules(["spec.replicas"])
    assert IgnoreRules.of(compiled) is compiled
    assert IgnoreRules.of(["spec.replicas"]).rules == compiled.rules
