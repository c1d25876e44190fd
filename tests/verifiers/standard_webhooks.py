"""Verifies a delivery with the official Standard Webhooks library (PyPI
`standardwebhooks`), independently of Bida's own code.

stdin: {"secret": "whsec_...", "headers": {...}, "body_base64": "..."}
exit 0 when the signature verifies, 1 (with the library's reason) otherwise.
"""
import base64
import json
import sys

from standardwebhooks.webhooks import Webhook

request = json.load(sys.stdin)
body = base64.b64decode(request["body_base64"])
try:
    Webhook(request["secret"]).verify(body, request["headers"])
except Exception as error:  # the library raises WebhookVerificationError
    print(f"{type(error).__name__}: {error}")
    sys.exit(1)
print("verified")
