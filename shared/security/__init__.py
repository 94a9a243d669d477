"""Security: certificates, credentials, roles and the checks that enforce them."""
