"""Schema of the verifier database and how it is opened and migrated.

Times are Unix seconds (float) so SQLite and PostgreSQL compare them alike.
The schema is created by the Alembic migrations shipped in this package, never
by ``create_all``: a fleet database outlives verifier versions.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.engine.url import make_url
from sqlalchemy.exc import ArgumentError

from semtrust.errors import InputError

__all__ = ["DEFAULT_DB", "appraisals", "domains", "forensic_events", "hosts", "metadata",
           "models", "nonces", "open_engine", "upgrade", "workloads"]

DEFAULT_DB = "sqlite:///semtrust-verifier.db"
metadata = MetaData()

hosts = Table(
    "hosts", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("tma_key", Text, nullable=False),
    Column("key_id", String(64), nullable=False, unique=True),
    Column("tpm_ak", Text, nullable=True),
    Column("enrolled_at", Float, nullable=False),
)

workloads = Table(
    "workloads", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("signing_key", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

models = Table(
    "models", metadata,
    Column("id", Integer, primary_key=True),
    Column("workload_id", ForeignKey("workloads.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("digest", String(64), nullable=False, unique=True),
    Column("body", Text, nullable=False),
    Column("points", Integer, nullable=False),
    Column("uploaded_at", Float, nullable=False),
    UniqueConstraint("workload_id", "version"),
)

nonces = Table(
    "nonces", metadata,
    Column("value", String(64), primary_key=True),
    Column("host_id", ForeignKey("hosts.id"), nullable=False),
    Column("issued_at", Float, nullable=False),
    Column("used_at", Float, nullable=True),
)

domains = Table(
    "domains", metadata,
    Column("id", Integer, primary_key=True),
    Column("host_id", ForeignKey("hosts.id"), nullable=False),
    Column("name", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("mode", String(16), nullable=True),
    Column("model_digest", String(64), nullable=True),
    Column("base", String(64), nullable=True),
    Column("state", String(64), nullable=True),
    Column("forensics", Integer, nullable=False),
    Column("group_key", String(140), nullable=True),
    Column("replica", String(16), nullable=False),
    Column("last_attestation", Float, nullable=True),
    Column("last_appraisal_id", Integer, nullable=False),
    Column("reason", Text, nullable=False),
    Column("changed_at", Float, nullable=False),
    UniqueConstraint("host_id", "name"),
    Index("ix_domains_group", "group_key"),
)

appraisals = Table(
    "appraisals", metadata,
    Column("id", Integer, primary_key=True),
    Column("domain_id", ForeignKey("domains.id"), nullable=False),
    Column("nonce", String(128), nullable=False),
    Column("doc", Text, nullable=False),
    Column("received_at", Float, nullable=False),
    # queued, then done (SQLite: claimed, but only inside the appraising transaction)
    Column("state", String(8), nullable=False),
    Column("claims", Integer, nullable=False),
    Column("claimed_by", String(64), nullable=True),
    Column("claimed_at", Float, nullable=True),
    Column("result", String(16), nullable=True),
    Column("checks", Text, nullable=True),
    Column("appraised_at", Float, nullable=True),
    Column("trusted", Boolean, nullable=True),
    # key_id of the enrolled host key the document's signature verified under at intake
    Column("intake_key", String(64), nullable=True),
    Index("ix_appraisals_queued", "id", postgresql_where=text("state = 'queued'"),
          sqlite_where=text("state = 'queued'")),
    Index("ix_appraisals_domain", "domain_id", "id"),
)

forensic_events = Table(
    "forensic_events", metadata,
    Column("id", Integer, primary_key=True),
    Column("domain_id", ForeignKey("domains.id"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("line", Text, nullable=False),
    Column("received_at", Float, nullable=False),
    UniqueConstraint("domain_id", "seq"),
)

MIGRATIONS = Path(__file__).parent / "migrations"
_LOCK_ID = 0x5E3757  # PostgreSQL advisory lock: one migrating process at a time


def open_engine(url: str) -> Engine:
    """An engine for ``url``; ``postgresql://`` means psycopg 3."""
    try:
        u = make_url(url)
    except ArgumentError:
        raise InputError(f"not a database URL: {url!r}", field="--db") from None
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    if u.get_backend_name() == "sqlite":
        engine = create_engine(u, connect_args={"timeout": 30, "check_same_thread": False})
        from sqlalchemy import event

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: object, _rec: object) -> None:
            cur = dbapi_conn.cursor()  # type: ignore[attr-defined]
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    if u.get_backend_name() != "postgresql":
        raise InputError(f"unsupported database {u.get_backend_name()!r} (sqlite or "
                         "postgresql)", field="--db")
    return create_engine(u, pool_size=8, max_overflow=8, pool_pre_ping=True)


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest migration (concurrent starts wait for each other)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_ID})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
