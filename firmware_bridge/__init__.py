"""Serial link to a companion microcontroller (placeholder).

This package will hold the framed serial protocol (COBS + CRC-32, sequence numbers, ACK/NAK), the
commands (hello, config, LED ring, audio frames as a `Block` source, A/B flashing) and an MCU simulator
over a pseudo-terminal; the protocol will be specified in `hardware/`. Nothing here yet: it arrives with
the provisioning and firmware-bridge issue. Importing it is safe and costs nothing.
"""
