"""Indexes for the queries ``delivery incidents list`` and the operations' views make over every release.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_incidents_status", "incidents", ["status"], if_not_exists=True)
    op.create_index("ix_release_actions_action", "release_actions", ["action"], if_not_exists=True)
