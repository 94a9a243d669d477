"""The whole system on one machine: the four services supervised as local processes."""
