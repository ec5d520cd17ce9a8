"""A local PostgreSQL server: what ``delivery up --database postgresql`` runs its Prefect server and ledger on.

Debian's ``postgresql`` binaries, a cluster made once by ``initdb`` under ``<home>/postgres``, listening on
127.0.0.1 only (no Unix socket), with one role, ``delivery``, whose password is generated once and kept in
``<home>/postgres/pgpass`` (mode 0600, libpq's password file format). Connection URLs never carry it:
every client finds it through ``PGPASSFILE`` (psycopg for the ledger, asyncpg for Prefect's server).

PostgreSQL refuses to run as root. Run by root, the server runs as the ``postgres`` system user (else
``nobody``), which must reach its data directory: when the state folder is not reachable by that user (a
home folder of mode 0700, pytest's temporary folders), the cluster lives in
``/var/tmp/delivery-postgres/<digest of the state folder>`` instead and ``<home>/postgres/data`` links to it.

The server is stopped by ``pg_ctl stop -m fast`` (sessions are ended, not waited for), which ``delivery
down`` calls through :func:`stop_postgres` for the process recorded with the marker ``postgres``.
"""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cli.processes import free_port, wait_until
from cli.stack_info import StackProcess
from delivery.errors import InvalidInput, TransientError

ROLE = "delivery"
DATABASES = ("prefect", "ledger")
MARKER = "postgres"
FALLBACK_ROOT = Path("/var/tmp/delivery-postgres")


@dataclass(frozen=True)
class PostgresServer:
    """A running cluster: where it is, its port, and the password file its clients use."""

    folder: Path
    port: int
    pid: int

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def passfile(self) -> Path:
        return self.folder / "pgpass"

    def url(self, database: str, *, driver: str = "psycopg") -> str:
        """A SQLAlchemy URL of one of its databases, without the password.

        psycopg's URL names the password file (libpq's ``passfile``), so it works as it is in any process of
        this machine; asyncpg's does not take it: its process needs :meth:`env` (``PGPASSFILE``).
        """
        url = f"postgresql+{driver}://{ROLE}@127.0.0.1:{self.port}/{database}"
        return f"{url}?passfile={self.passfile}" if driver == "psycopg" else url

    def env(self) -> dict[str, str]:
        """What a client process needs besides the URL."""
        return {"PGPASSFILE": str(self.passfile)}

    def process(self) -> StackProcess:
        return StackProcess(name="postgres", pid=self.pid, marker=MARKER, log=str(self.folder / "postgres.log"))


def binaries() -> Path:
    """The folder of ``initdb``, ``pg_ctl`` and ``postgres`` (the newest Debian version installed).

    Raises:
        InvalidInput: PostgreSQL is not installed.
    """
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    raise InvalidInput("PostgreSQL is not installed: `apt-get install postgresql` (the set-up of `make` does it "
                       "when run as root), or run without --database postgresql")


