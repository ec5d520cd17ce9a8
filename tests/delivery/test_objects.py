"""Object identity and apply order (pure; the keys' own rules are in test_drift_compare.py)."""

from __future__ import annotations

from delivery.objects import APPLY_ORDER, apply_order, apply_rank


def _obj(kind: str, name: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": kind, "metadata": {"name": name}}


def test_kinds_apply_in_their_order_then_unknown_kinds_by_kind_and_name() -> None:
    objects = [_obj("Ingress", "a"), _obj("Widget", "b"), _obj("Gadget", "z"), _obj("Namespace", "n"),
               _obj("Deployment", "b"), _obj("Deployment", "a")]
    ordered = [(o["kind"], o["metadata"]["name"]) for o in sorted(objects, key=apply_order)]  # type: ignore[index]
    assert ordered == [("Namespace", "n"), ("Deployment", "a"), ("Deployment", "b"), ("Ingress", "a"),
                       ("Gadget", "z"), ("Widget", "b")]


def test_an_unknown_kind_ranks_after_every_known_one() -> None:
    assert [apply_rank(kind) for kind in APPLY_ORDER] == list(range(len(APPLY_ORDER)))
    assert apply_rank("Widget") == len(APPLY_ORDER)
    assert apply_order({"kind": "ConfigMap"}) == (1, "ConfigMap", "")
    assert apply_order({}) == (len(APPLY_ORDER), "", "")
