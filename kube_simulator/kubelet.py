"""The kubelet/controller stand-in: rolls Deployments out, or lets them miss their progress deadline.

Each spec change of a Deployment starts a rollout. After ``ready_delay`` seconds it completes
(all replicas updated, ready, available) unless the pod template carries the failure annotation;
then the new replicas never become ready and, after ``spec.progressDeadlineSeconds``, the
Progressing condition turns False with reason ProgressDeadlineExceeded. Pods of the previous
complete rollout stay available meanwhile, as with a RollingUpdate.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import math
import threading
import time
from dataclasses import dataclass

from .resources import ResourceType
from .store import Store, now

logger = logging.getLogger(__name__)

FAIL_ANNOTATION = "simulator.delivery.gitops/fail"
MANAGER = "kube-controller-manager"


@dataclass
class _Rollout:
    generation: int
    template_hash: str
    started: float
    fail: bool
    deadline: float
    desired: int
    old_available: int
    complete_hash: str | None = None


class Kubelet:
    """Background thread writing Deployment status; fed by the store's change notifications."""

    def __init__(self, store: Store, *, ready_delay: float):
        self.store = store
        self.ready_delay = ready_delay
        self._rt: ResourceType | None = None
        self._rollouts: dict[tuple[str, str], _Rollout] = {}
        self._due: list[tuple[float, tuple[str, str], int]] = []
        self._wake = threading.Condition()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        store.add_listener(self._observe)

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopped.clear()
        self._thread = threading.Thread(target=self._run, name="simulator-kubelet", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        with self._wake:
            self._wake.notify_all()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=5)

    def _observe(self, rt: ResourceType, old: dict | None, new: dict | None) -> None:
        """Called by the store under its lock for every write; only queues work."""
        if rt.kind != "Deployment":
            return
        self._rt = rt
        obj = new or old
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        with self._wake:
            if new is None:
                self._rollouts.pop(key, None)
                return
            generation = new["metadata"].get("generation", 1)
            previous = self._rollouts.get(key)
            if previous is not None and previous.generation == generation:
                return
            spec = new.get("spec") or {}
            template = spec.get("template") or {}
            template_hash = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
            annotations = (template.get("metadata") or {}).get("annotations") or {}
            started = time.monotonic()
            old_available = 0
            if previous is not None:
                old_available = previous.desired if previous.complete_hash else previous.old_available
                if previous.template_hash == template_hash and previous.complete_hash:
                    started -= self.ready_delay  # a scale-only change needs no new pods to start
            rollout = _Rollout(
                generation=generation,
                template_hash=template_hash,
                started=started,
                fail=str(annotations.get(FAIL_ANNOTATION, "")).lower() == "true",
                deadline=float(spec.get("progressDeadlineSeconds", 600)),
                desired=int(spec.get("replicas", 1)),
                old_available=old_available,
            )
            self._rollouts[key] = rollout
            heapq.heappush(self._due, (time.monotonic(), key, generation))
            self._wake.notify_all()

    def _run(self) -> None:
        while not self._stopped.is_set():
            with self._wake:
                wait = self._due[0][0] - time.monotonic() if self._due else 1.0
                if wait > 0:
                    self._wake.wait(min(wait, 1.0))
                    continue
                _, key, generation = heapq.heappop(self._due)
                rollout = self._rollouts.get(key)
                if rollout is None or rollout.generation != generation:
                    continue
                status, next_due = self._status(key, rollout)
                if next_due is not None:
                    heapq.heappush(self._due, (next_due, key, generation))
            if self._rt is not None:
                try:
                    current = self._current_status(key)
                    if current is not None:
                        self.store.update_status(self._rt, key[0], key[1], _stamp(status, current), manager=MANAGER)
                except Exception:  # the loop must outlive one bad object
                    logger.exception("simulator kubelet could not update %s/%s", *key)

    def _current_status(self, key: tuple[str, str]) -> dict | None:
        try:
            return self.store.get(self._rt, key[0], key[1]).get("status") or {}
        except Exception:  # noqa: BLE001 - deleted meanwhile: nothing to write
            return None

    def _status(self, key: tuple[str, str], r: _Rollout) -> tuple[dict, float | None]:
        """Status at this moment, and when it will next change (None: settled)."""
        elapsed = time.monotonic() - r.started
        replica_set = f'ReplicaSet "{key[1]}-{r.template_hash}"'
        d = r.desired
        if d == 0 or (not r.fail and elapsed >= self.ready_delay):
            r.complete_hash = r.template_hash
            counts = {"replicas": d, "updatedReplicas": d, "readyReplicas": d, "availableReplicas": d}
            available = ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
            progressing = ("True", "NewReplicaSetAvailable", f"{replica_set} has successfully progressed.")
            return _status(r.generation, counts, available, progressing), None
        surge = max(1, math.ceil(d * 0.25))
        old = min(r.old_available, d)
        updated = min(d, surge) if old else d
        replicas = old + updated
        counts = {
            "replicas": replicas,
            "updatedReplicas": updated,
            "readyReplicas": old,
            "availableReplicas": old,
            "unavailableReplicas": replicas - old,
        }
        if old and old >= d - math.floor(d * 0.25):
            available = ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
        else:
            available = ("False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.")
        if r.fail and elapsed >= r.deadline:
            progressing = ("False", "ProgressDeadlineExceeded", f"{replica_set} has timed out progressing.")
            next_due = None
        else:
            progressing = ("True", "ReplicaSetUpdated", f"{replica_set} is progressing.")
            next_due = r.started + (r.deadline if r.fail else self.ready_delay)
        return _status(r.generation, counts, available, progressing), next_due


def _status(generation: int, counts: dict, available: tuple, progressing: tuple) -> dict:
    status: dict = {"observedGeneration": generation}
    status.update({k: v for k, v in counts.items() if v})  # the API server omits zero counts
    status["conditions"] = [
        {"type": "Available", "status": available[0], "reason": available[1], "message": available[2]},
        {"type": "Progressing", "status": progressing[0], "reason": progressing[1], "message": progressing[2]},
    ]
    return status


def _stamp(status: dict, current: dict) -> dict:
    """Add condition timestamps, keeping the old ones where the condition did not change."""
    previous = {c.get("type"): c for c in current.get("conditions") or []}
    stamp = now()
    for condition in status["conditions"]:
        before = previous.get(condition["type"]) or {}
        same_status = before.get("status") == condition["status"]
        same = (
            same_status
            and before.get("reason") == condition["reason"]
            and before.get("message") == condition["message"]
        )
        condition["lastUpdateTime"] = before.get("lastUpdateTime", stamp) if same else stamp
        condition["lastTransitionTime"] = before.get("lastTransitionTime", stamp) if same_status else stamp
    return status
