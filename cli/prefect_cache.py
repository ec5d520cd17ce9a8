"""What a new stack's Prefect server reuses from the user's cache: a migrated database and the UI's files.

Prefect migrates a fresh SQLite database through its whole history on first start: about 9 of the
14 s its server took to answer here. A stack started on an empty state folder (``make demo`` on a
fresh clone, each stack of the tests) therefore starts from a copy of a database that Prefect's own
``prefect server database upgrade`` migrated once and kept in the user's cache, under the Prefect
version. An existing database is never touched: Prefect migrates it as usual on start.

Prefect's server also copies its UI's files, with the base URL written in, on the first start of each
installation (inside the virtualenv by default: about 5 s on every fresh clone). The stack points
``PREFECT_UI_STATIC_DIRECTORY`` at a folder of the cache per Prefect version; Prefect keys and locks
its copy there itself.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import prefect

from delivery.errors import TransientError

CACHE_ENV = "DELIVERY_CACHE_DIR"


def cache_dir() -> Path:
    """``DELIVERY_CACHE_DIR``, else ``$XDG_CACHE_HOME/gitops-delivery``, else ``~/.cache/gitops-delivery``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gitops-delivery"


def template_path() -> Path:
    """Where the migrated empty database of the installed Prefect version is kept."""
    return cache_dir() / "prefect-db" / f"prefect-{prefect.__version__}.db"


def ui_static_directory() -> Path:
    """Where the stack's Prefect servers keep the UI's built files (one folder per Prefect version)."""
    return cache_dir() / f"prefect-ui-{prefect.__version__}"


def seed_database(target: Path, *, env: dict[str, str]) -> bool:
    """Copy the migrated template to ``target`` when ``target`` does not exist yet; return whether it did.

    Args:
        target: the stack's Prefect database file.
        env: the environment the template is migrated in when the cache lacks it.

    Raises:
        TransientError: Prefect's migration of the template failed.
    """
    if target.exists():
        return False
    template = template_path()
    if not template.is_file():
        _migrate_template(template, env=env)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(f".{target.name}.{os.getpid()}")
    shutil.copyfile(template, scratch)
    os.replace(scratch, target)
    return True


def _migrate_template(template: Path, *, env: dict[str, str]) -> None:
    template.parent.mkdir(parents=True, exist_ok=True)
    scratch = template.with_name(f".{template.name}.{os.getpid()}")
    scratch.unlink(missing_ok=True)
    done = subprocess.run([sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"],
                          env={**env, "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{scratch}"},
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise TransientError(f"Prefect's database migration failed:\n{(done.stdout + done.stderr)[-1500:]}")
    # one self-contained file: the write-ahead log folded in, so a plain copy is the whole database
    with sqlite3.connect(scratch) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    os.replace(scratch, template)  # atomic: a concurrent stack copies a whole template or migrates its own


__all__ = ["CACHE_ENV", "cache_dir", "seed_database", "template_path", "ui_static_directory"]
