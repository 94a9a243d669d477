"""Registry: model versions with lineage, aliases, promotion and rollback over gRPC."""
