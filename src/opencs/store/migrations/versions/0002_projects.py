"""projects (applications) and cluster data volumes

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('projects',
    sa.Column('cluster_id', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('version', sa.String(length=128), nullable=False),
    sa.Column('template', sa.Text(), nullable=False),
    sa.Column('environment', sa.JSON(), nullable=False),
    sa.Column('latest_image', sa.Boolean(), nullable=False),
    sa.Column('desired_state', sa.String(length=32), nullable=False),
    sa.Column('current_state', sa.String(length=32), nullable=False),
    sa.Column('task_id', sa.String(length=40), nullable=True),
    sa.Column('previous_version', sa.String(length=128), nullable=True),
    sa.Column('previous_template', sa.Text(), nullable=True),
    sa.Column('extra', sa.JSON(), nullable=False),
    sa.Column('created', sa.DateTime(), nullable=False),
    sa.Column('updated', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('cluster_id', 'name')
    )
    op.create_table('app_volumes',
    sa.Column('cluster_id', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('driver', sa.String(length=32), nullable=False),
    sa.Column('options', sa.JSON(), nullable=False),
    sa.Column('secret_enc', sa.Text(), nullable=True),
    sa.Column('labels', sa.JSON(), nullable=False),
    sa.Column('created', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('cluster_id', 'name')
    )


def downgrade() -> None:
    op.drop_table('app_volumes')
    op.drop_table('projects')
