"""Ingestion: validates raw samples against their stream definition and routes them."""
