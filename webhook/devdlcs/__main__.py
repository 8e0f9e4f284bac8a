"""``python -m webhook.devdlcs``: run the stand-in DLCS until interrupted."""

from webhook.devdlcs.run import main

main()
