"""The baseline: a bare Flask endpoint returning fixed TwiML, served by the same gunicorn settings."""

from flask import Flask, Response

TWIML = (
    '<?xml version="1.0" encoding="UTF-8"?><Response><Dial answerOnBridge="true" timeout="18">'
    "<Number>+12025550111</Number></Dial></Response>"
)

app = Flask(__name__)


@app.post("/webhooks/voice/incoming")
def incoming() -> Response:
    return Response(TWIML, mimetype="text/xml")
