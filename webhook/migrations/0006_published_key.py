"""Record where each manifest's published document is stored, and when queueing runs.

``published_key``: every rebuild stores its document under a key of its own and
publishes it by recording the key in the statement that checks its claim, so a
rebuild that lost its claim never replaces what is served. Manifests published
before keep it NULL: their document is at ``{customer}/manifests/{id}``.

``queueing_until``: set while a request queues a registration's assets at the
DLCS (and cleared when it has recorded the batches), so that an identical PUT
arriving meanwhile neither queues them again nor reports the manifest complete;
past it, the queueing is taken as interrupted and an identical PUT resumes it.
"""
from peewee import CharField, DateTimeField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("manifest", "published_key", CharField(max_length=300, null=True)),
        migrator.add_column("manifest", "queueing_until", DateTimeField(null=True)),
    )


def down(migrator, db):
    migrator.migrate(
        migrator.drop_column("manifest", "published_key"),
        migrator.drop_column("manifest", "queueing_until"),
    )
