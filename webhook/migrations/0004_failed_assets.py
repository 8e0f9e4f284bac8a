"""Remember which assets of a batch failed, and manifests none of whose assets arrived.

``canvas_painting.error`` is the DLCS's error text for the row's asset, read
from the batch's assets (``GET .../queue/batches/{b}/assets``) once the batch
finished with errors; ``batch.assets_checked`` says when that was read, so a
reconcile can fetch what an outage kept from the completion.
``manifest.ingest_failed`` is why a manifest could not be built at all (the
DLCS has none of its assets); ``delivery.failed_assets`` the notification's
error count, for the delivery log.
"""
from peewee import DateTimeField, IntegerField, TextField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("canvas_painting", "error", TextField(null=True)),
        migrator.add_column("batch", "assets_checked", DateTimeField(null=True)),
        migrator.add_column("manifest", "ingest_failed", TextField(null=True)),
        migrator.add_column("delivery", "failed_assets", IntegerField(null=True)),
    )


def down(migrator, db):
    migrator.migrate(
        migrator.drop_column("canvas_painting", "error"),
        migrator.drop_column("batch", "assets_checked"),
        migrator.drop_column("manifest", "ingest_failed"),
        migrator.drop_column("delivery", "failed_assets"),
    )
