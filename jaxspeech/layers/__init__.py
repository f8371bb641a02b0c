"""Building blocks shared by encoders, connectors and decoders."""