def _server_user() -> pwd.struct_passwd | None:
    """The unprivileged user the server runs as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise InvalidInput("PostgreSQL cannot run as root and there is no `postgres` or `nobody` user to run it as")


def _as_server_user(command: list[str], user: pwd.struct_passwd | None) -> list[str]:
    return command if user is None else ["runuser", "-u", user.pw_name, "--", *command]


def _reachable(path: Path, user: pwd.struct_passwd) -> bool:
    """Whether ``user`` can walk down to ``path`` (every folder above it searchable by that user)."""
    for folder in [*reversed(path.parents), path]:
        if not folder.exists():
            break
        info = folder.stat()
        mode = info.st_mode
        can = (mode & 0o100) if info.st_uid == user.pw_uid else (mode & 0o010) if info.st_gid == user.pw_gid \
            else (mode & 0o001)
        if not can:
            return False
    return True


def cluster_folder(home: Path) -> Path:
    """Where the cluster of the state folder ``home`` lives: ``<home>/postgres``, or its fallback (module doc)."""
    folder = home / "postgres"
    user = _server_user()
    if user is None or _reachable(home, user):
        return folder
    FALLBACK_ROOT.mkdir(mode=0o711, parents=True, exist_ok=True)
    os.chmod(FALLBACK_ROOT, 0o711)
    return FALLBACK_ROOT / hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:16]


def _initdb(folder: Path, user: pwd.struct_passwd | None, bin_dir: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    passfile = folder / "pgpass"
    if not passfile.exists():
        password = secrets.token_urlsafe(24)
        descriptor = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(f"127.0.0.1:*:*:{ROLE}:{password}\n")
    password = passfile.read_text().strip().rsplit(":", 1)[1]
    # initdb reads the password from a file the server user can read; removed as soon as it is done
    secret = folder / "initdb-password"
    descriptor = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(password + "\n")
    try:
        if user is not None:
            os.chown(folder, user.pw_uid, user.pw_gid)
            os.chown(secret, user.pw_uid, user.pw_gid)
        done = subprocess.run(
            _as_server_user([str(bin_dir / "initdb"), "-D", str(folder / "data"), "-U", ROLE, "--auth",
                             "scram-sha-256", "--pwfile", str(secret), "--encoding", "UTF8", "--no-locale"], user),
            capture_output=True, text=True, timeout=120)
    finally:
        secret.unlink(missing_ok=True)
    if done.returncode != 0:
        raise TransientError(f"initdb failed:\n{(done.stdout + done.stderr)[-1500:]}")


def start_postgres(home: Path, *, port: int | None = None) -> PostgresServer:
    """Start the state folder's cluster (made on first use) and create its databases when missing.

    Args:
        home: the state folder.
        port: the TCP port on 127.0.0.1 (default: a free one).

    Returns:
        The running server.

    Raises:
        InvalidInput: PostgreSQL is not installed, or cannot run as an unprivileged user here.
        TransientError: the server did not come up (its log's last lines say why).
    """
    bin_dir = binaries()
    user = _server_user()
    folder = cluster_folder(home)
    if folder != home / "postgres":
        (home / "postgres").mkdir(parents=True, exist_ok=True)
        link = home / "postgres" / "data"
        if not link.is_symlink():
            link.symlink_to(folder / "data")
    if not (folder / "data" / "PG_VERSION").is_file():
        _initdb(folder, user, bin_dir)
    port = port or free_port()
    log = folder / "postgres.log"
    log.touch()
    if user is not None:
        os.chown(log, user.pw_uid, user.pw_gid)
    options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='' -c max_connections=200"
    started = subprocess.run(
        _as_server_user([str(bin_dir / "pg_ctl"), "-D", str(folder / "data"), "-l", str(log), "-o", options,
                         "-w", "-t", "60", "start"], user), capture_output=True, text=True, timeout=90)
    if started.returncode != 0:
        raise TransientError(f"PostgreSQL did not start:\n{started.stdout}{started.stderr}\n"
                             f"{log.read_text(errors='replace')[-1500:]}")
    pid = int((folder / "data" / "postmaster.pid").read_text().split()[0])
    server = PostgresServer(folder=folder, port=port, pid=pid)
    wait_until("PostgreSQL", lambda: _databases(server) is not None, timeout=30)
    for name in DATABASES:
        create_database(server, name)
    return server


def _connect(server: PostgresServer, database: str = "postgres"):  # noqa: ANN202 - psycopg's connection
    import psycopg

    return psycopg.connect(host="127.0.0.1", port=server.port, user=ROLE, dbname=database,
                           passfile=str(server.passfile), autocommit=True, connect_timeout=5)


def _databases(server: PostgresServer) -> set[str] | None:
    import psycopg

    try:
        with _connect(server) as conn:
            return {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
    except psycopg.OperationalError:
        return None


def create_database(server: PostgresServer, name: str) -> bool:
    """Create the database ``name`` when missing; True when it was created."""
    from psycopg import sql

    with _connect(server) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return True


def stop_postgres(process: StackProcess, *, timeout: float = 30.0) -> bool:
    """Stop the cluster a stack recorded (``pg_ctl stop -m fast``); False when it was not running."""
    data = Path(process.log).parent / "data"
    if not (data / "postmaster.pid").is_file():
        return False
    user = _server_user()
    done = subprocess.run(_as_server_user([str(binaries() / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t",
                                           str(int(timeout)), "stop"], user),
                          capture_output=True, text=True, timeout=timeout + 10)
    return done.returncode == 0


__all__ = ["DATABASES", "MARKER", "PostgresServer", "binaries", "cluster_folder", "create_database",
           "start_postgres", "stop_postgres"]
