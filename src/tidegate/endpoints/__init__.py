"""Inbound APIs, one module per wire format the gateway serves."""
