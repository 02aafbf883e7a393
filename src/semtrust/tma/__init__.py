"""The TMA outside the orchestrator: wire protocol, server, client, MQTT export."""
