"""Initial fleet schema: hosts, workloads, models, nonces, domains, appraisals, forensics."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hosts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("tma_key", sa.Text, nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False, unique=True),
        sa.Column("tpm_ak", sa.Text, nullable=True),
        sa.Column("enrolled_at", sa.Float, nullable=False),
    )
    op.create_table(
        "workloads",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("signing_key", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "models",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("workload_id", sa.Integer, sa.ForeignKey("workloads.id"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("points", sa.Integer, nullable=False),
        sa.Column("uploaded_at", sa.Float, nullable=False),
        sa.UniqueConstraint("workload_id", "version"),
    )
    op.create_table(
        "nonces",
        sa.Column("value", sa.String(64), primary_key=True),
        sa.Column("host_id", sa.Integer, sa.ForeignKey("hosts.id"), nullable=False),
        sa.Column("issued_at", sa.Float, nullable=False),
        sa.Column("used_at", sa.Float, nullable=True),
    )
    op.create_table(
        "domains",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("host_id", sa.Integer, sa.ForeignKey("hosts.id"), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("mode", sa.String(16), nullable=True),
        sa.Column("model_digest", sa.String(64), nullable=True),
        sa.Column("base", sa.String(64), nullable=True),
        sa.Column("state", sa.String(64), nullable=True),
        sa.Column("forensics", sa.Integer, nullable=False),
        sa.Column("group_key", sa.String(140), nullable=True),
        sa.Column("replica", sa.String(16), nullable=False),
        sa.Column("last_attestation", sa.Float, nullable=True),
        sa.Column("last_appraisal_id", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("changed_at", sa.Float, nullable=False),
        sa.UniqueConstraint("host_id", "name"),
    )
    op.create_index("ix_domains_group", "domains", ["group_key"])
    op.create_table(
        "appraisals",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("domain_id", sa.Integer, sa.ForeignKey("domains.id"), nullable=False),
        sa.Column("nonce", sa.String(128), nullable=False),
        sa.Column("doc", sa.Text, nullable=False),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("claims", sa.Integer, nullable=False),
        sa.Column("claimed_by", sa.String(64), nullable=True),
        sa.Column("claimed_at", sa.Float, nullable=True),
        sa.Column("result", sa.String(16), nullable=True),
        sa.Column("checks", sa.Text, nullable=True),
        sa.Column("appraised_at", sa.Float, nullable=True),
        sa.Column("trusted", sa.Boolean, nullable=True),
    )
    op.create_index("ix_appraisals_state", "appraisals", ["state", "id"])
    op.create_index("ix_appraisals_domain", "appraisals", ["domain_id", "id"])
    op.create_table(
        "forensic_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("domain_id", sa.Integer, sa.ForeignKey("domains.id"), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("line", sa.Text, nullable=False),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.UniqueConstraint("domain_id", "seq"),
    )


def downgrade() -> None:
    for table in ("forensic_events", "appraisals", "domains", "nonces", "models", "workloads",
                  "hosts"):
        op.drop_table(table)
