"""Drop ``canvas_painting``'s index on ``manifest_id`` alone.

The unique index on ``(manifest_id, position)`` answers everything the
single-column one did: every query of a manifest's rows, in position order or
not, and the cascade when a manifest is deleted. Every row written kept both
up to date, and on PostgreSQL the rebuild's write-back of its findings (every
row of the manifest, on its first build) updates the row in a new place and
so every index: at 10,000 canvases that took 80-81 ms without it against
88-106 ms with it, in alternating runs.
"""


def up(migrator, db):
    migrator.migrate(migrator.drop_index("canvas_painting", "canvas_painting_manifest_id"))


def down(migrator, db):
    migrator.migrate(migrator.add_index("canvas_painting", ("manifest_id",), False))
