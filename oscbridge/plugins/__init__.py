"""The AIplayer protocol: port pool, instance registry, identification, telemetry state."""
