"""Remember what a registration queued at the DLCS, and when each batch was recorded.

``fingerprint`` identifies a registration's content so an identical PUT does not
queue its assets twice; ``queued_assets`` and ``queue_error`` let a PUT resume
after a partly failed queueing; ``batch.created_at`` lets reconcile find batches
that have been ingesting for too long.
"""
from peewee import CharField, DateTimeField, IntegerField, TextField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("manifest", "fingerprint", CharField(max_length=64, null=True)),
        migrator.add_column("manifest", "queued_assets", IntegerField(null=True)),
        migrator.add_column("manifest", "queue_error", TextField(null=True)),
        migrator.add_column("batch", "created_at", DateTimeField(null=True)),
    )


def down(migrator, db):
    migrator.migrate(
        migrator.drop_column("manifest", "fingerprint"),
        migrator.drop_column("manifest", "queued_assets"),
        migrator.drop_column("manifest", "queue_error"),
        migrator.drop_column("batch", "created_at"),
    )
