"""Subscriber side (placeholder): token decoding, scene windows, captioning backends, answers.

It arrives with the MQTT/captioner issue. The edge never imports this package; it may import `edge`
for the token schema.
"""
