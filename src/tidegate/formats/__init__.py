"""Inbound request schemas, one module per wire format a client may speak to the gateway."""
