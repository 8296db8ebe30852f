"""The web pages' files (``static/``), served by the gateway
(:mod:`thumbline.producers.gateway_web`)."""
