"""``delivery simulator``: run the Kubernetes API simulator in the foreground and write a kubeconfig."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from delivery.settings import state_dir
from kube_simulator import KubernetesSimulator


def simulator(
    port: Annotated[int, typer.Option(help="TCP port on 127.0.0.1 (0 picks a free one).")] = 6443,
    kubeconfig: Annotated[
        Path | None, typer.Option(help="Where to write the kubeconfig (default <DELIVERY_HOME>/simulator/kubeconfig).")
    ] = None,
    ready_delay: Annotated[float, typer.Option(help="Seconds until a Deployment rollout completes.")] = 2.0,
) -> None:
    """Run the Kubernetes API simulator (a stand-in for a cluster, not a real one) until Ctrl-C or SIGTERM."""
    if ready_delay < 0:
        raise typer.BadParameter("must be zero or more", param_hint="--ready-delay")
    if not 0 <= port <= 65535:
        raise typer.BadParameter("must be between 0 and 65535", param_hint="--port")
    sim = KubernetesSimulator(ready_delay=ready_delay, port=port)
    try:
        url = sim.start()
    except OSError as exc:
        typer.echo(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}", err=True)
        raise typer.Exit(code=1) from exc
    done = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        path = sim.write_kubeconfig(kubeconfig or state_dir() / "simulator" / "kubeconfig")
        typer.echo(f"Kubernetes API simulator listening on {url}")
        typer.echo(f"kubeconfig written to {path} (export KUBECONFIG={path})")
        typer.echo("Press Ctrl-C to stop.")
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        sim.stop()
        typer.echo("simulator stopped")
