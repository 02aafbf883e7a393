"""Appraisal queue: the key intake verified each document under; a queue index that
holds only waiting documents (done ones leave it, so it stays small as history grows)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_QUEUED = sa.text("state = 'queued'")


def upgrade() -> None:
    op.add_column("appraisals", sa.Column("intake_key", sa.String(64), nullable=True))
    op.drop_index("ix_appraisals_state", table_name="appraisals")
    op.create_index("ix_appraisals_queued", "appraisals", ["id"],
                    postgresql_where=_QUEUED, sqlite_where=_QUEUED)


def downgrade() -> None:
    op.drop_index("ix_appraisals_queued", table_name="appraisals")
    op.create_index("ix_appraisals_state", "appraisals", ["state", "id"])
    op.drop_column("appraisals", "intake_key")
