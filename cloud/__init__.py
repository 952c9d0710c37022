"""The subscriber side: token decoding, scene windows, captions.

- `cloud.subscribe` / `tympan subscribe`: decoded event tokens as they arrive, gaps in `seq` reported.
- `cloud.scene`, `cloud.prompt`, `cloud.backends` (template, openai), `cloud.captioner`,
  `cloud.cli_caption` / `tympan caption`: a sliding scene window per device -> caption -> `.../caption`.
- `cloud.demo` / `tympan demo`: an embedded broker (`cloud.embedded_broker`), the edge on the bundled
  scene and the captioner, in one command.

The edge never imports this package; it imports `edge` for the token schema and the MQTT URL parser.
"""
