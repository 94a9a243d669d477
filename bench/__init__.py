"""Benchmarks: each module here measures one part of streamlearn beside a baseline, in one run.

A benchmark module exposes `run(ctx: BenchContext) -> list[Figure]` and registers itself in
`bench.catalog.BENCHMARKS` under its name (`streamlearn bench NAME`).
"""
