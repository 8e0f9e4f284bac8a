"""Remember which of a registration's assets the service is to queue.

With ``DLCS_PROJECTION=manifest`` an asset the DLCS already has is tagged, not
queued again, so the assets to queue are decided once, by asking the DLCS,
when the registration arrives. ``queue_plan`` keeps that decision (their ids,
in order) so that a PUT resuming a queueing that stopped short queues the
rest of the same list; ``queued_assets`` counts into it.
"""
from peewee import TextField


def up(migrator, db):
    migrator.migrate(migrator.add_column("manifest", "queue_plan", TextField(null=True)))


def down(migrator, db):
    migrator.migrate(migrator.drop_column("manifest", "queue_plan"))
