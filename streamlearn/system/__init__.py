"""The whole system on one machine: the five services supervised as local processes."""
