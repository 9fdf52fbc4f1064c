"""The image's HEALTHCHECK: exit 0 when ``/api/v1/health`` answers ``{"status": "ok"}``."""

import json
import os
import sys
import urllib.request

url = f"http://127.0.0.1:{os.environ.get('NEURONMAP_PORT', '8000')}/api/v1/health"
try:
    with urllib.request.urlopen(url, timeout=3) as response:
        sys.exit(0 if json.load(response).get("status") == "ok" else 1)
except (OSError, ValueError):
    sys.exit(1)
