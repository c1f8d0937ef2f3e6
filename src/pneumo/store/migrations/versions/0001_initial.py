"""analyses, reviews, users and the append-only audit table

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer, "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "analyses",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(32), nullable=False, unique=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("requested_by", sa.String(64), nullable=False),
        sa.Column("source_format", sa.String(16), nullable=False),
        sa.Column("file_sha256", sa.String(64), nullable=False),
        sa.Column("study_uid", sa.String(64)),
        sa.Column("series_uid", sa.String(64)),
        sa.Column("sop_uid", sa.String(64)),
        sa.Column("submission_id", sa.String(256), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(256), nullable=False),
        sa.Column("thresholds", sa.JSON, nullable=False),
        sa.Column("probability", sa.Float, nullable=False),
        sa.Column("positive", sa.Boolean),
        sa.Column("flagged", sa.Boolean, nullable=False),
        sa.Column("boxes", sa.JSON, nullable=False),
        sa.Column("timings", sa.JSON, nullable=False),
        sa.Column("warnings", sa.JSON, nullable=False),
        sa.Column("ground_truth", sa.JSON),
        sa.Column("extra", sa.JSON, nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("image_sha256", sa.String(64), nullable=False),
        sa.Column("heatmap_sha256", sa.String(64)),
        sa.Column("image_height", sa.Integer, nullable=False),
        sa.Column("image_width", sa.Integer, nullable=False),
        sa.Column("review_status", sa.String(16), nullable=False, server_default="unreviewed"),
    )
    op.create_index("ix_analyses_status_flagged", "analyses", ["review_status", "flagged", "seq"])
    op.create_table(
        "reviews",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("analysis_seq", SEQ, sa.ForeignKey("analyses.seq", ondelete="RESTRICT"), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("boxes", sa.JSON),
        sa.Column("comment", sa.Text),
        sa.Column("reviewer", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_reviews_analysis_seq", "reviews", ["analysis_seq"])
    op.create_table(
        "users",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False, unique=True),
        sa.Column("key_salt", sa.String(64), nullable=False),
        sa.Column("key_hash", sa.String(128), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("disabled_at", TS),
    )
    op.create_table(
        "audit",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("result_id", sa.String(32)),
        sa.Column("detail", sa.JSON),
    )
    op.create_index("ix_audit_action", "audit", ["action"])
    op.create_index("ix_audit_result_id", "audit", ["result_id"])
    _append_only("audit")


def _append_only(table: str) -> None:
    """Refuse UPDATE and DELETE on ``table`` in the database itself."""
    if op.get_bind().dialect.name == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
            )
    elif op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"CREATE FUNCTION {table}_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION '{table} is append-only'; END $$"
        )
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {table}_append_only()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_append_only ON audit")
        op.execute("DROP FUNCTION IF EXISTS audit_append_only()")
    op.drop_table("audit")
    op.drop_table("users")
    op.drop_table("reviews")
    op.drop_table("analyses")
