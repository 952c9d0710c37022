"""Serial link to the array board's companion microcontroller (spec: hardware/protocol.md).

    framing.py    packet bytes <-> frames (COBS + CRC-32, 0x00-delimited); streaming decoder
    protocol.py   packet layout, commands, payload encoders/decoders, timings (pure, no I/O)
    image.py      firmware image <-> TYFW header + body; the boot self-test
    leds.py       azimuth + class -> LED ring colours
    client.py     BridgeClient: requests with ACK/NAK, retries, timeouts over pyserial
    flasher.py    flash_serial: image -> inactive A/B slot, resume, verify, switch, rollback check
    source.py     SerialSource: the MCU's AUDIO frames -> Blocks (for `tympan listen --serial`)
    faults.py     seeded line faults (drop, corrupt, duplicate, slow) for the simulator
    simulator.py  an MCU on a pseudo-terminal, A/B slots persisted in a directory
    cli.py        `tympan bridge ...`

Importing the package is safe and cheap; pyserial is imported when a port is opened.
"""
