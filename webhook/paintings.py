"""``CanvasPainting``: a manifest's painted resources, and what the last build learned of each.

No Flask, no HTTP. ``record_findings`` writes in as few round trips as each
backend allows, with a statement of its own for each.
"""

from __future__ import annotations

import datetime as dt
import json

import peewee

from webhook.db import database, is_postgres
from webhook.domain import PaintedResource
from webhook.model_base import BaseModel, JSONField
from webhook.models import Manifest


class CanvasPainting(BaseModel):
    """One painted resource of a manifest, with what the last build learned about it."""

    # No index of its own: the unique (manifest, position) index serves (migration 0008).
    manifest = peewee.ForeignKeyField(Manifest, backref="paintings", on_delete="CASCADE",
                                      index=False)
    position = peewee.IntegerField()            # order in the registration
    canvas_id = peewee.CharField(max_length=64)
    canvas_order = peewee.IntegerField()
    choice_order = peewee.IntegerField(null=True)
    label = JSONField(null=True)
    canvas_label = JSONField(null=True)
    target = peewee.TextField(null=True)
    static_width = peewee.IntegerField(null=True)    # as registered
    static_height = peewee.IntegerField(null=True)
    asset_id = peewee.CharField(max_length=300)      # "{customer}/{space}/{asset}"
    asset = JSONField()                              # the registered asset object
    ingesting = peewee.BooleanField(default=True)
    thumbnail = peewee.TextField(null=True)
    width = peewee.IntegerField(null=True)           # statics, or filled by a build
    height = peewee.IntegerField(null=True)
    duration = peewee.FloatField(null=True)
    modified = peewee.DateTimeField(null=True)
    error = peewee.TextField(null=True)              # why the DLCS failed to ingest the asset

    class Meta:
        indexes = ((("manifest", "position"), True),)

    @classmethod
    def for_rebuild(cls, manifest_pk: int) -> tuple[list[PaintedResource], list[tuple]]:
        """Return a manifest's painted resources in order, and each row's last build findings.

        The findings are ``(id, ingesting, thumbnail, width, height, duration)``.
        Only these columns are read, into tuples: a model instance of every
        column (the registered asset included) costs about 2 KB a row, which
        is much of a large rebuild's memory. The rows come straight from the
        cursor: peewee's conversion of every column of every row took 0.2 s of
        a 10,000-row rebuild (0.13 s without it).
        """
        query = (cls.select(cls.canvas_id, cls.canvas_order, cls.asset_id, cls.choice_order,
                            cls.label, cls.canvas_label, cls.target, cls.static_width,
                            cls.static_height, cls.id, cls.ingesting, cls.thumbnail, cls.width,
                            cls.height, cls.duration)
                 .where(cls.manifest == manifest_pk).order_by(cls.position))
        rows = cls._meta.database.execute(query).fetchall()
        # Every label of every row parsed by one json.loads of one array: a
        # call per label was a third of reading a large manifest's rows.
        labels = iter(json.loads("[" + ",".join(
            text if text is not None else "null"
            for row in rows for text in (row[4], row[5])) + "]"))
        painted, findings = [], []
        for (canvas_id, canvas_order, asset_id, choice_order, _, _, target,
             static_width, static_height, row_id, ingesting, *found) in rows:
            painted.append(PaintedResource(
                canvas_id, canvas_order, asset_id, choice_order, next(labels), next(labels),
                target, static_width, static_height))
            # SQLite has no boolean type: ingesting comes back as 0 or 1.
            findings.append((row_id, bool(ingesting), *found))
        return painted, findings

    @classmethod
    def asset_ids(cls, manifest_pk: int) -> list[str]:
        """Return the distinct assets a manifest paints, in registration order."""
        rows = cls.select(cls.asset_id).where(cls.manifest == manifest_pk).order_by(cls.position)
        return list(dict.fromkeys(row.asset_id for row in rows))

    @classmethod
    def record_errors(cls, manifest_pk: int, errors: dict[str, str | None]) -> None:
        """Set each asset's ingest error (None: it succeeded) on the manifest's rows."""
        for error in set(errors.values()):
            assets = [asset for asset, text in errors.items() if text == error]
            for start in range(0, len(assets), 500):
                cls.update(error=error).where(
                    (cls.manifest == manifest_pk)
                    & cls.asset_id.in_(assets[start:start + 500])).execute()

    @classmethod
    def failed(cls, manifest_pk: int) -> list["CanvasPainting"]:
        """Return the manifest's rows whose asset failed, in registration order."""
        return list(cls.select(cls.asset_id, cls.canvas_id, cls.error).where(
            (cls.manifest == manifest_pk) & cls.error.is_null(False)).order_by(cls.position))

    @classmethod
    def record_findings(cls, changes: list[tuple], now: dt.datetime) -> None:
        """Write what a build learned about rows, in as few round trips as the backend allows.

        Each change is ``(id, ingesting, thumbnail, width, height, duration)``.
        """
        if not changes:
            return
        if is_postgres():
            # One statement, the changes as one JSON parameter: psycopg2 quoting
            # tens of thousands of values one by one into VALUES lists cost a third
            # of the write-back of a 10,000-canvas rebuild.
            database.execute_sql(
                'UPDATE "canvas_painting" AS c SET ingesting = v.ing, thumbnail = v.thumb, '
                "width = v.w, height = v.h, duration = v.dur, modified = %s "
                "FROM (SELECT (r->>0)::bigint AS id, (r->>1)::boolean AS ing, r->>2 AS thumb, "
                "(r->>3)::integer AS w, (r->>4)::integer AS h, (r->>5)::real AS dur "
                "FROM jsonb_array_elements(%s::jsonb) AS r) AS v WHERE c.id = v.id",
                [now, json.dumps(changes)])
            return
        database.cursor().executemany(
            'UPDATE "canvas_painting" SET ingesting = ?, thumbnail = ?, width = ?, '
            "height = ?, duration = ?, modified = ? WHERE id = ?",
            [(*change[1:], now, change[0]) for change in changes])
