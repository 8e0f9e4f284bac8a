"""Create the manifest, batch, canvas painting and delivery tables.

A frozen copy of the first schema: later changes go in new numbered files and
never edit this one, so every database walks the same path.
"""
from peewee import (BigIntegerField, BlobField, BooleanField, CharField, DateTimeField,
                    FloatField, ForeignKeyField, IntegerField, Model, TextField)


def up(migrator, db):
    class Base(Model):
        class Meta:
            database = db
            legacy_table_names = False

    class Manifest(Base):
        customer = IntegerField()
        slug = CharField(max_length=64)
        document = TextField()
        generation = IntegerField(default=1)
        needs_rebuild = BooleanField(default=False)
        rebuild_owner = CharField(max_length=64, null=True)
        rebuild_lease_until = DateTimeField(null=True)
        rebuild_error = TextField(null=True)
        last_processed = DateTimeField(null=True)
        published_etag = CharField(max_length=80, null=True)
        published_at = DateTimeField(null=True)
        created_at = DateTimeField()
        updated_at = DateTimeField()

        class Meta:
            indexes = ((("customer", "slug"), True),)

    class Batch(Base):
        id = BigIntegerField(primary_key=True)
        manifest = ForeignKeyField(Manifest, on_delete="CASCADE")
        customer = IntegerField()
        status = CharField(max_length=16)
        count = IntegerField(null=True)
        completed = IntegerField(null=True)
        errors = IntegerField(null=True)
        superseded = BooleanField(default=False)
        submitted = DateTimeField(null=True)
        finished = DateTimeField(null=True)
        processed = DateTimeField(null=True)

    class CanvasPainting(Base):
        manifest = ForeignKeyField(Manifest, on_delete="CASCADE")
        position = IntegerField()
        canvas_id = CharField(max_length=64)
        canvas_order = IntegerField()
        choice_order = IntegerField(null=True)
        label = TextField(null=True)
        canvas_label = TextField(null=True)
        target = TextField(null=True)
        static_width = IntegerField(null=True)
        static_height = IntegerField(null=True)
        asset_id = CharField(max_length=300)
        asset = TextField()
        ingesting = BooleanField(default=True)
        thumbnail = TextField(null=True)
        width = IntegerField(null=True)
        height = IntegerField(null=True)
        duration = FloatField(null=True)
        modified = DateTimeField(null=True)

        class Meta:
            indexes = ((("manifest", "position"), True),)

    class Delivery(Base):
        delivery_id = CharField(max_length=256, unique=True)
        transport = CharField(max_length=16)
        received_at = DateTimeField()
        updated_at = DateTimeField()
        batch = BigIntegerField(null=True, index=True)
        manifest = CharField(max_length=100, null=True)
        outcome = CharField(max_length=32, index=True)
        error = TextField(null=True)
        attempts = IntegerField(default=1)
        body = BlobField()

    db.create_tables([Manifest, Batch, CanvasPainting, Delivery])


def down(migrator, db):
    for table in ("delivery", "canvas_painting", "batch", "manifest"):
        db.execute_sql(f'DROP TABLE IF EXISTS "{table}"')
