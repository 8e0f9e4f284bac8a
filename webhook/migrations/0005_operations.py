"""Give registrations a version, date every batch, and index the delivery log by time.

``manifest.version`` is what a PUT's ``If-Match`` is compared with: a random
token, replaced by every registration, so a manifest deleted and registered
again never repeats an old one. Existing manifests get one each here.

``batch.created_at`` was added by 0002 without a value for the batches already
recorded; a stalled batch is judged by its age, so those take the time their
manifest was last registered, the closest record of when they were named.

``delivery.received_at`` gets an index: the delivery log is read newest first
a page at a time, and pruned by age.
"""
import uuid

from peewee import CharField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("manifest", "version", CharField(max_length=32, null=True)),
        migrator.add_index("delivery", ("received_at",), False),
    )
    rows = [row[0] for row in db.execute_sql('SELECT "id" FROM "manifest"').fetchall()]
    for pk in rows:
        db.execute_sql(f'UPDATE "manifest" SET "version" = {db.param} WHERE "id" = {db.param}',
                       (uuid.uuid4().hex, pk))
    db.execute_sql('UPDATE "batch" SET "created_at" = (SELECT "updated_at" FROM "manifest" '
                   'WHERE "manifest"."id" = "batch"."manifest_id") WHERE "created_at" IS NULL')


def down(migrator, db):
    migrator.migrate(
        migrator.drop_index("delivery", "delivery_received_at"),
        migrator.drop_column("manifest", "version"),
    )
