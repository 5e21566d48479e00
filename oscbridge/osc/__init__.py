"""OSC on the wire: decoding, encoding, SLIP framing, and the UDP/TCP transports of the bridge."""
