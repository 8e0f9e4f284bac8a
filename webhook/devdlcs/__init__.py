"""A stand-in DLCS, so the whole flow can be seen (and tested) without a real one.

``flask --app wsgi dev-dlcs`` or ``python -m webhook.devdlcs`` serves the
Orchestrator's named query and the API's queue and batches on a local port, and
sends the service a signed "batch completed" webhook (with the first
``WEBHOOK_SECRETS`` entry) a few seconds after each batch is queued. Point
``DLCS_ORCHESTRATOR_URL`` and ``DLCS_API_URL`` at it. The images it describes
live on ``https://dlcs.test``, which does not exist: the manifests are real, the
pictures are not.
"""

from webhook.devdlcs.documents import Asset, image_service_id
from webhook.devdlcs.server import Call, CompletionSender, DevDlcs

__all__ = ["Asset", "Call", "CompletionSender", "DevDlcs", "image_service_id"]
